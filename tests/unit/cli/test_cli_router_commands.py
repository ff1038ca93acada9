"""`meshworker models` and `meshworker drain`: the router's answers over its real unix
socket, as the commands print them, and a clear error when no router answers."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from services import cli
from services.common.rpc import router_pb2, router_pb2_grpc

MODELS = router_pb2.MeshModelsResponse(models=[
    router_pb2.MeshModel(id="smollm2-135m-instruct", kind="chat", context_length=8192, aliases=["gpt-4o-mini"],
                         providers=[router_pb2.ModelProvider(worker_id="w1", service="llm-inference", local=True,
                                                             load_percent=50),
                                    router_pb2.ModelProvider(worker_id="w2", service="llm-inference")]),
    router_pb2.MeshModel(id="all-minilm-l6-v2", kind="embedding", aliases=["text-embedding-3-small"],
                         providers=[router_pb2.ModelProvider(worker_id="w2", service="rag-embeddings",
                                                             load_percent=100)]),
])


class Router(router_pb2_grpc.RouterServicer):
    def MeshModels(self, request, context):
        return MODELS

    def Drain(self, request, context):
        return router_pb2.DrainResponse(withdrawn=["echo", "twin"])


@pytest.fixture
def node(monkeypatch) -> Iterator[Path]:
    """A node's environment for the CLI; its runtime dir (socket paths: 107 bytes at most)."""
    directory = Path(tempfile.mkdtemp(dir="/tmp", prefix="cli-"))
    (directory / "run").mkdir()
    monkeypatch.setenv("MESHWORKER_STATE_DIR", str(directory))
    monkeypatch.setenv("MESHWORKER_RUNTIME_DIR", str(directory / "run"))
    monkeypatch.setenv("MESHWORKER_WORKER_ID", "w1")
    yield directory / "run"
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def router(node) -> Iterator[None]:
    """A router on the node's router socket (a sync server: the CLI runs its own event loop)."""
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    router_pb2_grpc.add_RouterServicer_to_server(Router(), server)
    server.add_insecure_port(f"unix:{node / 'router.sock'}")
    server.start()
    yield
    server.stop(None).wait()


def test_models_lists_each_provider_and_the_aliases(router, capsys):
    assert cli.main(["models"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert lines[:4] == [
        ["MODEL", "KIND", "CONTEXT", "WORKER", "WHERE", "SERVICE", "LOAD"],
        ["smollm2-135m-instruct", "chat", "8192", "w1", "local", "llm-inference", "50%"],
        ["smollm2-135m-instruct", "chat", "8192", "w2", "remote", "llm-inference", "0%"],
        ["all-minilm-l6-v2", "embedding", "-", "w2", "remote", "rag-embeddings", "100%"],
    ]
    assert lines[-3:] == [["ALIAS", "MODEL"], ["gpt-4o-mini", "smollm2-135m-instruct"],
                          ["text-embedding-3-small", "all-minilm-l6-v2"]]


def test_drain_prints_what_was_withdrawn(router, capsys):
    assert cli.main(["drain"]) == 0
    assert "drained w1: withdrew echo, twin;" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["models", "drain"])
def test_without_a_router_the_command_says_so(node, capsys, command):
    assert cli.main([command]) == 1
    assert capsys.readouterr().err.strip() == "the router of w1 is not answering: UNAVAILABLE"
