"""Tests for services.router.routes (route choice), the route table and services.router.stats."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time

import pytest
from prometheus_client import CollectorRegistry

from services.common.config import ServiceConfig, load
from services.common.rpc import dht_pb2, router_pb2
from services.router import main as router_main
from services.router.main import RouterServicer
from services.router.providers import Latencies, Provider
from services.router.routes import FORWARD_TIMEOUT_S, choose, forwarded_route, local_route
from services.router.stats import RoutingCounters

OCR = ServiceConfig(name="vision-ocr", upstream="unix:/run/svc-vision-ocr.sock", invoke_path="/ocr",
                    idempotent=True, timeout_s=12.5)
LLM = ServiceConfig(name="llm", upstream="http://127.0.0.1:9000")
T0 = 1_000.0


def provider(worker: str, idempotent: bool = True) -> Provider:
    return Provider(worker, f"http://{worker}:8000", T0, T0 + 60, idempotent)


def pick(service: str, local: tuple[ServiceConfig, bool] | None, remote: list[Provider] | None,
         latencies: Latencies | None = None) -> router_pb2.Route:
    return choose(service, local, remote, "box-1", latencies or Latencies(), random.Random(1))


def test_local_route_copies_the_service_config():
    route = local_route("box-1", OCR, healthy=True)

    assert route == router_pb2.Route(
        service="vision-ocr", kind=router_pb2.ROUTE_KIND_LOCAL, upstream="unix:/run/svc-vision-ocr.sock",
        invoke_path="/ocr", healthy=True, idempotent=True, timeout_seconds=12.5, worker_id="box-1")


def test_healthy_local_backend_wins_over_remote_providers():
    route = pick("vision-ocr", (OCR, True), [provider("a")])

    assert route == local_route("box-1", OCR, healthy=True)


def test_unhealthy_local_backend_with_remote_providers_is_forwarded():
    route = pick("vision-ocr", (OCR, False), [provider("a")])

    assert route.kind == router_pb2.ROUTE_KIND_FORWARDED
    assert [e.worker_id for e in route.endpoints] == ["a"]


@pytest.mark.parametrize("remote", [None, []])
def test_unhealthy_local_backend_without_remote_providers_stays_local_and_unhealthy(remote):
    assert pick("vision-ocr", (OCR, False), remote) == local_route("box-1", OCR, healthy=False)


def test_remote_only_service_is_forwarded():
    assert pick("llm", None, [provider("a")]).kind == router_pb2.ROUTE_KIND_FORWARDED


@pytest.mark.parametrize("remote", [None, []])
def test_nothing_anywhere_is_no_route(remote):
    assert pick("llm", None, remote) == router_pb2.Route(service="llm", kind=router_pb2.ROUTE_KIND_NONE)


def test_forwarded_route_orders_endpoints_by_latency():
    latencies = Latencies({"a": 0.3, "b": 0.1, "c": 0.2})

    route = forwarded_route("llm", [provider("a"), provider("b"), provider("c")], latencies, random.Random(1))

    assert [(e.worker_id, e.url, e.expires_at) for e in route.endpoints] == [
        ("b", "http://b:8000", T0 + 60), ("c", "http://c:8000", T0 + 60), ("a", "http://a:8000", T0 + 60)]
    assert route.worker_id == "b"
    assert (route.service, route.kind, route.healthy) == ("llm", router_pb2.ROUTE_KIND_FORWARDED, True)
    assert route.timeout_seconds == FORWARD_TIMEOUT_S
    assert route.upstream == ""


def test_forwarded_route_is_idempotent_only_when_every_provider_is():
    both = forwarded_route("llm", [provider("a"), provider("b")], Latencies(), random.Random(1))
    one = forwarded_route("llm", [provider("a"), provider("b", idempotent=False)], Latencies(), random.Random(1))

    assert both.idempotent is True
    assert one.idempotent is False


# --- the route table the router pushes (RouterServicer.table) -------------------------------------

def servicer(tmp_path, services: tuple[ServiceConfig, ...] = (OCR, LLM), dht: object = None) -> RouterServicer:
    cfg = load({"MESHWORKER_STATE_DIR": str(tmp_path), "MESHWORKER_MESH_SECRET": "x" * 32})
    cfg = dataclasses.replace(cfg, worker_id="box-1", services=services)
    return RouterServicer(cfg, CollectorRegistry(), dht or object())


def test_route_table_has_one_route_per_service_with_its_health(tmp_path):
    router = servicer(tmp_path)
    router.health["vision-ocr"].observe(False)
    router.health["llm"].observe(True)

    table = router.table()

    assert table.version == 1
    assert [(r.service, r.healthy, r.upstream) for r in table.routes] == [
        ("vision-ocr", False, "unix:/run/svc-vision-ocr.sock"), ("llm", True, "http://127.0.0.1:9000")]
    assert {r.worker_id for r in table.routes} == {"box-1"}


def test_route_table_with_no_services_is_empty(tmp_path):
    assert servicer(tmp_path, services=()).table() == router_pb2.RouteTable(version=1)


def test_route_table_includes_cached_remote_services(tmp_path):
    router = servicer(tmp_path, services=(OCR,))
    router.health["vision-ocr"].observe(True)
    now = time.time()
    router.cache.put("llm", [Provider("a", "http://a:8000", now, now + 60)], now)

    routes = {r.service: r for r in router.table().routes}

    assert routes["vision-ocr"].kind == router_pb2.ROUTE_KIND_LOCAL
    assert routes["llm"].kind == router_pb2.ROUTE_KIND_FORWARDED
    assert [e.worker_id for e in routes["llm"].endpoints] == ["a"]


# --- counters -------------------------------------------------------------------------------------

def outcome(kind: int, success: bool, from_table: bool = False, worker_id: str = "") -> router_pb2.Outcome:
    return router_pb2.Outcome(service="vision-ocr", kind=kind, success=success, from_table=from_table,
                              worker_id=worker_id)


def test_record_counts_each_outcome_once():
    counters = RoutingCounters()

    counters.record(outcome(router_pb2.ROUTE_KIND_LOCAL, True))
    counters.record(outcome(router_pb2.ROUTE_KIND_LOCAL, False))
    counters.record(outcome(router_pb2.ROUTE_KIND_FORWARDED, True))
    counters.record(outcome(router_pb2.ROUTE_KIND_NONE, False))

    assert counters == RoutingCounters(local_requests=2, forwarded_requests=1, failed_requests=2)


def test_forwarded_from_the_pushed_table_is_a_cache_hit():
    counters = RoutingCounters()

    counters.record(outcome(router_pb2.ROUTE_KIND_FORWARDED, True, from_table=True))

    assert counters == RoutingCounters(forwarded_requests=1, cache_hits=1)


def test_local_from_the_pushed_table_is_no_cache_hit():
    counters = RoutingCounters()

    counters.record(outcome(router_pb2.ROUTE_KIND_LOCAL, True, from_table=True))

    assert counters == RoutingCounters(local_requests=1)


def test_failed_forward_counts_as_forwarded_and_failed():
    counters = RoutingCounters()

    counters.record(outcome(router_pb2.ROUTE_KIND_FORWARDED, False, from_table=True))

    assert counters == RoutingCounters(forwarded_requests=1, cache_hits=1, failed_requests=1)


def test_as_proto_hit_rate_is_zero_without_lookups():
    stats = RoutingCounters(local_requests=3).as_proto(cache_size=4)

    assert stats.cache_hit_rate == 0.0
    assert (stats.local_requests, stats.cache_size) == (3, 4)


def test_as_proto_hit_rate_is_hits_over_lookups():
    counters = RoutingCounters(cache_hits=3, cache_misses=1, dht_lookups=1, forwarded_requests=2,
                               failed_requests=1)

    stats = counters.as_proto(cache_size=2)

    assert stats.cache_hit_rate == pytest.approx(0.75)
    assert (stats.cache_hits, stats.cache_misses, stats.dht_lookups) == (3, 1, 1)
    assert (stats.forwarded_requests, stats.failed_requests, stats.cache_size) == (2, 1, 2)


# --- Resolve + ReportOutcome: the sequence (a cache miss, a lookup, then hits) --------------

class FakeDht:
    """A Dht stub whose FindProviders answers from a fixed list and counts its calls."""

    def __init__(self, *workers: str):
        self.workers = workers
        self.calls = 0

    async def FindProviders(self, request, timeout):
        self.calls += 1
        now = time.time()
        return dht_pb2.FindProvidersResponse(providers=[
            dht_pb2.ProviderRecord(service=request.service, worker_id=w, url=f"http://{w}:8000",
                                   issued_at=now, expires_at=now + 60) for w in self.workers])


async def test_first_then_next_request_for_a_remote_service(tmp_path):
    dht = FakeDht("a", "box-1")  # this node's own record is never a forwarding target
    router = servicer(tmp_path, services=(), dht=dht)

    route = await router.Resolve(router_pb2.ResolveRequest(service="llm"), None)
    await router.ReportOutcome(router_pb2.ReportOutcomeRequest(outcomes=[
        outcome(router_pb2.ROUTE_KIND_FORWARDED, True, from_table=False, worker_id="a")]), None)
    await router.ReportOutcome(router_pb2.ReportOutcomeRequest(outcomes=[
        outcome(router_pb2.ROUTE_KIND_FORWARDED, True, from_table=True, worker_id="a")]), None)

    assert [e.worker_id for e in route.endpoints] == ["a"]
    assert dht.calls == 1
    assert router.counters == RoutingCounters(cache_misses=1, dht_lookups=1, cache_hits=1,
                                              forwarded_requests=2)


async def test_resolve_of_a_cached_service_is_a_hit_without_lookup(tmp_path):
    dht = FakeDht("a")
    router = servicer(tmp_path, services=(), dht=dht)

    await router.Resolve(router_pb2.ResolveRequest(service="llm"), None)
    await router.Resolve(router_pb2.ResolveRequest(service="llm"), None)

    assert dht.calls == 1
    assert (router.counters.cache_misses, router.counters.dht_lookups, router.counters.cache_hits) == (1, 1, 1)


async def test_resolve_of_a_healthy_local_service_counts_nothing(tmp_path):
    dht = FakeDht("a")
    router = servicer(tmp_path, dht=dht)
    router.health["llm"].observe(True)

    route = await router.Resolve(router_pb2.ResolveRequest(service="llm"), None)

    assert route.kind == router_pb2.ROUTE_KIND_LOCAL
    assert dht.calls == 0
    assert router.counters == RoutingCounters()


async def test_failed_forward_invalidates_the_route_and_puts_that_provider_last(tmp_path):
    router = servicer(tmp_path, services=(), dht=FakeDht("a", "b"))
    await router.Resolve(router_pb2.ResolveRequest(service="llm"), None)
    version = router.version
    ok = outcome(router_pb2.ROUTE_KIND_FORWARDED, True, worker_id="b")
    ok.latency_seconds = 0.25
    failed = outcome(router_pb2.ROUTE_KIND_FORWARDED, False, worker_id="a")
    ok.service = failed.service = "llm"

    await router.ReportOutcome(router_pb2.ReportOutcomeRequest(outcomes=[ok, failed]), None)

    assert router.cache.get("llm", time.time()) is None  # the next request looks it up again
    assert router.latencies.smoothed == {"b": 0.25}
    assert router.version == version + 1
    await router.Resolve(router_pb2.ResolveRequest(service="llm"), None)
    route = router.route("llm", time.time())
    assert [e.worker_id for e in route.endpoints] == ["b", "a"]  # a failed: still there, but last


class StalledDht:
    """A Dht stub whose FindProviders never answers: a lookup stuck on a dead peer."""

    def __init__(self):
        self.calls = 0

    async def FindProviders(self, request, timeout):
        self.calls += 1
        await asyncio.Event().wait()


async def test_an_expired_provider_leaves_the_table_while_a_refresh_lookup_hangs(tmp_path, monkeypatch):
    monkeypatch.setattr(router_main, "REFRESH_TICK_S", 0.1)
    dht = StalledDht()
    router = servicer(tmp_path, services=(), dht=dht)
    now = time.time()
    # a is due for a refresh (little life left) and expires in 0.3 s; b lives on.
    router.cache.put("llm", [Provider("a", "http://a:8000", now - 10, now + 0.3),
                             Provider("b", "http://b:8000", now - 10, now + 60)], now - 2)
    version = router.version
    refresher = asyncio.create_task(router.refresh_forever())
    try:
        await asyncio.sleep(0.6)
        assert dht.calls == 1  # the refresh started, and is still waiting
        assert [e.worker_id for e in router.table().routes[0].endpoints] == ["b"]
        assert router.version > version  # a newer table went out to the gateway
    finally:
        refresher.cancel()
        await asyncio.gather(refresher, return_exceptions=True)
