"""Health probes against a real HTTP server: the /health then / fallback, backend details."""

from __future__ import annotations

import pytest
from aiohttp import web

from services.common.httpclient import Pool
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
    pool = Pool(server, connect_timeout=5)
    paths, info = list(DEFAULT_HEALTH_PATHS), BackendInfo()
    try:
        assert await check_once(pool, paths, info, 5) == (True, "")
        assert paths == ["/"]
        assert await check_once(pool, paths, info, 5) == (True, "")
    finally:
        pool.close()
    assert (info.model, info.load_seconds, info.rss_bytes) == ("tiny", 1.5, 1234)


async def test_a_configured_health_path_that_is_missing_fails(server):
    pool = Pool(server, connect_timeout=5)
    try:
        ok, error = await check_once(pool, ["/health"], BackendInfo(), 5)
    finally:
        pool.close()
    assert not ok and "404" in error


async def test_an_unreachable_backend_fails_with_the_reason():
    pool = Pool("http://127.0.0.1:9", connect_timeout=2)
    try:
        ok, error = await check_once(pool, ["/health"], BackendInfo(), 2)
    finally:
        pool.close()
    assert (ok, error) == (False, "health check failed: the backend refused the connection: Connection refused")


def test_backend_info_ignores_answers_that_describe_nothing():
    info = BackendInfo()
    for answer in (b"Ollama is running", b"[1, 2]", b'{"status": "ok"}'):
        info.update(answer)
    assert info == BackendInfo()
