"""One crash costs one component: the rest keep answering and supervisord brings it back."""

from __future__ import annotations

import base64
import os
import signal

import pytest
from meshtest import SENTENCE, alive, descendants, render_png, wait_for

pytestmark = pytest.mark.timeout(240)
COMPONENTS = ["nebula-agent", "dht", "router", "svc-vision-ocr", "gateway"]


@pytest.fixture(scope="module")
def node(start_module_node):
    return start_module_node()


@pytest.fixture(scope="module")
def ocr_request():
    return {"image_base64": base64.b64encode(render_png(SENTENCE)).decode()}


def ocr_works(node, payload) -> bool:
    try:
        reply = node.post_json("/service/vision-ocr", payload)
    except OSError:
        return False
    return reply.status == 200 and reply.json()["data"]["text"] == SENTENCE


@pytest.mark.parametrize("program", COMPONENTS)
def test_kill_9_is_survived_and_repaired(node, ocr_request, program):
    node.wait_healthy()
    old_pid = node.pid_of(program)
    os.kill(old_pid, signal.SIGKILL)
    if program not in ("gateway", "svc-vision-ocr"):
        # Anything but the data path itself: requests keep succeeding meanwhile.
        assert ocr_works(node, ocr_request)
    wait_for(lambda: node.pid_of(program) not in (0, old_pid), 10, f"supervisord to restart {program}")
    node.wait_healthy(timeout=30)
    # A restarted backend answers once it has loaded; until then requests get 503s.
    wait_for(lambda: ocr_works(node, ocr_request), 30, "OCR to work again", interval=0.5)


def test_a_killed_gateway_answers_again(node):
    # How fast (about a second) is for make bench; here only that it comes back by itself.
    node.wait_healthy()
    old_pid = node.pid_of("gateway")
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: node.health() is not None and node.pid_of("gateway") != old_pid, 30,
             "the gateway to answer again")


def test_router_down_means_degraded_but_local_requests_still_succeed(node, ocr_request):
    node.wait_healthy()
    node.supervisorctl("stop", "router")
    try:
        health = wait_for(lambda: (h := node.health()) and h["status"] == "degraded" and h, 10,
                          "/health to say degraded")
        assert health["components"]["router"] == "UNREACHABLE"
        assert ocr_works(node, ocr_request)  # routed from the last pushed table
    finally:
        node.supervisorctl("start", "router")
    node.wait_healthy(timeout=30)


def test_dht_records_come_back_after_a_dht_restart(node):
    node.wait_healthy()
    node.supervisorctl("restart", "dht")
    node.wait_healthy(timeout=30)
    assert "dht" in node.get("/metrics").body.decode()
    stored = wait_for(lambda: _stored_records(node) >= 1, 15, "the router to re-announce")
    assert stored


def _stored_records(node) -> float:
    for line in node.get("/metrics").body.decode().splitlines():
        if line.startswith("meshworker_dht_stored_records "):
            return float(line.split()[1])
    return 0.0


def test_sigterm_to_meshworker_up_leaves_no_process(start_node):
    fresh = start_node()
    pids = descendants(fresh.proc.pid) | {fresh.proc.pid}
    assert len(pids) >= 6  # supervisord and its five programs
    fresh.proc.send_signal(signal.SIGTERM)
    assert fresh.proc.wait(timeout=30) == 0
    wait_for(lambda: not [p for p in pids if alive(p)], 5, "every process of the node to exit")
