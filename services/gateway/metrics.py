"""The node's one /metrics: the gateway's own families plus every component's Collect."""

from __future__ import annotations

import asyncio

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from services.common.grpcclient import HEALTH_DEADLINE_S
from services.common.rpc import metrics_pb2, metrics_pb2_grpc

UNKNOWN_SERVICE = "_unknown"  # one label value for every name nobody hosts: labels stay bounded
# Local routes answer in about a millisecond; model calls take seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("meshworker_gateway_requests", "Requests to /service by outcome",
                                ["service", "route", "code"], registry=self.registry)
        self.latency = Histogram("meshworker_gateway_request_duration_seconds",
                                 "Time from request to response headers for /service",
                                 ["service", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.component_up = Gauge("meshworker_component_up", "1 when the component's gRPC health "
                                  "is SERVING", ["component"], registry=self.registry)

    def observe(self, service: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(service, route, f"{status // 100}xx").inc()
        self.latency.labels(service, route).observe(seconds)


async def collect_component(channel: grpc.aio.Channel) -> str:
    try:
        reply = await metrics_pb2_grpc.MetricsStub(channel).Collect(
            metrics_pb2.CollectRequest(), timeout=HEALTH_DEADLINE_S)
    except grpc.aio.AioRpcError:
        return ""
    return reply.exposition


async def exposition(own: GatewayMetrics, channels: dict[str, grpc.aio.Channel],
                     health: dict[str, str]) -> str:
    for component, status in health.items():
        own.component_up.labels(component).set(1.0 if status == "SERVING" else 0.0)
    parts = await asyncio.gather(*(collect_component(c) for c in channels.values()))
    return generate_latest(own.registry).decode() + "".join(parts)
