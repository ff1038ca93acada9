"""What every gateway handler shares: config, links to the components, sessions, identity."""

from __future__ import annotations

import asyncio
import time
from importlib.metadata import version

import grpc

from services.common import grpcclient, httpclient
from services.common.config import COMPONENTS, Config
from services.common.identity import NodeIdentity, mesh_trust
from services.common.rpc import dht_pb2, dht_pb2_grpc, nebula_pb2, nebula_pb2_grpc, router_pb2
from services.gateway import metrics, proxy
from services.gateway.control import RouterLink
from services.gateway.errors import no_such_service, unavailable
from services.gateway.forwarding import NonceCache


class Gateway:
    def __init__(self, cfg: Config, started_at: float):
        self.cfg = cfg
        self.started_at = started_at
        self.version = version("meshworker")
        self.identity = NodeIdentity.load_or_create(cfg.state_dir)
        self.trust = mesh_trust(cfg)
        self.nonces = NonceCache()
        self.channels = {c: grpcclient.channel(cfg, c) for c in COMPONENTS}
        self.router = RouterLink(self.channels["router"])
        self.dht = dht_pb2_grpc.DhtStub(self.channels["dht"])
        self.upstreams = httpclient.Pools(proxy.CONNECT_TIMEOUT_S)
        self.metrics = metrics.GatewayMetrics()
        self.last_routing = router_pb2.RoutingStats()

    async def component_health(self) -> dict[str, str]:
        states = await asyncio.gather(*(grpcclient.health_status(c) for c in self.channels.values()))
        return {**dict(zip(self.channels, states, strict=True)), "gateway": "SERVING"}

    def local_backends(self) -> dict[str, bool]:
        """This node's services and whether each passes its health checks."""
        local = {s.name for s in self.cfg.services}
        return {name: r.kind == router_pb2.ROUTE_KIND_LOCAL and r.healthy
                for name, r in self.router.routes.items() if name in local}

    def healthy_services(self) -> list[str]:
        return sorted(name for name, healthy in self.local_backends().items() if healthy)

    async def overlay(self) -> nebula_pb2.StatusResponse:
        try:
            return await nebula_pb2_grpc.NebulaAgentStub(self.channels["nebula-agent"]).Status(
                nebula_pb2.StatusRequest(), timeout=grpcclient.HEALTH_DEADLINE_S)
        except grpc.aio.AioRpcError:
            return nebula_pb2.StatusResponse(reason="nebula-agent is not answering")

    async def dht_stats(self) -> dht_pb2.DhtStatsResponse | None:
        try:
            return await self.dht.Stats(dht_pb2.DhtStatsRequest(), timeout=grpcclient.HEALTH_DEADLINE_S)
        except grpc.aio.AioRpcError:
            return None

    async def local_services(self) -> list[dict]:
        """Each local backend as the router sees it: health, model, load time, memory."""
        try:
            reply = await self.router.stub.ListLocalServices(router_pb2.ListLocalServicesRequest(),
                                                             timeout=grpcclient.HEALTH_DEADLINE_S)
        except grpc.aio.AioRpcError:
            return []
        return [{"name": s.name, "healthy": s.healthy, "model": s.model or None,
                 "load_seconds": s.load_seconds or None, "rss_bytes": s.rss_bytes or None,
                 "last_error": s.last_error or None} for s in reply.services]

    async def routing_stats(self) -> router_pb2.RoutingStats:
        """The router's counters once our pending outcomes reached it; else the last known."""
        if await self.router.flush():
            try:
                self.last_routing = await self.router.stub.Stats(
                    router_pb2.RouterStatsRequest(), timeout=grpcclient.HEALTH_DEADLINE_S)
            except grpc.aio.AioRpcError:
                pass
        return self.last_routing

    async def route(self, service: str) -> tuple[router_pb2.Route, bool]:
        """The route for a service and whether it came from the pushed table (no gRPC call).

        A forwarded route whose providers' records have all expired is asked of the router
        again: it looks them up afresh, and its newer table may not have reached us yet."""
        route = self.router.routes.get(service)
        if route is not None and route.kind == router_pb2.ROUTE_KIND_FORWARDED and not live_endpoints(route):
            route = None
        from_table = route is not None
        if route is None:
            try:
                route = await self.router.stub.Resolve(router_pb2.ResolveRequest(service=service),
                                                       timeout=grpcclient.DEADLINE_S)
            except grpc.aio.AioRpcError:
                raise unavailable("router_unavailable", "the router is not answering and "
                                  f"{service!r} is not in the last route table") from None
        if route.kind == router_pb2.ROUTE_KIND_NONE:
            raise no_such_service(service)
        if not route.healthy:
            raise unavailable("backend_unhealthy", f"{service} backend is failing its health checks")
        return route, from_table

    async def close(self) -> None:
        self.upstreams.close()
        await asyncio.gather(*(c.close() for c in self.channels.values()))


def live_endpoints(route: router_pb2.Route) -> list[router_pb2.Endpoint]:
    """The providers of a forwarded route whose records have not expired."""
    now = time.time()
    return [e for e in route.endpoints if e.expires_at > now]
