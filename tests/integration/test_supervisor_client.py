"""services/common/supervisor.py against a real supervisord of its own: what the nebula agent
(update, signal, restart) and the router (state_of) ask of a node's supervisord."""

from __future__ import annotations

import subprocess
import sys
import xmlrpc.client
from pathlib import Path

import pytest
from meshtest import wait_for

from services.common.supervisor import Supervisor

pytestmark = pytest.mark.timeout(60)
BIN = Path(sys.executable).parent
# Appends its pid to a file, and a line to another on each HUP: what the tests read back.
WORKER = "echo $$ >> {dir}/pids; trap 'echo hup >> {dir}/hups' HUP; while :; do sleep 0.05; done"


def section(name: str, command: str) -> str:
    return f"[program:{name}]\ncommand=sh -c \"{command}\"\nstartsecs=0\nautorestart=true\nstopsignal=KILL\n"


@pytest.fixture
def supervisord(tmp_path):
    (tmp_path / "programs").mkdir()
    conf = tmp_path / "supervisord.conf"
    conf.write_text("\n".join([
        "[supervisord]", "nodaemon=true", f"logfile={tmp_path}/supervisord.log", f"pidfile={tmp_path}/sd.pid",
        "[unix_http_server]", f"file={tmp_path}/supervisor.sock", "chmod=0700",
        "[rpcinterface:supervisor]", "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        section("worker", WORKER.format(dir=tmp_path)),
        section("idle", "sleep 600") + "autostart=false\n",
        "[include]", f"files={tmp_path}/programs/*.conf", ""]))
    proc = subprocess.Popen([BIN / "supervisord", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = Supervisor(tmp_path, timeout_s=5)
    try:
        wait_for(lambda: client.available() and client.state_of("worker") == "RUNNING", 20, "supervisord")
        yield client
    finally:
        proc.terminate()
        proc.wait(20)


def pids(directory: Path) -> list[str]:
    path = directory / "pids"
    return path.read_text().split() if path.exists() else []


def test_restart_gives_the_program_a_new_process(supervisord, tmp_path):
    wait_for(lambda: len(pids(tmp_path)) == 1, 10, "the worker's pid")
    supervisord.restart("worker")
    assert supervisord.state_of("worker") == "RUNNING"
    wait_for(lambda: len(pids(tmp_path)) == 2, 10, "the new process's pid")


def test_restart_starts_a_program_that_was_not_running(supervisord):
    assert supervisord.state_of("idle") == "STOPPED"
    supervisord.restart("idle")
    assert supervisord.state_of("idle") == "RUNNING"


def test_a_signal_reaches_the_program(supervisord, tmp_path):
    supervisord.signal("worker", "HUP")
    wait_for(lambda: (tmp_path / "hups").exists(), 10, "the worker to see HUP")


def test_update_adds_replaces_and_leaves_a_group(supervisord, tmp_path):
    extra = tmp_path / "programs" / "extra.conf"
    extra.write_text(section("extra", "sleep 600"))
    assert supervisord.update("extra") == "added"
    wait_for(lambda: supervisord.state_of("extra") == "RUNNING", 10, "the new program")
    assert supervisord.update("extra") == ""  # its section unchanged
    extra.write_text(section("extra", "sleep 601"))
    assert supervisord.update("extra") == "updated"
    wait_for(lambda: supervisord.state_of("extra") == "RUNNING", 10, "the replaced program")


def test_refusals_and_absence_are_errors_a_caller_can_tell_apart(supervisord, tmp_path):
    with pytest.raises(xmlrpc.client.Fault):
        supervisord.state_of("no-such-program")
    gone = Supervisor(tmp_path / "elsewhere", timeout_s=1)
    assert not gone.available()
    with pytest.raises(OSError):
        gone.state_of("worker")
