"""/health, /stats and /metrics: what the node reports, from its components and Envoy."""

from __future__ import annotations

import asyncio

import pytest

from services.api.app import node_status
from services.common.rpc import router_pb2

SERVING = {"nebula-agent": "SERVING", "dht": "SERVING", "router": "SERVING", "api": "SERVING",
           "gateway": "SERVING"}
ACKED = router_pb2.GatewayStatus(connected=True, version=2, acked_version=2)


@pytest.mark.parametrize(("components", "backends", "gateway", "status"), [
    (SERVING, {"echo": True}, ACKED, "healthy"),
    ({**SERVING, "gateway": "NOT_SERVING"}, {"echo": True}, ACKED, "unhealthy"),
    (SERVING, {"echo": True}, router_pb2.GatewayStatus(connected=True, version=1), "unhealthy"),
    ({**SERVING, "dht": "UNREACHABLE"}, {"echo": True}, ACKED, "degraded"),
    (SERVING, {"echo": True, "ocr": False}, ACKED, "degraded"),
    (SERVING, {"echo": True}, None, "degraded"),
    ({**SERVING, "gateway": "NOT_SERVING"}, {}, None, "unhealthy"),
])
def test_node_status_rules(components, backends, gateway, status):
    assert node_status(components, backends, gateway) == status


async def test_health_of_a_node_whose_parts_all_answer(start_api):
    api = await start_api()
    api.router.gateway = router_pb2.GatewayStatus(connected=True, version=4, acked_version=3,
                                                  last_nack="cluster remote:x: bad")
    async with api.client.get("/health") as resp:
        assert resp.status == 200
        health = await resp.json()
    assert health["status"] == "healthy"
    assert health["components"] == SERVING
    assert health["gateway"] == {"connected": True, "acked_version": 3, "last_nack": "cluster remote:x: bad"}
    assert health["services"] == ["echo"] and health["backends"] == {"echo": "healthy"}
    assert {"worker_id", "vpn_ip", "vpn_reason", "dht_enabled", "dht_peers", "uptime", "started_at",
            "version", "unavailable"} <= set(health)
    assert "router_connected" not in health


async def test_health_is_503_unhealthy_while_envoy_is_not_live(start_api):
    api = await start_api()
    api.admin.live = False
    async with api.client.get("/health") as resp:
        assert resp.status == 503
        assert (await resp.json())["status"] == "unhealthy"


async def test_health_without_the_router_is_degraded(start_api):
    api = await start_api(router=False)
    async with api.client.get("/health") as resp:
        health = await resp.json()
    assert (resp.status, health["status"], health["gateway"]) == (200, "degraded", None)
    assert health["components"]["router"] == "UNREACHABLE"


async def test_stats_adds_envoy_counters_router_counters_and_served_envelopes(start_api):
    api = await start_api()
    api.admin.stats = [{"name": "cluster.local_echo.upstream_rq_total", "value": 2},
                       {"name": "cluster.remote_llm.upstream_rq_total", "value": 5},
                       {"name": "cluster.remote_llm.upstream_rq_5xx", "value": 1}]
    api.router.counters = router_pb2.RouterCounters(cache_misses=1, dht_lookups=1, misses_found=1, cache_size=1)
    for service in ("echo", "down"):
        async with api.client.post(f"/service/{service}", json={}) as resp:
            await resp.read()
    async with api.client.get("/stats") as resp:
        stats = await resp.json()
    assert stats["routing"] == {"local_requests": 4, "forwarded_requests": 5, "cache_hits": 4, "cache_misses": 1,
                                "dht_lookups": 1, "failed_requests": 2, "cache_size": 1, "cache_hit_rate": 0.8}
    assert stats["worker_id"] == "w1" and stats["services"] == ["echo"]
    assert stats["backends"][0]["name"] == "echo" and stats["backends"][0]["model"] == "m1"
    assert "hostname" in stats["capabilities"]
    assert api.admin.filters and "upstream_rq_" in api.admin.filters[0]


async def test_stats_keeps_what_a_cluster_served_after_it_went_unread(start_api):
    api = await start_api()
    api.admin.stats = [{"name": "cluster.remote_gone.upstream_rq_total", "value": 3}]
    reads = len(api.admin.filters)
    # the api reads Envoy's counters on its own, every second, asked or not (two reads: the
    # first one after the change is surely counted)
    for _ in range(50):
        if len(api.admin.filters) >= reads + 2:
            break
        await asyncio.sleep(0.1)
    api.admin.stats = []  # the cluster went with its providers before anyone asked for /stats
    async with api.client.get("/stats") as resp:
        assert (await resp.json())["routing"]["forwarded_requests"] == 3


async def test_metrics_is_one_page_with_envoy_stats_appended(start_api):
    api = await start_api()
    async with api.client.post("/service/echo", json={}) as resp:
        await resp.read()
    async with api.client.get("/metrics") as resp:
        assert resp.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        page = await resp.text()
    assert 'envoy_cluster_upstream_rq_total{envoy_cluster_name="local_echo"} 7' in page
    assert 'meshworker_api_envelope_requests_total{code="2xx",service="echo"} 1.0' in page
    assert 'meshworker_component_up{component="gateway"} 1.0' in page


async def test_metrics_still_answers_while_envoy_is_down(start_api):
    api = await start_api(admin=False)
    async with api.client.get("/metrics") as resp:
        assert resp.status == 200
        page = await resp.text()
    assert "envoy_" not in page
    assert 'meshworker_component_up{component="gateway"} 0.0' in page
    assert 'meshworker_component_up{component="api"} 1.0' in page


async def test_mesh_services_are_the_router_s_view(start_api):
    api = await start_api()
    async with api.client.get("/mesh/services") as resp:
        services = (await resp.json())["services"]
    assert [(s["name"], [p["worker_id"] for p in s["providers"]]) for s in services] == [("llm", ["w2"])]


async def test_mesh_peers_without_a_dht_is_503(start_api):
    api = await start_api()  # the dht double answers health only: ListPeers is unimplemented
    async with api.client.get("/mesh/peers") as resp:
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "dht_unavailable"
