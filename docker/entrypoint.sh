#!/bin/sh
# Container entrypoint; it runs the same outside a container (tests/integration/test_deploy.py
# starts it with the environment the image sets, waits for a healthy node, stops it).
#
# With no arguments (the image's CMD is `up`) it runs `meshworker up`, which checks the config
# (exit 2 on a bad value), writes the backends' program files, then execs supervisord with
# /app/supervisord.conf: supervisord becomes PID 1 and forwards SIGTERM to every program.
# Other arguments are a meshworker command (`status`, `join …`) against the same volume.
set -eu

state="${MESHWORKER_STATE_DIR:?MESHWORKER_STATE_DIR is not set (the image sets /var/lib/meshworker)}"
# A bind mount owned by another uid is the usual first-run mistake: say so, not a traceback.
mkdir -p "$state" 2>/dev/null || true
if [ ! -d "$state" ] || [ ! -w "$state" ]; then
    echo "meshworker: $state is not a directory that uid $(id -u) can write; mount a volume there," \
         "or chown the host directory to $(id -u):$(id -g)" >&2
    exit 2
fi

if [ "$#" -eq 0 ]; then
    set -- up
fi
exec meshworker "$@"
