"""/metrics with the local backends' own pages: each backend's families labelled with its
service, one family per name however many backends serve it, and a backend without a
page (404, not the text format, not listening, too slow) left out."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from api_doubles import FakeEnvoyAdmin, FakeRouter, serving_api, serving_health
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_loopback import serving
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from unix_site import unix_site

from services.api import metrics
from services.common.config import load

# embed-a and twin share one backend; plain has no /metrics, junk answers it with HTML,
# dead does not listen, slow answers after the deadline.
SERVICES_TOML = """
services = ["chat", "embed-a", "embed-b", "twin", "plain", "junk", "dead", "slow"]
[service.chat]
url = "unix:{dir}/chat.sock"
[service.embed-a]
url = "unix:{dir}/embed-a.sock"
[service.embed-b]
url = "unix:{dir}/embed-b.sock"
api_key = "k-b"
[service.twin]
url = "unix:{dir}/embed-a.sock"
[service.plain]
url = "unix:{dir}/plain.sock"
[service.junk]
url = "unix:{dir}/junk.sock"
[service.dead]
url = "unix:{dir}/dead.sock"
[service.slow]
url = "unix:{dir}/slow.sock"
"""


def model_page(model: str, requests: int, generates: bool = False) -> bytes:
    """A page with the built-in model backends' families (services/backends/model_metrics.py)."""
    registry = CollectorRegistry()
    Counter("meshworker_model_requests", "Requests to the model's endpoints", ["model", "endpoint", "code"],
            registry=registry).labels(model, "embedding", "2xx").inc(requests)
    Counter("meshworker_model_prompt_tokens", "Tokens the model read", ["model"],
            registry=registry).labels(model).inc(10 * requests)
    Gauge("meshworker_model_requests_in_flight", "Requests in flight", ["model"], registry=registry).labels(model)
    if generates:
        Histogram("meshworker_model_time_to_first_token_seconds", "Time to the first token", ["model"],
                  buckets=(0.1, 1), registry=registry).labels(model).observe(0.5)
    return generate_latest(registry)


def metrics_app(page: bytes, status: int = 200, delay_s: float = 0.0, key: str = "",
                content_type: str = "text/plain") -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(delay_s)
        if key and request.headers.get("authorization") != f"Bearer {key}":
            return web.Response(status=401)
        response = web.Response(body=page, status=status, content_type=content_type)
        response.enable_compression()  # gzip, as prometheus_client's handlers, when the client accepts it
        return response

    app = web.Application()
    app.router.add_get("/metrics", handler)
    return app


def backends() -> dict[str, web.Application]:
    """Each backend by its socket's name (an app belongs to the loop that serves it: one per test)."""
    return {
        "chat": metrics_app(model_page("smollm2", 2, generates=True)),
        "embed-a": metrics_app(model_page("minilm", 3)),
        "embed-b": metrics_app(model_page("minilm", 4), key="k-b"),
        "plain": metrics_app(b"", status=404),
        "junk": metrics_app(b"<html><body>metrics</body></html>", content_type="text/html"),
        "slow": metrics_app(model_page("late", 1), delay_s=2.0),
    }


@pytest.fixture
async def client(monkeypatch) -> AsyncIterator[aiohttp.ClientSession]:
    """The api, its router and Envoy doubles, and the backends above on their sockets."""
    monkeypatch.setattr(metrics, "BACKEND_DEADLINE_S", 0.5)
    directory = Path(tempfile.mkdtemp(dir="/tmp", prefix="apim-"))  # socket paths: 107 bytes at most
    (directory / "meshworker.toml").write_text(SERVICES_TOML.format(dir=directory))
    cfg = load({"MESHWORKER_STATE_DIR": str(directory), "MESHWORKER_RUNTIME_DIR": str(directory / "run"),
                "MESHWORKER_WORKER_ID": "w1"}, str(directory / "meshworker.toml"))
    cfg.runtime_dir.mkdir()
    async with contextlib.AsyncExitStack() as stack:
        for name, app in backends().items():
            await stack.enter_async_context(unix_site(app, directory / f"{name}.sock"))
        await stack.enter_async_context(unix_site(FakeEnvoyAdmin().app, cfg.envoy_admin_socket))
        router = FakeRouter()
        await router.health.set("", health_pb2.HealthCheckResponse.SERVING)
        others = await stack.enter_async_context(
            serving(health_pb2_grpc.add_HealthServicer_to_server, await serving_health()))
        channels = {"nebula-agent": others, "dht": others,
                    "router": await stack.enter_async_context(serving(FakeRouter.add_to_server, router))}
        yield await stack.enter_async_context(serving_api(cfg, channels))
    shutil.rmtree(directory, ignore_errors=True)


def by_service(page: str, family: str) -> dict[str, float]:
    [found] = [f for f in text_string_to_metric_families(page) if f.name == family]
    return {s.labels["service"]: s.value for s in found.samples if s.name == family + "_total"}


async def test_each_backend_s_page_is_labelled_and_merged(client):
    async with client.get("/metrics") as resp:
        assert resp.status == 200
        page = await resp.text()
    families = [f.name for f in text_string_to_metric_families(page)]
    assert len(families) == len(set(families))  # one HELP and TYPE per name
    assert page.count("# TYPE meshworker_model_requests_total counter") == 1
    # twin is embed-a's backend read once; plain, junk, dead and slow have no page in time.
    assert by_service(page, "meshworker_model_requests") == {"chat": 2, "embed-a": 3, "embed-b": 4}
    assert 'meshworker_model_time_to_first_token_seconds_count{model="smollm2",service="chat"} 1.0' in page
    assert 'meshworker_model_requests_in_flight{model="minilm",service="embed-b"} 0.0' in page
    # The rest of the page is still there: the api's own families and Envoy's.
    assert 'meshworker_component_up{component="router"} 1.0' in page
    assert 'envoy_cluster_upstream_rq_total{envoy_cluster_name="local_echo"} 7' in page


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
async def test_promtool_accepts_the_page_with_backends(client):
    async with client.get("/metrics") as resp:
        page = await resp.text()
    # Envoy's families follow Envoy's naming, which promtool's lint does not accept; ours must.
    ours = "".join(line + "\n" for line in page.splitlines()
                   if line.removeprefix("# HELP ").removeprefix("# TYPE ").startswith("meshworker_"))
    assert "meshworker_model_requests_total" in ours
    out = await asyncio.to_thread(subprocess.run, ["promtool", "check", "metrics"], input=ours.encode(),
                                  capture_output=True, timeout=30, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_family_of_one_name_and_two_types_keeps_the_first():
    pages = {"a": "# TYPE x_total counter\nx_total 1\n", "b": "# TYPE x gauge\nx 2\n# TYPE y gauge\ny 3\n"}
    merged = {f.name: (f.type, [(s.labels, s.value) for s in f.samples]) for f in metrics.merge_backends(pages, set())}
    assert merged == {"x": ("counter", [({"service": "a"}, 1.0)]), "y": ("gauge", [({"service": "b"}, 3.0)])}


def test_a_family_already_on_the_page_is_left_out():
    pages = {"a": "# TYPE meshworker_component_up gauge\nmeshworker_component_up 1\n# TYPE z_total counter\nz_total 1\n"}
    taken = metrics.declared("# HELP meshworker_component_up up\n# TYPE meshworker_component_up gauge\n"
                             "# TYPE z gauge\n")
    assert metrics.merge_backends(pages, taken) == []


def test_a_backend_s_own_service_label_is_kept_as_exported_service():
    [family] = metrics.merge_backends({"vllm": 'x{service="chat"} 1\n'}, set())
    assert family.samples[0].labels == {"service": "vllm", "exported_service": "chat"}
