"""nebula's JSON log lines: re-logged at their level, and what they say of tunnels."""

from __future__ import annotations

import json
import logging

from services.nebula.agent import logs

UP_AS_INITIATOR = {"level": "info", "msg": "Handshake message received", "handshake": {"stage": 2},
                   "vpnIp": "10.42.0.1", "certName": "lh"}
UP_AS_RESPONDER = {"level": "info", "msg": "Handshake message sent", "handshake": {"stage": 2},
                   "vpnIp": "10.42.0.3"}
STAGE_ONE = {"level": "info", "msg": "Handshake message sent", "handshake": {"stage": 1}, "vpnIp": "10.42.0.4"}
DEAD = {"level": "info", "msg": "Tunnel status", "tunnelCheck": {"method": "active", "state": "dead"},
        "vpnIp": "10.42.0.3"}
BLOCKED = {"level": "info", "msg": "Remote certificate is no longer valid, tearing down the tunnel",
           "vpnIp": "10.42.0.1", "error": "certificate has been blocked"}
STARTED = {"level": "info", "msg": "Nebula interface is active", "interface": "mesh4242"}


def feed(*docs) -> logs.Tunnels:
    tunnels = logs.Tunnels()
    for doc in docs:
        tunnels.feed(logs.parse(json.dumps(doc)))
    return tunnels


def test_levels_message_and_fields():
    entry = logs.parse('{"level":"error","msg":"Failed to send","vpnIp":"10.42.0.3","time":"x"}')

    assert entry.level == logging.ERROR and entry.msg == "Failed to send"
    assert logs.summary(entry) == 'Failed to send vpnIp="10.42.0.3"'


def test_a_line_that_is_not_json_is_kept_as_a_warning():
    entry = logs.parse("panic: runtime error\n")

    assert entry.level == logging.WARNING and entry.msg == "panic: runtime error"


def test_completed_handshakes_either_way_open_tunnels():
    assert feed(UP_AS_INITIATOR, UP_AS_RESPONDER, STAGE_ONE).up == {"10.42.0.1", "10.42.0.3"}


def test_dead_or_blocked_tunnels_close():
    assert feed(UP_AS_INITIATOR, UP_AS_RESPONDER, DEAD, BLOCKED).up == set()


def test_a_new_nebula_process_has_no_tunnels():
    tunnels = feed(UP_AS_INITIATOR, STARTED)

    assert tunnels.up == set() and tunnels.restarts == 1


def test_relog_uses_our_logger(caplog):
    with caplog.at_level(logging.INFO, logger="services.nebula.agent.logs"):
        logs.relog(logs.parse(json.dumps(BLOCKED)))

    assert "nebula: Remote certificate is no longer valid" in caplog.text


def test_follower_reads_appended_lines_and_survives_rotation(tmp_path):
    path = tmp_path / "nebula.log"
    follower = logs.LogFollower(path)
    assert follower.read_new() == []
    path.write_text('{"msg":"a"}\n{"msg":"b')
    assert follower.read_new() == ['{"msg":"a"}']
    with open(path, "a") as f:
        f.write('"}\n')
    assert follower.read_new() == ['{"msg":"b"}']
    path.rename(tmp_path / "nebula.log.1")
    path.write_text('{"msg":"c"}\n')
    assert follower.read_new() == ['{"msg":"c"}']


def test_repeated_lines_are_throttled_per_peer():
    throttle = logs.Throttle(window_s=10, burst=2)
    blocked, other_peer = logs.parse(json.dumps(BLOCKED)), logs.parse(json.dumps({**BLOCKED, "vpnIp": "10.42.0.9"}))

    assert [throttle.admit(blocked, t) for t in (0.0, 1.0, 2.0, 3.0, 4.0)] == [0, 0, None, None, None]
    assert throttle.admit(other_peer, 3.0) == 0
    assert throttle.admit(blocked, 10.5) == 3
