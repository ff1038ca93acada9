"""The router process: local services and their health, routes, routing statistics."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry, Counter, Gauge

from services.common import grpcclient
from services.common.config import Config
from services.common.grpcserver import ComponentServer
from services.common.rpc import router_pb2, router_pb2_grpc
from services.router import routes
from services.router.announcer import Announcer
from services.router.checker import check_forever
from services.router.health import HealthDamper
from services.router.stats import RoutingCounters

log = logging.getLogger(__name__)


class RouterServicer(router_pb2_grpc.RouterServicer):
    def __init__(self, cfg: Config, registry: CollectorRegistry):
        self.cfg = cfg
        self.health = {s.name: HealthDamper(cfg.health_fail_threshold, cfg.health_ok_threshold)
                       for s in cfg.services}
        self.counters = RoutingCounters()
        self.version = 1
        self._changed = asyncio.Event()
        self.outcomes = Counter("meshworker_router_outcomes", "Request outcomes reported by the gateway",
                                ["route", "result"], registry=registry)
        healthy = Gauge("meshworker_router_service_healthy",
                        "1 when a local service passes its health checks", ["service"], registry=registry)
        for name, damper in self.health.items():
            healthy.labels(name).set_function(lambda d=damper: float(d.healthy))

    def table(self) -> router_pb2.RouteTable:
        return routes.route_table(self.version, self.cfg.worker_id, self.cfg.services, self.health)

    def publish(self) -> None:
        """Wake every WatchRoutes stream: each waits on the event that was current when it sent."""
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def Resolve(self, request, context):
        svc = self.cfg.service(request.service)
        if svc is None:
            return router_pb2.Route(service=request.service, kind=router_pb2.ROUTE_KIND_NONE)
        return routes.local_route(self.cfg.worker_id, svc, self.health[svc.name].healthy)

    async def WatchRoutes(self, request, context):
        while True:
            changed = self._changed
            yield self.table()
            await changed.wait()

    async def ReportOutcome(self, request, context):
        for outcome in request.outcomes:
            self.counters.record(outcome)
            self.outcomes.labels(router_pb2.RouteKind.Name(outcome.kind).removeprefix("ROUTE_KIND_").lower(),
                                 "success" if outcome.success else "failure").inc()
        return router_pb2.ReportOutcomeResponse()

    async def ListLocalServices(self, request, context):
        return router_pb2.ListLocalServicesResponse(services=[
            router_pb2.LocalService(name=s.name, upstream=s.upstream, health_path=s.health_path,
                                    healthy=self.health[s.name].healthy,
                                    last_error=self.health[s.name].last_error)
            for s in self.cfg.services])

    async def Stats(self, request, context):
        return self.counters.as_proto(cache_size=0)


async def serve(cfg: Config) -> None:
    registry = CollectorRegistry()
    servicer = RouterServicer(cfg, registry)
    server = ComponentServer(cfg, "router", registry)
    server.add(router_pb2_grpc.add_RouterServicer_to_server, servicer,
               router_pb2.DESCRIPTOR.services_by_name["Router"].full_name)
    dht = grpcclient.channel(cfg, "dht")
    announcer = Announcer(dht, cfg.announce_ttl_s)

    def on_health_change(service: str, healthy: bool) -> None:
        announcer.set_health(service, healthy)
        servicer.publish()

    await server.start()
    async with asyncio.TaskGroup() as tasks:
        background = [tasks.create_task(announcer.run())] + [
            tasks.create_task(check_forever(svc, servicer.health[svc.name], cfg.health_interval_s,
                                            on_health_change)) for svc in cfg.services]
        await server.set_serving(True)
        await server.run_until_stopped()
        for task in background:
            task.cancel()
    await dht.close()
