"""Tests for services.router.routes (route table) and services.router.stats (routing counters)."""

from __future__ import annotations

import pytest

from services.common.config import ServiceConfig
from services.common.rpc import router_pb2
from services.router.health import HealthDamper
from services.router.routes import local_route, route_table
from services.router.stats import RoutingCounters

OCR = ServiceConfig(name="vision-ocr", upstream="unix:/run/svc-vision-ocr.sock", invoke_path="/ocr",
                    idempotent=True, timeout_s=12.5)
LLM = ServiceConfig(name="llm", upstream="http://127.0.0.1:9000")


def damper(healthy: bool) -> HealthDamper:
    d = HealthDamper(fail_threshold=3, ok_threshold=2)
    d.observe(healthy)
    return d


def test_local_route_copies_the_service_config():
    route = local_route("box-1", OCR, healthy=True)

    assert route == router_pb2.Route(
        service="vision-ocr", kind=router_pb2.ROUTE_KIND_LOCAL, upstream="unix:/run/svc-vision-ocr.sock",
        invoke_path="/ocr", healthy=True, idempotent=True, timeout_seconds=12.5, worker_id="box-1")


def test_route_table_has_one_route_per_service_with_its_health():
    table = route_table(7, "box-1", (OCR, LLM), {"vision-ocr": damper(False), "llm": damper(True)})

    assert table.version == 7
    assert [(r.service, r.healthy, r.upstream) for r in table.routes] == [
        ("vision-ocr", False, "unix:/run/svc-vision-ocr.sock"), ("llm", True, "http://127.0.0.1:9000")]
    assert {r.worker_id for r in table.routes} == {"box-1"}


def test_route_table_with_no_services_is_empty():
    assert route_table(1, "box-1", (), {}) == router_pb2.RouteTable(version=1)


def outcome(kind: int, success: bool) -> router_pb2.Outcome:
    return router_pb2.Outcome(service="vision-ocr", kind=kind, success=success)


def test_record_counts_each_outcome_once():
    counters = RoutingCounters()

    counters.record(outcome(router_pb2.ROUTE_KIND_LOCAL, True))
    counters.record(outcome(router_pb2.ROUTE_KIND_LOCAL, False))
    counters.record(outcome(router_pb2.ROUTE_KIND_FORWARDED, True))
    counters.record(outcome(router_pb2.ROUTE_KIND_NONE, False))

    assert counters == RoutingCounters(local_requests=2, forwarded_requests=1, failed_requests=2)


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
