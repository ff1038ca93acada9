"""The node's one /metrics: the api's own families, every component's Collect, and Envoy's.

Each part is fetched on its own deadline; a part that does not answer is left out and
the rest still shows.
"""

from __future__ import annotations

import asyncio

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from services.common.grpcclient import HEALTH_DEADLINE_S
from services.common.rpc import metrics_pb2, metrics_pb2_grpc

# The envelope waits on a backend: embeddings answer in milliseconds, model calls in seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("meshworker_api_envelope_requests", "Envelope requests "
                                "(POST /service/{type}) the api served, by outcome",
                                ["service", "code"], registry=self.registry)
        self.latency = Histogram("meshworker_api_envelope_duration_seconds",
                                 "Time from an envelope request to its answer",
                                 ["service"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.component_up = Gauge("meshworker_component_up", "1 when the component is SERVING "
                                  "(gRPC health; Envoy: admin /ready)", ["component"], registry=self.registry)

    def observe(self, service: str, status: int, seconds: float) -> None:
        self.requests.labels(service, f"{status // 100}xx").inc()
        self.latency.labels(service).observe(seconds)


async def collect_component(channel: grpc.aio.Channel) -> str:
    try:
        reply = await metrics_pb2_grpc.MetricsStub(channel).Collect(
            metrics_pb2.CollectRequest(), timeout=HEALTH_DEADLINE_S)
    except grpc.aio.AioRpcError:
        return ""
    return reply.exposition


async def exposition(own: ApiMetrics, channels: dict[str, grpc.aio.Channel],
                     health: dict[str, str], envoy: str) -> str:
    """One page: ours, then each component's, then Envoy's (`envoy_*` families)."""
    for component, status in health.items():
        own.component_up.labels(component).set(1.0 if status == "SERVING" else 0.0)
    parts = await asyncio.gather(*(collect_component(c) for c in channels.values()))
    return generate_latest(own.registry).decode() + "".join(parts) + envoy
