"""One crash costs one component: the rest keep answering and supervisord brings it back.

The crash table of the README, row by row: a kill -9 of the router, the dht, the api or
the nebula-agent while requests run costs no request on a known route (Envoy carries
them on its last configuration); Envoy itself and the backend come back by themselves.
"""

from __future__ import annotations

import base64
import os
import signal
import threading
import time
from typing import Self

import pytest
from meshtest import SENTENCE, alive, descendants, render_png, wait_for

pytestmark = pytest.mark.timeout(240)
COMPONENTS = ["nebula-agent", "dht", "router", "api", "svc-vision-ocr", "gateway"]
OFF_THE_DATA_PATH = ["nebula-agent", "dht", "router", "api"]
ROUTER_ASKED = "Envoy left its ADS stream; supervisord has it"


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
    if program not in ("gateway", "svc-vision-ocr", "api"):
        # Anything but the data path of the envelope: requests keep succeeding meanwhile.
        assert ocr_works(node, ocr_request)
    wait_for(lambda: node.pid_of(program) not in (0, old_pid), 10, f"supervisord to restart {program}")
    node.wait_healthy(timeout=30)
    # A restarted backend answers once it has loaded; until then requests get 503s.
    wait_for(lambda: ocr_works(node, ocr_request), 30, "OCR to work again", interval=0.5)


class Load:
    """Requests on a known route (the backend's own API through Envoy) in a thread, until
    stopped or a bound is reached; every answer that is not a 200 is kept."""

    def __init__(self, node, bound: int = 20_000):
        self.node, self.bound = node, bound
        self.sent, self.failures = 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and self.sent < self.bound:
            self.sent += 1
            try:
                reply = self.node.request("GET", "/service/vision-ocr/health", timeout=10)
                if reply.status != 200:
                    self.failures.append((reply.status, reply.body[:200]))
            except OSError as err:
                self.failures.append(("error", repr(err)))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.mark.parametrize("program", OFF_THE_DATA_PATH)
def test_kill_9_off_the_data_path_costs_no_request(node, program):
    node.wait_healthy()
    old_pid = node.pid_of(program)
    with Load(node) as load:
        time.sleep(0.5)
        os.kill(old_pid, signal.SIGKILL)
        wait_for(lambda: node.pid_of(program) not in (0, old_pid), 10, f"supervisord to restart {program}")
        node.wait_healthy(timeout=30)
        time.sleep(0.5)
    assert load.sent > 10
    assert load.failures == [], f"{len(load.failures)} of {load.sent} failed: {load.failures[:3]}"


def test_a_killed_gateway_answers_again(node):
    # How fast is for make bench; here that it comes back by itself, and that the router, seeing
    # Envoy leave its ADS stream, asked supervisord at once: the request turns supervisord's
    # loop, which would otherwise notice the exit at its next one-second poll.
    node.wait_healthy()
    asked = node.log_path.read_text().count(ROUTER_ASKED)
    old_pid = node.pid_of("gateway")
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: node.health() is not None and node.pid_of("gateway") != old_pid, 30,
             "the gateway to answer again")
    assert node.log_path.read_text().count(ROUTER_ASKED) > asked


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
    assert len(pids) >= 7  # supervisord and its six programs
    fresh.proc.send_signal(signal.SIGTERM)
    assert fresh.proc.wait(timeout=30) == 0
    wait_for(lambda: not [p for p in pids if alive(p)], 5, "every process of the node to exit")
