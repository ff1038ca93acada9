"""What `meshworker up` and `meshworker join` print while they work (issue 13, item 5).

The lines are made by pure functions from what the watcher saw; the loop that looks at a
real node is exercised end to end by tests/integration/test_deploy.py.
"""

from __future__ import annotations

import argparse
import configparser
import json
import time
from typing import ClassVar

import pytest

from services.cli import node as cli_node
from services.cli import progress
from services.common.config import load
from services.nebula import bootstrap
from services.nebula import cli as nebula_cli
from services.nebula.overlay import membership
from services.nebula.overlay.state import EnrollmentError

LLM = progress.ModelFile("SmolLM2-135M-Instruct-Q4_1", 98_362_432)
ALL = frozenset(progress.PROGRESS_COMPONENTS)


def test_sizes_are_in_the_largest_binary_unit_that_fits():
    assert progress.size_text(98_362_432) == "93.8 MiB"
    assert progress.size_text(3 << 30) == "3.0 GiB"
    assert progress.size_text(2048) == "2.0 KiB"
    assert progress.size_text(12) == "12 B"


def test_a_line_carries_the_seconds_since_up_started_under_the_programs_prefix():
    assert progress.stamp(3.14159, "dht ready") == "progress        | [   3.1s] dht ready"


def test_each_component_is_reported_once_when_it_becomes_ready_in_start_up_order():
    first = progress.NodeView(ready=frozenset({"router", "dht"}))
    then = progress.NodeView(ready=frozenset({"router", "dht", "api", "gateway"}), ports=(8000, 8443))

    assert progress.progress_lines(progress.NodeView(), first, {}) == ["dht ready", "router ready"]
    assert progress.progress_lines(first, then, {}) == [
        "api ready", "gateway (Envoy) ready: clients on :8000, peers (mTLS) on :8443"]
    assert progress.progress_lines(then, then, {}) == []


def test_a_component_that_stops_answering_during_start_up_is_said():
    before = progress.NodeView(ready=ALL)
    now = progress.NodeView(ready=ALL - {"router"})

    assert progress.progress_lines(before, now, {}) == ["router stopped answering (supervisord restarts it)"]


def test_a_model_backend_says_its_model_load_time_file_size_and_memory():
    loading = progress.NodeView(ready=ALL, backends=(progress.BackendView("llm-inference", False, last_error="HTTP 503"),))
    loaded = progress.NodeView(ready=ALL, backends=(progress.BackendView(
        "llm-inference", True, "SmolLM2-135M-Instruct-Q4_1", 7.24, 685 << 20),))

    assert progress.progress_lines(loading, loaded, {"llm-inference": LLM}) == [
        "llm-inference ready: SmolLM2-135M-Instruct-Q4_1 loaded in 7.2 s (93.8 MiB on disk, 685.0 MiB resident)"]


def test_a_backend_that_describes_nothing_is_just_ready():
    backend = progress.BackendView("my-llm", True)

    assert progress.backend_ready_line(backend, None) == "my-llm ready"
    assert progress.backend_ready_line(progress.BackendView("x", True, model="m"), None) == "x ready: m"


def test_the_waiting_line_names_what_is_not_ready_and_why():
    now = progress.NodeView(ready=ALL - {"gateway"}, backends=(
        progress.BackendView("vision-ocr", True),
        progress.BackendView("llm-inference", False, last_error="health check answered HTTP 503")))

    assert progress.waiting_line(now, {"llm-inference": LLM}) == (
        "still waiting for gateway, llm-inference (loading SmolLM2-135M-Instruct-Q4_1, 93.8 MiB; "
        "health check answered HTTP 503)")
    assert progress.waiting_line(progress.NodeView(ready=ALL, status="degraded"), {}) == (
        "still waiting for the node to report healthy (it says degraded)")


@pytest.mark.parametrize(("host", "page", "url"), [
    ("0.0.0.0", True, "http://localhost:8000/"),
    ("::", False, "http://localhost:8000/health"),
    ("192.0.2.7", True, "http://192.0.2.7:8000/"),
    ("fd00::7", True, "http://[fd00::7]:8000/"),
])
def test_the_healthy_line_says_where_to_look(host, page, url):
    assert progress.healthy_line("node-a", host, 8000, page) == f"node node-a is healthy: open {url}"


def test_the_start_lines_list_the_parts_and_the_models_with_their_size():
    assert progress.starting_lines(["vision-ocr", "llm-inference"], {"llm-inference": LLM}) == [
        "starting nebula-agent, dht, router, api, gateway (Envoy); services vision-ocr, llm-inference",
        "llm-inference: loading SmolLM2-135M-Instruct-Q4_1 (93.8 MiB)"]
    assert progress.starting_lines([], {})[0].endswith("; no local service")


def test_model_files_are_the_installed_packages_files():
    found = progress.model_files(["vision-ocr", "llm-inference", "rag-embeddings"])

    assert set(found) <= {"llm-inference", "rag-embeddings"} and "vision-ocr" not in found
    for model in found.values():  # the dev extra installs both: each weighs tens of MiB
        assert model.size_bytes > 10 << 20 and model.model
    assert progress.model_files(["vision-ocr"]) == {}


def test_the_watcher_is_a_program_that_starts_first_and_is_never_restarted():
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(progress.progress_program())
    section = parser["program:progress"]

    assert section["command"] == "meshworker run progress"
    assert section["autorestart"] == "false" and section["exitcodes"] == "0" and section["priority"] == "1"
    assert section["stdout_logfile"] == "/dev/stdout"


def test_up_writes_the_watchers_program_before_it_execs_supervisord(tmp_path, monkeypatch):
    monkeypatch.setattr(cli_node.shutil, "which", lambda name, path=None: "/bin/supervisord")
    seen = {}

    def execve(path, argv, env):
        seen["programs"] = sorted(p.name for p in (tmp_path / "run" / "programs").iterdir())
        raise SystemExit(0)
    monkeypatch.setattr(cli_node.os, "execve", execve)

    with pytest.raises(SystemExit):
        cli_node.up(load({"MESHWORKER_STATE_DIR": str(tmp_path), "MESHWORKER_SERVICES": ""}))

    assert seen["programs"] == ["progress.conf"]


class FakeWatcher:
    """Scripted looks at a node, as the real Watcher would report them."""

    looks: ClassVar[list[progress.NodeView]] = []
    closed: ClassVar[bool] = False

    def __init__(self, cfg):
        self.script = list(self.looks)
        FakeWatcher.closed = False

    async def look(self) -> progress.NodeView:
        return self.script.pop(0)

    def gateway_address(self):
        return "0.0.0.0", 8000, 8443

    async def get(self, path):
        return 200, b"<html>"

    async def close(self):
        FakeWatcher.closed = True


@pytest.fixture
def node_cfg(tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "Watcher", FakeWatcher)
    monkeypatch.setattr(progress, "PROGRESS_POLL_S", 0)
    cfg = load({"MESHWORKER_STATE_DIR": str(tmp_path), "MESHWORKER_SERVICES": "vision-ocr",
                "MESHWORKER_WORKER_ID": "node-a"})
    cfg.runtime_dir.mkdir(parents=True)
    return cfg


async def test_the_watcher_prints_each_step_then_healthy_and_exits_0(node_cfg):
    (node_cfg.runtime_dir / "node.json").write_text(json.dumps({"started_at": time.time() - 2}))
    FakeWatcher.looks = [
        progress.NodeView(ready=frozenset({"dht"})),
        progress.NodeView(ready=ALL, backends=(progress.BackendView("vision-ocr", True),), ports=(8000, 8443),
                     status="healthy"),
    ]
    lines: list[str] = []

    assert await progress.watch_progress(node_cfg, lines.append) == 0

    texts = [line.split("] ", 1)[1] for line in lines]
    assert texts[0].startswith("starting nebula-agent") and "dht ready" in texts
    assert texts.index("dht ready") < texts.index("vision-ocr ready") < len(texts) - 1
    assert texts[-1] == "node node-a is healthy: open http://localhost:8000/"
    assert FakeWatcher.closed


async def test_the_watcher_says_what_it_waits_for_and_gives_up_with_status_1(node_cfg, monkeypatch):
    monkeypatch.setattr(progress, "PROGRESS_GIVE_UP_S", 0)
    FakeWatcher.looks = [progress.NodeView(ready=ALL, status="degraded")]
    lines: list[str] = []

    assert await progress.watch_progress(node_cfg, lines.append) == 1
    assert "not healthy after" in lines[-1] and "meshworker status" in lines[-1]


MEMBER = membership.Membership(name="laptop", network="10.42.0.0/16", overlay_ip="10.42.0.2",
                               ca_fingerprint="1de86466" + "0" * 56, ca_public_key="", lighthouse=False,
                               enroll_addresses=("192.0.2.1:4243",), tls_sha256="859b333c" + "0" * 56)


def join(cfg, *extra):
    parser = argparse.ArgumentParser()
    nebula_cli.add_commands(parser.add_subparsers(dest="command"))
    return nebula_cli.run(cfg, parser.parse_args(
        ["join", "192.0.2.1:4243", "--token", "t", "--ca-fingerprint", MEMBER.ca_fingerprint,
         "--tls-fingerprint", MEMBER.tls_sha256, *extra]))


def test_join_says_each_step_before_it_takes_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bootstrap, "join_mesh", lambda state_dir, opts: MEMBER)
    monkeypatch.setattr(nebula_cli, "_overlay_line", lambda cfg, wait: "Overlay up: 10.42.0.2 on 10.42.0.0/16.")
    cfg = load({"MESHWORKER_STATE_DIR": str(tmp_path), "MESHWORKER_WORKER_ID": "laptop"})

    assert join(cfg) == 0

    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("[1/2] Enrolling as laptop through 192.0.2.1:4243: checking its TLS certificate "
                             "(859b333c…) and the mesh CA (1de86466…) before the token is sent")
    assert out[1].startswith("      enrolled in ") and out[1].endswith(f"state in {tmp_path / 'nebula'}")
    assert out[2] == "Joined mesh 10.42.0.0/16 as laptop (member), overlay address 10.42.0.2."
    assert out[3].startswith("[2/2] Starting the overlay on this machine's node")
    assert out[4].startswith("Overlay up: 10.42.0.2 on 10.42.0.0/16. (") and out[4].endswith(" s)")


def test_a_refused_join_has_said_which_step_it_was_in(tmp_path, monkeypatch, capsys):
    def refused(state_dir, opts):
        raise EnrollmentError("token_used", "the lighthouse refused: the token was used up", 403)
    monkeypatch.setattr(bootstrap, "join_mesh", refused)
    cfg = load({"MESHWORKER_STATE_DIR": str(tmp_path), "MESHWORKER_WORKER_ID": "laptop"})

    assert join(cfg) == 1

    captured = capsys.readouterr()
    assert captured.out.startswith("[1/2] Enrolling") and "[2/2]" not in captured.out
    assert "token was used up" in captured.err


def test_the_join_steps_name_a_lighthouse():
    opts = bootstrap.JoinOptions(addresses=("a:1", "b:2"), token="t", ca_fingerprint="ab", tls_sha256="cd",
                                 name="lh2", lighthouse=True)

    enroll, overlay = nebula_cli.join_steps(opts)
    assert enroll.startswith("[1/2] Enrolling as lh2 (lighthouse) through a:1, b:2: ")
    assert overlay == "[2/2] Starting the overlay on this machine's node (nebula-agent; up to 20 s)"

