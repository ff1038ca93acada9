"""The router process: local services and their health, remote providers, routes, counters."""

from __future__ import annotations

import asyncio
import logging
import random
import time

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge

from services.common import grpcclient
from services.common.config import Config
from services.common.grpcserver import ComponentServer
from services.common.rpc import dht_pb2, dht_pb2_grpc, router_pb2, router_pb2_grpc
from services.router import routes
from services.router.announcer import Announcer
from services.router.checker import BackendInfo, check_forever
from services.router.health import HealthDamper
from services.router.mesh_view import mesh_services
from services.router.providers import Latencies, Provider, ProviderCache
from services.router.stats import RoutingCounters

log = logging.getLogger(__name__)
REFRESH_TICK_S = 1.0


class RouterServicer(router_pb2_grpc.RouterServicer):
    def __init__(self, cfg: Config, registry: CollectorRegistry, dht: dht_pb2_grpc.DhtStub,
                 announcer: Announcer | None = None):
        self.cfg = cfg
        self.dht = dht
        self.announcer = announcer
        self.health = {s.name: HealthDamper(cfg.health_fail_threshold, cfg.health_ok_threshold)
                       for s in cfg.services}
        self.backends = {s.name: BackendInfo() for s in cfg.services}
        self.counters = RoutingCounters()
        self.cache = ProviderCache()
        self.latencies = Latencies()
        self.rng = random.Random()
        self.version = 1
        self._changed = asyncio.Event()
        self._first_choice: dict[str, str] = {}  # service -> first endpoint in the pushed table
        self.outcomes = Counter("meshworker_router_outcomes", "Request outcomes reported by the gateway",
                                ["route", "result"], registry=registry)
        self.refreshes = Counter("meshworker_router_cache_refreshes", "DHT lookups that refreshed a cached "
                                 "route before its records expired", registry=registry)
        Gauge("meshworker_router_cache_size", "Services with cached remote providers",
              registry=registry).set_function(lambda: len(self.cache))
        healthy = Gauge("meshworker_router_service_healthy",
                        "1 when a local service passes its health checks", ["service"], registry=registry)
        memory = Gauge("meshworker_router_backend_resident_memory_bytes",
                       "Resident memory of a local backend, as it reports it", ["service"], registry=registry)
        load = Gauge("meshworker_router_backend_load_seconds", "Seconds a local backend took to load its "
                     "model", ["service"], registry=registry)
        for name, damper in self.health.items():
            healthy.labels(name).set_function(lambda d=damper: float(d.healthy))
            memory.labels(name).set_function(lambda b=self.backends[name]: b.rss_bytes)
            load.labels(name).set_function(lambda b=self.backends[name]: b.load_seconds)

    def route(self, service: str, now: float) -> router_pb2.Route:
        svc = self.cfg.service(service)
        local = (svc, self.health[service].healthy) if svc else None
        return routes.choose(service, local, self.cache.get(service, now), self.cfg.worker_id,
                             self.latencies, self.rng, now)

    def table(self) -> router_pb2.RouteTable:
        now = time.time()
        names = dict.fromkeys([*(s.name for s in self.cfg.services), *self.cache.entries])
        table = router_pb2.RouteTable(version=self.version, routes=[self.route(n, now) for n in names])
        self._first_choice = {r.service: r.worker_id for r in table.routes}
        return table

    def preference_changed(self, services: set[str]) -> bool:
        """Whether new latencies put another provider first for one of these services."""
        now = time.time()
        return any(self.route(s, now).worker_id != self._first_choice.get(s) for s in services
                   if s in self.cache.entries)

    def publish(self) -> None:
        """Wake every WatchRoutes stream: each waits on the event that was current when it sent."""
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def lookup(self, service: str) -> list[Provider]:
        reply = await self.dht.FindProviders(dht_pb2.FindProvidersRequest(service=service),
                                             timeout=grpcclient.DEADLINE_S)
        return [Provider(r.worker_id, r.url, r.issued_at, r.expires_at, r.idempotent, r.gpu_model, r.model)
                for r in reply.providers if r.worker_id != self.cfg.worker_id]

    async def Resolve(self, request, context):
        now = time.time()
        svc = self.cfg.service(request.service)
        if svc is not None and self.health[svc.name].healthy:
            return self.route(request.service, now)
        if self.cache.get(request.service, now) is not None:
            self.counters.cache_hits += 1
            return self.route(request.service, now)
        self.counters.cache_misses += 1
        self.counters.dht_lookups += 1
        try:
            providers = await self.lookup(request.service)
        except grpc.aio.AioRpcError as err:
            if svc is not None:
                return self.route(request.service, now)
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the DHT is not answering: {err.code().name}")
        self.cache.put(request.service, providers, now)
        self.publish()
        return self.route(request.service, now)

    async def WatchRoutes(self, request, context):
        while True:
            changed = self._changed
            yield self.table()
            await changed.wait()

    async def ReportOutcome(self, request, context):
        dropped = False
        observed: set[str] = set()
        for outcome in request.outcomes:
            self.counters.record(outcome)
            self.outcomes.labels(router_pb2.RouteKind.Name(outcome.kind).removeprefix("ROUTE_KIND_").lower(),
                                 "success" if outcome.success else "failure").inc()
            if outcome.success and outcome.worker_id:
                self.latencies.observe(outcome.worker_id, outcome.latency_seconds)
                observed.add(outcome.service)
            failed = [*outcome.failed_workers]
            if outcome.kind == router_pb2.ROUTE_KIND_FORWARDED and not outcome.success:
                failed.append(outcome.worker_id)
            for worker in failed:
                self.latencies.penalize(worker, time.time())
            if failed:
                dropped |= self.cache.invalidate(outcome.service)
        if dropped or self.preference_changed(observed):
            self.publish()
        return router_pb2.ReportOutcomeResponse()

    async def ListLocalServices(self, request, context):
        return router_pb2.ListLocalServicesResponse(services=[
            router_pb2.LocalService(name=s.name, upstream=s.upstream, health_path=s.health_path,
                                    healthy=self.health[s.name].healthy,
                                    last_error=self.health[s.name].last_error,
                                    model=self.backends[s.name].model,
                                    load_seconds=self.backends[s.name].load_seconds,
                                    rss_bytes=self.backends[s.name].rss_bytes)
            for s in self.cfg.services])

    async def Stats(self, request, context):
        return self.counters.as_proto(cache_size=len(self.cache))

    async def MeshServices(self, request, context):
        return await mesh_services(self)

    async def Drain(self, request, context):
        try:
            withdrawn = await self.announcer.drain()
        except ConnectionError as err:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(err))
        log.info("drained: withdrew %s", withdrawn)
        return router_pb2.DrainResponse(withdrawn=withdrawn)

    async def refresh_forever(self) -> None:
        """Keep cached routes ahead of their records' expiry, off the request path, and drop
        a provider from the pushed table the moment its record expires (not up to a tick
        later, while the gateway would still forward to it). Lookups run beside the loop: one
        that waits on a dead peer must not hold back the drop of that peer's expired record."""
        refreshing: dict[str, asyncio.Task] = {}
        try:
            while True:
                await asyncio.sleep(min(REFRESH_TICK_S, max(0.0, self.cache.next_expiry() - time.time())))
                now = time.time()
                if self.cache.prune(now):
                    self.publish()
                for service in self.cache.due_for_refresh(now):
                    if service not in refreshing:
                        refreshing[service] = asyncio.create_task(self.refresh(service))
                        refreshing[service].add_done_callback(lambda _, s=service: refreshing.pop(s))
        finally:
            for task in list(refreshing.values()):
                task.cancel()

    async def refresh(self, service: str) -> None:
        try:
            providers = await self.lookup(service)
        except grpc.aio.AioRpcError:
            return
        self.cache.put(service, providers, time.time())
        self.refreshes.inc()
        self.publish()


async def serve(cfg: Config) -> None:
    registry = CollectorRegistry()
    dht = grpcclient.channel(cfg, "dht")
    announcer = Announcer(dht, cfg.announce_ttl_s, {s.name: s.idempotent for s in cfg.services},
                          model_of=lambda service: servicer.backends[service].model)
    servicer = RouterServicer(cfg, registry, dht_pb2_grpc.DhtStub(dht), announcer)
    server = ComponentServer(cfg, "router", registry)
    server.add(router_pb2_grpc.add_RouterServicer_to_server, servicer,
               router_pb2.DESCRIPTOR.services_by_name["Router"].full_name)

    def on_health_change(service: str, healthy: bool) -> None:
        announcer.set_health(service, healthy)
        servicer.publish()

    await server.start()
    async with asyncio.TaskGroup() as tasks:
        background = [tasks.create_task(announcer.run()), tasks.create_task(servicer.refresh_forever())] + [
            tasks.create_task(check_forever(svc, servicer.health[svc.name], servicer.backends[svc.name],
                                            cfg.health_interval_s, on_health_change))
            for svc in cfg.services]
        await server.set_serving(True)
        await server.run_until_stopped()
        for task in background:
            task.cancel()
    await dht.close()
