"""The router's families that a Gauge cannot hold, for deploy/'s dashboard and alerts, and the
NVML reading every record of this node states (`hardware`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pynvml
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from services.common import capabilities

if TYPE_CHECKING:
    from services.router.servicer import RouterServicer

GPU_REFRESH_S = 5.0  # how old the GPU figures on /metrics may be


class RouterFamilies(Collector):
    """The router's families that a Gauge cannot hold, for deploy/'s dashboard and alerts: the
    routing counters `meshworker status` prints, when the TLS certificate Envoy holds expires,
    and this node's GPUs as NVML saw them at the last `read_gpus` (none until `gpus_forever`
    reads them; `meshworker_router_gpus` is 0 without a GPU, driver or library)."""

    def __init__(self, router: RouterServicer):
        self.router, self.gpus = router, []

    async def gpus_forever(self) -> None:
        """Read NVML every GPU_REFRESH_S; records say the first GPU (`hardware`), so they are
        stored again when the GPUs themselves change (the first read finds them)."""
        while True:  # off the event loop: nvmlInit takes up to seconds without persistence mode
            before, self.gpus = self.gpus, await asyncio.to_thread(capabilities.read_gpus, pynvml)
            if [g["name"] for g in self.gpus] != [g["name"] for g in before] and self.router.announcer:
                self.router.announcer.republish()
            await asyncio.sleep(GPU_REFRESH_S)

    def collect(self) -> Iterator[Metric]:
        counters = self.router.counters
        yield CounterMetricFamily("meshworker_router_cache_misses", "Requests for a service Envoy had no "
                                  "route for, each looked up in the DHT", value=counters.cache_misses)
        yield CounterMetricFamily("meshworker_router_cache_misses_found", "Cache misses whose DHT lookup "
                                  "found a provider", value=counters.misses_found)
        yield GaugeMetricFamily("meshworker_router_tls_cert_expiry_timestamp_seconds", "When the TLS "
                                "certificate Envoy holds for this node expires (0: none)",
                                value=self.router.tls.not_after if self.router.tls else 0.0)
        yield GaugeMetricFamily("meshworker_router_gpus", "GPUs NVML sees on this node", value=len(self.gpus))
        used = GaugeMetricFamily("meshworker_router_gpu_memory_used_bytes", "GPU memory in use",
                                 labels=["gpu"])
        total = GaugeMetricFamily("meshworker_router_gpu_memory_total_bytes", "GPU memory", labels=["gpu"])
        busy = GaugeMetricFamily("meshworker_router_gpu_utilization_ratio", "Share of NVML's last sample "
                                 "period in which the GPU was busy", labels=["gpu"])
        for index, gpu in enumerate(self.gpus):
            used.add_metric([str(index)], gpu["memory_total_bytes"] - gpu["memory_free_bytes"])
            total.add_metric([str(index)], gpu["memory_total_bytes"])
            if gpu["utilization_percent"] is not None:
                busy.add_metric([str(index)], gpu["utilization_percent"] / 100)
        yield from (used, total, busy)


def hardware(gpus: list[dict]) -> dict[str, str | int]:
    """What every record of this node says of its hardware: its first GPU as NVML last saw it
    (the router reads NVML for /metrics; the dht only signs what it is given)."""
    return {"gpu_model": gpus[0]["name"], "gpu_free_bytes": gpus[0]["memory_free_bytes"]} if gpus else {}


def register_gauges(router: RouterServicer, registry: CollectorRegistry) -> RouterFamilies:
    Gauge("meshworker_router_cache_size", "Services with cached remote providers",
          registry=registry).set_function(lambda: len(router.cache))
    healthy = Gauge("meshworker_router_service_healthy",
                    "1 when a local service passes its health checks", ["service"], registry=registry)
    memory = Gauge("meshworker_router_backend_resident_memory_bytes",
                   "Resident memory of a local backend, as it reports it", ["service"], registry=registry)
    load = Gauge("meshworker_router_backend_load_seconds", "Seconds a local backend took to load its "
                 "model", ["service"], registry=registry)
    for name, damper in router.health.items():
        healthy.labels(name).set_function(lambda d=damper: float(d.healthy))
        memory.labels(name).set_function(lambda b=router.backends[name]: b.rss_bytes)
        load.labels(name).set_function(lambda b=router.backends[name]: b.load_seconds)
    families = RouterFamilies(router)
    registry.register(families)
    return families
