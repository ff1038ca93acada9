"""Fixtures that run real nodes (see meshtest.py), and each test's marker.

Every node a test starts is stopped at teardown, and every process it had is reaped:
the test fails if one outlives the node.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from meshtest import ControlledBackend, Node, alive
from netns import Host


class NodeFactory:
    """Starts nodes on demand; `close()` stops them all and reaps every process they had."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []

    def __call__(self, config_toml: str | None = None, wait: bool = True, host: Host | None = None,
                 **env: str) -> Node:
        """A started (by default healthy) node; config_toml and MESHWORKER_* env as given;
        inside `host`'s network namespace when one is given."""
        # Unix socket paths are limited to 107 bytes: keep the state directory short.
        state_dir = Path(tempfile.mkdtemp(prefix="mw-", dir="/tmp"))
        node_env = {**os.environ, "MESHWORKER_STATE_DIR": str(state_dir), "MESHWORKER_GATEWAY_PORT": "0", "MESHWORKER_PEER_PORT": "0",
                    "MESHWORKER_DHT_PORT": "0", "MESHWORKER_RUNTIME_DIR": str(state_dir / "run"),
                    "MESHWORKER_WORKER_ID": f"node{len(self.nodes) + 1}", **env}
        if config_toml is not None:
            (state_dir / "meshworker.toml").write_text(config_toml)
            node_env["MESHWORKER_CONFIG"] = str(state_dir / "meshworker.toml")
        else:  # the model services take seconds and hundreds of MiB each: only where asked for
            node_env.setdefault("MESHWORKER_SERVICES", "vision-ocr")
        node = Node(state_dir, node_env, state_dir / "node.log", host)
        self.nodes.append(node)
        node.start()
        if wait:
            node.wait_healthy()
        return node

    def close(self, show_logs: bool) -> None:
        leftovers = []
        for node in self.nodes:
            node.stop()
            stray = [pid for pid in node.pids_seen if alive(pid)]
            for pid in stray:
                os.kill(pid, signal.SIGKILL)
            leftovers += stray
            if show_logs:
                sys.stderr.write(node.log_path.read_text()[-5000:])
            shutil.rmtree(node.state_dir, ignore_errors=True)
        assert not leftovers, f"processes outlived their node: {leftovers}"


@pytest.fixture
def start_node(request) -> Iterator[NodeFactory]:
    factory = NodeFactory()
    yield factory
    factory.close(show_logs=getattr(request.node, "rep_call", None) is not None
                  and request.node.rep_call.failed)


@pytest.fixture(scope="module")
def start_module_node() -> Iterator[NodeFactory]:
    """For a module whose tests share one node (starting one takes seconds)."""
    factory = NodeFactory()
    yield factory
    factory.close(show_logs=False)


@pytest.fixture(scope="module")
def test_backend() -> Iterator[str]:
    """The URL of a ControlledBackend (meshtest.py) serving for the module."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), ControlledBackend)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# Each test is marked by the directory it is in (registered in pyproject.toml): `pytest -m unit`
# runs the pure cores, `-m "not mesh"` leaves out the meshes in network namespaces; and `slow`
# when it may take minutes (its timeout says so), so `-m "not slow"` is a quick pass.
KINDS = {"unit": "unit", "integration": "integration", "mesh": "mesh", "bench": "integration"}
SLOW_TIMEOUT_S = 180


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        kind = KINDS.get(item.path.relative_to(root).parts[0])
        if kind is not None:
            item.add_marker(kind)
        timeout = item.get_closest_marker("timeout")
        if timeout is not None and timeout.args and timeout.args[0] >= SLOW_TIMEOUT_S:
            item.add_marker("slow")
