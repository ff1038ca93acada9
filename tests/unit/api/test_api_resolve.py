"""/service/{name}... that reached the api: Envoy had no route, so the router is asked."""

from __future__ import annotations

from yarl import URL

from services.common.rpc import router_pb2


async def error_of(resp) -> tuple[int, str]:
    return resp.status, (await resp.json())["error"]["code"]


async def test_a_service_nobody_hosts_is_404(start_api):
    api = await start_api()
    api.router.resolution = router_pb2.Resolution(kind=router_pb2.ROUTE_KIND_NONE)
    async with api.client.post("/service/nobody", json={}) as resp:
        assert await error_of(resp) == (404, "no_such_service")
    assert api.router.resolved == ["nobody"]


async def test_a_resolved_service_is_redirected_to_the_same_absolute_url(start_api):
    api = await start_api()
    headers = {"host": "node.example:8000", "x-forwarded-proto": "https"}
    # encoded: sent as written, so the query's %2F reaches the api undecoded
    url = URL("/service/remote-llm/v1/models?limit=2&x=%2F", encoded=True)
    async with api.client.get(url, headers=headers, allow_redirects=False) as resp:
        assert resp.status == 307
        assert resp.headers["location"] == "https://node.example:8000/service/remote-llm/v1/models?limit=2&x=%2F"
    assert api.router.resolved == ["remote-llm"]


async def test_an_envelope_for_a_service_hosted_elsewhere_is_redirected(start_api):
    api = await start_api()
    async with api.client.post("/service/remote-llm", json={}, allow_redirects=False) as resp:
        assert resp.status == 307
        assert resp.headers["location"].endswith("/service/remote-llm")


async def test_a_request_envoy_already_redirected_is_not_redirected_again(start_api):
    api = await start_api()
    headers = {"x-envoy-original-url": "http://localhost:8000/service/remote-llm/x"}
    async with api.client.get("/service/remote-llm/x", headers=headers, allow_redirects=False) as resp:
        assert await error_of(resp) == (503, "route_pending")
        assert resp.headers["retry-after"] == "1"


async def test_a_local_service_failing_its_health_checks_is_503(start_api):
    api = await start_api()
    api.router.resolution = router_pb2.Resolution(kind=router_pb2.ROUTE_KIND_LOCAL, healthy=False)
    async with api.client.get("/service/echo/health", allow_redirects=False) as resp:
        assert await error_of(resp) == (503, "backend_unhealthy")


async def test_without_the_router_the_answer_is_503_router_unavailable(start_api):
    api = await start_api(router=False)
    async with api.client.get("/service/remote-llm/x", allow_redirects=False) as resp:
        assert await error_of(resp) == (503, "router_unavailable")


async def test_an_invalid_service_name_is_404_without_asking_the_router(start_api):
    api = await start_api()
    for path in ("/service/Upper", "/service/a%2Fb/x", "/service/-x" + "y" * 70):
        async with api.client.post(path, json={}, allow_redirects=False) as resp:
            assert await error_of(resp) == (404, "no_such_service"), path
    assert api.router.resolved == []


async def test_the_router_hears_the_client_envoy_saw(start_api):
    api = await start_api()
    async with api.client.get("/service/remote-llm/x", headers={"x-forwarded-for": "203.0.113.7"},
                              allow_redirects=False) as resp:
        assert resp.status == 307
    async with api.client.get("/service/remote-llm/x", allow_redirects=False) as resp:
        assert resp.status == 307
    assert api.router.clients == ["203.0.113.7", ""]


async def test_a_client_past_its_lookups_is_429_with_retry_after(start_api):
    # L3 (issue 12): a burst of random names from one client cost one DHT crawl each.
    api = await start_api()
    api.router.over_limit = True
    async with api.client.get("/service/random-name/x", allow_redirects=False) as resp:
        assert await error_of(resp) == (429, "too_many_lookups")
        assert resp.headers["retry-after"] == "1"
