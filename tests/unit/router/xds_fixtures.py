"""Mesh views for the xDS tests: one node hosting services, peers hosting others."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import json_format

from services.common.config import ServiceConfig
from services.common.models import Model
from services.identity.mesh_ca import secret_mode_credentials
from services.router.xds.view import LocalService, MeshView, ModelProvider, ModelRoute, Peer, RemoteService

SECRET = "a mesh secret of the xds tests"
SMOL, MINILM, BIG = Model("smol", "chat", 8192), Model("minilm", "embedding", 256), Model("big", "chat")
OWN_LISTENER = Peer("node1", "127.0.0.1", 18443)
# smol: served here ("echo") and by node2; minilm: only here; big: only by node2 and node3.
MODELS = (
    ModelRoute(SMOL, "echo", (ModelProvider(OWN_LISTENER, "echo", 0, local=True),
                              ModelProvider(Peer("node2", "10.0.0.2", 8443), "llm", 40))),
    ModelRoute(MINILM, "echo"),
    ModelRoute(BIG, None, (ModelProvider(Peer("node2", "10.0.0.2", 8443), "llm", 200),
                           ModelProvider(Peer("node3", "10.0.0.3", 8443), "vllm", 10))),
)


def view(tmp_path: Path, **changes) -> MeshView:
    tls = secret_mode_credentials(SECRET, tmp_path, "node1", 1_700_000_000.0)
    shape = {
        "worker_id": "node1", "listen_host": "127.0.0.1", "client_port": 18000, "peer_port": 18443,
        "api_socket": str(tmp_path / "api.sock"), "max_body_bytes": 1000, "health_interval_s": 1.0,
        "health_fail_threshold": 3, "health_ok_threshold": 2,
        "local": (LocalService(ServiceConfig("echo", "unix:/tmp/echo.sock", idempotent=True, api_key="k1"), True),
               LocalService(ServiceConfig("web", "http://localhost:9000", timeout_s=5.0), False)),
        "remote": (RemoteService("echo", (Peer("node2", "10.0.0.2", 8443),), True),
                RemoteService("ocr", (Peer("node2", "10.0.0.2", 8443), Peer("node3", "10.0.0.3", 8443)), False)),
        "tls": tls, "models": MODELS, "aliases": (("gpt-4o-mini", "smol"), ("gone", "x"))}
    return MeshView(**(shape | changes))


def as_dict(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)
