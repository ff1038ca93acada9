"""Health probes against a real HTTP server: the /health then / fallback, backend details."""

from __future__ import annotations

import pytest
from aiohttp import web

from services.common import upstream
from services.common.config import ServiceConfig
from services.router.checker import DEFAULT_HEALTH_PATHS, BackendInfo, check_once

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def server():
    """An Ollama-like server: no /health, 200 with a description at /."""
    async def root(request: web.Request) -> web.Response:
        return web.json_response({"model": "tiny", "load_seconds": 1.5, "rss_bytes": 1234})

    app = web.Application()
    app.router.add_get("/", root)
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
