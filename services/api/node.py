"""What every api handler shares: config, links to the components and to Envoy's admin,
backend sessions, and the api's own counters.

Each read of another process has a deadline and degrades to "unknown" (None, [] or an
UNREACHABLE status) instead of failing the request that asked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from importlib.metadata import version

import grpc

from services.api.backends import Backends
from services.api.metrics import ApiMetrics
from services.api.routing import STATS_FILTER, ClusterCounters, ClusterTotals, EnvelopeCounts
from services.common import grpcclient
from services.common.config import COMPONENTS, Config
from services.common.envoy_admin import EnvoyAdmin
from services.common.rpc import (
    dht_pb2,
    dht_pb2_grpc,
    nebula_pb2,
    nebula_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
)

# How often Envoy's cluster counters are read when nobody asks for /stats: a remote cluster
# removed with its providers takes its counts with it, so only what it served in its last
# second can be missing from /stats (routing.ClusterCounters keeps the rest).
CLUSTER_SAMPLE_S = 1.0


class ApiNode:
    def __init__(self, cfg: Config, started_at: float, channels: Mapping[str, grpc.aio.Channel] | None = None):
        """`channels` replaces the channel to a component (tests); the others are made from cfg."""
        self.cfg = cfg
        self.started_at = started_at
        self.version = version("meshworker")
        given = channels or {}
        self._own = {c: grpcclient.channel(cfg, c) for c in COMPONENTS if c not in given}
        self.channels = {c: given.get(c) or self._own[c] for c in COMPONENTS}
        self.router = router_pb2_grpc.RouterStub(self.channels["router"])
        self.dht = dht_pb2_grpc.DhtStub(self.channels["dht"])
        self.envoy = EnvoyAdmin(cfg.envoy_admin_socket)
        self.backends = Backends()
        self.metrics = ApiMetrics()
        self.envelope = EnvelopeCounts()
        # Shown while the router or Envoy does not answer: counters only grow, so the last
        # values read are closer to the truth than zeros.
        self.last_router_counters = router_pb2.RouterCounters()
        self.clusters = ClusterCounters()
        self.last_cluster_totals = ClusterTotals()
        self.sampling: asyncio.Task | None = None

    def start(self) -> None:
        self.sampling = asyncio.create_task(self.sample_clusters_forever())

    async def sample_clusters_forever(self) -> None:
        while True:
            await self.cluster_totals()
            await asyncio.sleep(CLUSTER_SAMPLE_S)

    async def component_health(self) -> dict[str, str]:
        """gRPC health of each component, ours, and Envoy's readiness as "gateway"."""
        states, envoy_live = await asyncio.gather(
            asyncio.gather(*(grpcclient.health_status(c) for c in self.channels.values())), self.envoy.ready())
        return {**dict(zip(self.channels, states, strict=True)), "api": "SERVING",
                "gateway": "SERVING" if envoy_live else "NOT_SERVING"}

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

    async def local_services(self) -> list[router_pb2.LocalService] | None:
        """This node's backends as the router checks them; None when the router is down."""
        try:
            reply = await self.router.ListLocalServices(router_pb2.ListLocalServicesRequest(),
                                                        timeout=grpcclient.HEALTH_DEADLINE_S)
        except grpc.aio.AioRpcError:
            return None
        return list(reply.services)

    async def gateway_status(self) -> router_pb2.GatewayStatus | None:
        """Whether Envoy holds the router's configuration; None when the router is down."""
        try:
            return await self.router.Gateway(router_pb2.GatewayRequest(), timeout=grpcclient.HEALTH_DEADLINE_S)
        except grpc.aio.AioRpcError:
            return None

    async def router_counters(self) -> router_pb2.RouterCounters:
        try:
            self.last_router_counters = await self.router.Stats(
                router_pb2.RouterStatsRequest(), timeout=grpcclient.HEALTH_DEADLINE_S)
        except grpc.aio.AioRpcError:
            pass
        return self.last_router_counters

    async def cluster_totals(self) -> ClusterTotals:
        stats = await self.envoy.counters(STATS_FILTER)
        if stats is not None:
            self.last_cluster_totals = self.clusters.update(stats)
        return self.last_cluster_totals

    async def close(self) -> None:
        if self.sampling is not None:
            self.sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.sampling
        await asyncio.gather(self.envoy.close(), self.backends.close(),
                             *(c.close() for c in self._own.values()))
