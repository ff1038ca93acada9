"""Health probes against a real HTTP server: the /health then / fallback, backend details."""

from __future__ import annotations

import pytest
from aiohttp import web

from services.common import upstream
from services.common.config import ServiceConfig
from services.common.models import Model
from services.router.checker import DEFAULT_HEALTH_PATHS, BackendInfo, check_once, fetch_models

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def server():
    """An Ollama-like server: no /health, 200 with a description at /."""
    async def root(request: web.Request) -> web.Response:
        return web.json_response({"model": "tiny", "load_seconds": 1.5, "rss_bytes": 1234})

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "tiny:1b", "object": "model"}]})

    app = web.Application()
    app.router.add_get("/", root)
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_without_a_health_path_falls_back_to_root_and_keeps_it(server):
    svc = ServiceConfig("tiny", server)
    paths, info = list(DEFAULT_HEALTH_PATHS), BackendInfo()
    async with upstream.session(server) as session:
        assert await check_once(svc, session, paths, info, 5) == (True, "")
        assert paths == ["/"]
        assert await check_once(svc, session, paths, info, 5) == (True, "")
    assert (info.model, info.load_seconds, info.rss_bytes) == ("tiny", 1.5, 1234)


async def test_a_configured_health_path_that_is_missing_fails(server):
    async with upstream.session(server) as session:
        ok, error = await check_once(ServiceConfig("tiny", server), session, ["/health"], BackendInfo(), 5)
    assert not ok and "404" in error


async def test_an_unreachable_backend_fails_with_the_reason():
    svc = ServiceConfig("gone", "http://127.0.0.1:9")
    async with upstream.session(svc.upstream) as session:
        ok, error = await check_once(svc, session, ["/health"], BackendInfo(), 2)
    assert not ok and error.startswith("health check failed: the backend is not reachable")
    assert "127.0.0.1:9" in error


def test_backend_info_ignores_answers_that_describe_nothing():
    info = BackendInfo()
    for answer in (b"Ollama is running", b"[1, 2]", b'{"status": "ok"}'):
        info.update(answer)
    assert info == BackendInfo()


def test_a_backends_reported_load_is_in_flight_over_capacity():
    info = BackendInfo()
    info.update(b'{"status": "ok", "inflight": 3, "capacity": 4}')
    assert info.load_percent == 75
    info.update(b'{"status": "ok"}')  # it stopped saying: idle, one at a time
    assert (info.inflight, info.capacity, info.load_percent) == (0, 1, 0)


async def test_models_come_from_the_backends_own_listing_else_from_config(server):
    async with upstream.session(server) as session:
        assert await fetch_models(ServiceConfig("tiny", server), session, 5) == (Model("tiny:1b"),)
        declared = (Model("mine", "embedding"),)
        assert await fetch_models(ServiceConfig("tiny", server, models=declared), session, 5) == declared
        # a backend without /v1/models serves no model: another path of the same server 404s
        assert await fetch_models(ServiceConfig("tiny", server + "/nothing"), session, 5) == ()


async def test_an_unreachable_backends_models_are_unknown_not_none():
    svc = ServiceConfig("gone", "http://127.0.0.1:9")
    async with upstream.session(svc.upstream) as session:
        assert await fetch_models(svc, session, 2) is None
