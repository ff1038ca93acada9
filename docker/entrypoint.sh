#!/bin/sh
# Container entrypoint: `meshworker up` checks the config (exit 2 on a bad value), writes
# the backends' program files, then execs supervisord with /app/supervisord.conf, which
# becomes PID 1 and forwards SIGTERM to every program.
exec meshworker up "$@"
