"""The router's servicer without Envoy: lookups, the seed's counters, the view it pushes."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import grpc
import pytest
from prometheus_client import CollectorRegistry

from services.common.config import ServiceConfig, load
from services.common.models import CATALOG
from services.common.rpc import dht_pb2, router_pb2
from services.router import dns
from services.router import servicer as router_servicer
from services.router.providers import Provider
from services.router.servicer import RouterServicer
from services.router.xds import resources

OCR = ServiceConfig(name="vision-ocr", upstream="unix:/run/svc-vision-ocr.sock", invoke_path="/ocr",
                    idempotent=True, timeout_s=12.5)
LLM = ServiceConfig(name="llm", upstream="http://127.0.0.1:9000")


class FakeDht:
    """A Dht stub (a test double) whose FindProviders answers from a fixed list and counts calls."""

    def __init__(self, *workers: str, delay_s: float = 0.0):
        self.workers = workers
        self.calls = 0
        self.delay_s = delay_s  # a lookup that takes a while, as a crawl does

    async def FindProviders(self, request, timeout):
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        now = time.time()
        return dht_pb2.FindProvidersResponse(providers=[
            dht_pb2.ProviderRecord(service=request.service, worker_id=w, url=f"https://10.0.0.{i + 1}:8443",
                                   issued_at=now, expires_at=now + 60) for i, w in enumerate(self.workers)])


class StalledDht:
    """A Dht stub whose FindProviders never answers: a lookup stuck on a dead peer."""

    def __init__(self):
        self.calls = 0

    async def FindProviders(self, request, timeout):
        self.calls += 1
        await asyncio.Event().wait()


@pytest.fixture(autouse=True)
def no_envoy(monkeypatch):
    """No Envoy acknowledges here: Resolve waits only briefly for it."""
    monkeypatch.setattr(router_servicer, "APPLY_DEADLINE_S", 0.01)


def servicer(tmp_path, services: tuple[ServiceConfig, ...] = (OCR, LLM), dht: object = None,
             registry: CollectorRegistry | None = None) -> RouterServicer:
    cfg = load({"MESHWORKER_STATE_DIR": str(tmp_path), "MESHWORKER_MESH_SECRET": "x" * 32})
    cfg = dataclasses.replace(cfg, worker_id="box-1", services=services)
    cfg.runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # as `meshworker up` makes it
    return RouterServicer(cfg, registry or CollectorRegistry(), dht or object())


async def resolve(router: RouterServicer, service: str) -> router_pb2.Resolution:
    return await router.Resolve(router_pb2.ResolveRequest(service=service), None)


async def test_a_first_request_is_one_miss_one_lookup_and_pushes_the_peers(tmp_path):
    dht = FakeDht("a", "box-1")  # this node's own record is never a forwarding target
    router = servicer(tmp_path, services=(), dht=dht)
    version = router.version

    found = await resolve(router, "llm")

    assert (found.kind, found.healthy) == (router_pb2.ROUTE_KIND_FORWARDED, True)
    assert dht.calls == 1
    assert (router.counters.cache_misses, router.counters.dht_lookups, router.counters.misses_found) == (1, 1, 1)
    assert router.version == version + 1
    assignment = router.ads.snapshot.resources[resources.ENDPOINT]["remote:llm"]
    assert [e.endpoint.hostname for e in assignment.endpoints[0].lb_endpoints] == ["a"]


async def test_a_cached_service_costs_no_lookup(tmp_path):
    dht = FakeDht("a")
    router = servicer(tmp_path, services=(), dht=dht)

    await resolve(router, "llm")
    await resolve(router, "llm")

    assert dht.calls == 1
    assert (router.counters.cache_misses, router.counters.dht_lookups) == (1, 1)


async def test_a_service_nowhere_is_remembered_and_pushes_nothing_to_envoy(tmp_path):
    # L3 (issue 12): each random name cost a route push (a 404 route in Envoy for 5 s).
    dht = FakeDht()
    router = servicer(tmp_path, services=(), dht=dht)
    version = router.version  # one more for each configuration pushed

    assert (await resolve(router, "nope")).kind == router_pb2.ROUTE_KIND_NONE
    assert (await resolve(router, "nope")).kind == router_pb2.ROUTE_KIND_NONE

    assert dht.calls == 1
    assert router.counters.misses_found == 0
    assert router.version == version
    assert router.cache.prune(time.time() + 60) is False  # nor when the memory of it goes


class Refused(Exception):
    pass


class Context:
    """A gRPC servicer context (a test double) whose abort raises, as grpc's does."""

    async def abort(self, code, message):
        raise Refused(code, message)


async def test_a_client_starts_only_so_many_lookups_of_unknown_names(tmp_path):
    # L3 (issue 12): a burst of random names from one client cost one DHT crawl each.
    dht, registry = FakeDht(), CollectorRegistry()
    router = servicer(tmp_path, services=(), dht=dht, registry=registry)

    async def ask(name: str, client: str = "203.0.113.7") -> router_pb2.Resolution:
        return await router.Resolve(router_pb2.ResolveRequest(service=name, client=client), Context())

    for i in range(int(router_servicer.LOOKUP_BURST)):
        assert (await ask(f"random-{i}")).kind == router_pb2.ROUTE_KIND_NONE
    with pytest.raises(Refused) as refused:
        await ask("random-more")

    assert refused.value.args[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dht.calls == router_servicer.LOOKUP_BURST
    assert registry.get_sample_value("meshworker_router_lookups_refused_total") == 1
    assert (await ask("random-0")).kind == router_pb2.ROUTE_KIND_NONE  # remembered: no lookup to refuse
    assert (await ask("random-more", client="198.51.100.1")).kind == router_pb2.ROUTE_KIND_NONE  # another client
    assert dht.calls == router_servicer.LOOKUP_BURST + 1


async def test_a_healthy_local_service_counts_nothing(tmp_path):
    dht = FakeDht("a")
    router = servicer(tmp_path, dht=dht)
    router.health["llm"].observe(True)
    router.health["llm"].observe(True)

    found = await resolve(router, "llm")

    assert (found.kind, found.healthy) == (router_pb2.ROUTE_KIND_LOCAL, True)
    assert dht.calls == 0 and router.counters.cache_misses == 0


async def test_an_unhealthy_local_service_with_nobody_else_is_local_and_unhealthy(tmp_path):
    router = servicer(tmp_path, dht=FakeDht())

    found = await resolve(router, "llm")

    assert (found.kind, found.healthy) == (router_pb2.ROUTE_KIND_LOCAL, False)


async def test_a_dht_that_does_not_answer_is_unavailable(tmp_path):
    class Down:
        async def FindProviders(self, request, timeout):
            import grpc
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, None, None, "down")

    class Context:
        async def abort(self, code, message):
            raise RuntimeError(f"{code.name}: {message}")

    router = servicer(tmp_path, services=(), dht=Down())
    with pytest.raises(RuntimeError, match="UNAVAILABLE: the DHT is not answering"):
        await router.Resolve(router_pb2.ResolveRequest(service="llm"), Context())


async def test_an_expired_provider_leaves_envoys_endpoints_while_a_refresh_lookup_hangs(tmp_path, monkeypatch):
    monkeypatch.setattr(router_servicer, "REFRESH_TICK_S", 0.1)
    dht = StalledDht()
    router = servicer(tmp_path, services=(), dht=dht)
    now = time.time()
    # a is due for a refresh (little life left) and expires in 0.3 s; b lives on.
    router.cache.put("llm", [Provider("a", "https://10.0.0.1:8443", now - 10, now + 0.3),
                             Provider("b", "https://10.0.0.2:8443", now - 10, now + 60)], now - 2)
    version = router.version
    refresher = asyncio.create_task(router.refresh_forever())
    try:
        await asyncio.sleep(0.6)
        assert dht.calls == 1  # the refresh started, and is still waiting
        assert router.version > version  # a newer configuration went out to Envoy
        assignment = router.ads.snapshot.resources[resources.ENDPOINT]["remote:llm"]
        assert [e.endpoint.hostname for e in assignment.endpoints[0].lb_endpoints] == ["b"]
    finally:
        refresher.cancel()
        await asyncio.gather(refresher, return_exceptions=True)


async def test_a_provider_advertised_by_host_name_is_resolved_or_left_out():
    named = Provider("a", "https://localhost:8443", 0, 1e12)
    assert (await dns.addressed(named)).url == "https://127.0.0.1:8443"
    assert await dns.addressed(Provider("b", "https://no-such-host.invalid:8443", 0, 1e12)) is None
    numeric = Provider("c", "https://10.1.2.3:8443", 0, 1e12)
    assert await dns.addressed(numeric) is numeric


def test_the_stats_rpc_counts_only_lookups(tmp_path):
    router = servicer(tmp_path, services=())
    router.counters.cache_misses, router.counters.dht_lookups, router.counters.misses_found = 3, 3, 2
    stats = asyncio.run(router.Stats(router_pb2.RouterStatsRequest(), None))
    assert stats == router_pb2.RouterCounters(cache_misses=3, dht_lookups=3, misses_found=2, cache_size=0)


class ListingDht(FakeDht):
    async def ListServices(self, request, timeout):
        return dht_pb2.ListServicesResponse(services=["vision-ocr", CATALOG])


async def test_mesh_services_shows_no_local_socket_paths_or_urls(tmp_path):
    # L5 (issue 12): /mesh/services showed local backends' upstreams (unix socket paths,
    # loopback URLs) to anyone; a peer needs only that this node serves it, and its own URL.
    router = servicer(tmp_path, dht=ListingDht("box-2"))

    views = {v.name: v for v in (await router.MeshServices(router_pb2.MeshServicesRequest(), None)).services}

    assert CATALOG not in views  # the model catalog's key is no service
    ocr = views["vision-ocr"].providers
    assert [(p.worker_id, p.local, p.url) for p in ocr] == [
        ("box-1", True, "local"), ("box-2", False, "https://10.0.0.1:8443")]
    assert [(p.worker_id, p.url) for p in views["llm"].providers if p.local] == [("box-1", "local")]
    shown = str(views)
    assert OCR.upstream.removeprefix("unix:") not in shown and LLM.upstream not in shown


async def test_a_restarted_router_serves_the_providers_it_had_and_counts_on(tmp_path):
    """Envoy keeps its last configuration while the router is down: the router that comes
    back must push the same peers again, not an empty cache, and a higher version."""
    dht = FakeDht("a")
    first = servicer(tmp_path, services=(), dht=dht)
    await resolve(first, "llm")
    restarted = servicer(tmp_path, services=(), dht=dht)
    assert restarted.version > first.version
    assignment = restarted.ads.snapshot.resources[resources.ENDPOINT]["remote:llm"]
    assert [e.endpoint.hostname for e in assignment.endpoints[0].lb_endpoints] == ["a"]
    await resolve(restarted, "llm")
    assert dht.calls == 1  # still cached: no lookup after the restart


def test_an_unreadable_cache_file_is_ignored(tmp_path):
    router = servicer(tmp_path, services=())
    (tmp_path / "run" / "router-cache.json").write_text("{not json")
    assert not servicer(tmp_path, services=()).cache.entries
    assert router.version >= 1


async def test_first_requests_that_arrive_together_share_one_lookup(tmp_path):
    dht = FakeDht("a", delay_s=0.05)
    router = servicer(tmp_path, services=(), dht=dht)

    found = await asyncio.gather(*(resolve(router, "llm") for _ in range(5)))

    assert {f.kind for f in found} == {router_pb2.ROUTE_KIND_FORWARDED}
    assert dht.calls == 1
    assert (router.counters.cache_misses, router.counters.dht_lookups) == (1, 1)
