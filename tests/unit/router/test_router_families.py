"""The router's families for deploy/'s dashboard and alerts: routing counters, the TLS
certificate's expiry, and GPUs as NVML reports them (none without a GPU or driver)."""

from __future__ import annotations

import asyncio
import time

import pytest
from announcer_double import CountingAnnouncer
from prometheus_client import CollectorRegistry

from services.common import capabilities
from services.common.config import load
from services.router import families
from services.router.servicer import RouterServicer

GIB = 2**30
GPUS = [{"name": "NVIDIA H200", "memory_total_bytes": 140 * GIB, "memory_free_bytes": 100 * GIB,
         "utilization_percent": 37},
        {"name": "NVIDIA A2", "memory_total_bytes": 16 * GIB, "memory_free_bytes": 16 * GIB,
         "utilization_percent": None}]


class NoNvml:
    """pynvml on a machine without the NVIDIA driver: nvmlInit fails."""

    class NVMLError(Exception):
        pass

    def nvmlInit(self):
        raise self.NVMLError("NVML Shared Library Not Found")


@pytest.fixture
async def router(tmp_path):
    cfg = load({"MESHWORKER_STATE_DIR": str(tmp_path), "MESHWORKER_MESH_SECRET": "x" * 32})
    registry = CollectorRegistry()
    # The dht stub is only called when a route is resolved; constructing needs none.
    return RouterServicer(cfg, registry, object()), registry


async def one_gpu_reading(servicer: RouterServicer) -> None:
    """Run gpus_forever until its first reading (in a thread) replaced the one before."""
    before = servicer.families.gpus
    task = asyncio.create_task(servicer.families.gpus_forever())
    try:
        async with asyncio.timeout(5):
            while servicer.families.gpus is before:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()


async def test_routing_counters_and_the_tls_certificates_expiry(router):
    servicer, registry = router
    servicer.counters.cache_misses, servicer.counters.misses_found = 3, 2

    assert registry.get_sample_value("meshworker_router_cache_misses_total") == 3
    assert registry.get_sample_value("meshworker_router_cache_misses_found_total") == 2
    expiry = registry.get_sample_value("meshworker_router_tls_cert_expiry_timestamp_seconds")
    # a certificate's times are whole seconds: its not_after may be up to 1 s past now + 24 h
    assert expiry == servicer.tls.not_after and 23 * 3600 < expiry - time.time() <= 24 * 3600 + 1


async def test_no_gpu_reading_yet_is_zero_gpus_and_no_per_gpu_series(router):
    _, registry = router
    names = {s.name for f in registry.collect() for s in f.samples}

    assert registry.get_sample_value("meshworker_router_gpus") == 0
    assert not {n for n in names if n.startswith("meshworker_router_gpu_")}


async def test_without_the_nvidia_driver_there_are_zero_gpus(router, monkeypatch):
    servicer, registry = router
    monkeypatch.setattr(families, "pynvml", NoNvml())
    servicer.families.gpus = [GPUS[0]]  # a reading the next one replaces

    await one_gpu_reading(servicer)

    assert registry.get_sample_value("meshworker_router_gpus") == 0
    assert registry.get_sample_value("meshworker_router_gpu_memory_total_bytes", {"gpu": "0"}) is None


async def test_each_gpu_memory_and_use_as_nvml_reports_them(router, monkeypatch):
    servicer, registry = router
    monkeypatch.setattr(capabilities, "read_gpus", lambda nvml: GPUS)

    await one_gpu_reading(servicer)

    assert registry.get_sample_value("meshworker_router_gpus") == 2
    assert registry.get_sample_value("meshworker_router_gpu_memory_used_bytes", {"gpu": "0"}) == 40 * GIB
    assert registry.get_sample_value("meshworker_router_gpu_memory_total_bytes", {"gpu": "1"}) == 16 * GIB
    assert registry.get_sample_value("meshworker_router_gpu_utilization_ratio", {"gpu": "0"}) == 0.37
    # A GPU that cannot report its use has no sample, rather than a false 0.
    assert registry.get_sample_value("meshworker_router_gpu_utilization_ratio", {"gpu": "1"}) is None


async def test_records_say_the_first_gpu_and_are_stored_again_when_the_gpus_change(router, monkeypatch):
    servicer, _ = router
    servicer.announcer = announcer = CountingAnnouncer()
    monkeypatch.setattr(capabilities, "read_gpus", lambda nvml: list(GPUS))  # a new reading each time

    await one_gpu_reading(servicer)  # none before: the first reading found two
    await one_gpu_reading(servicer)  # the same GPUs: their records wait for the next republish

    assert announcer.republished == 1
    assert families.hardware(servicer.families.gpus) == {"gpu_model": "NVIDIA H200", "gpu_free_bytes": 100 * GIB}
    assert families.hardware([]) == {}
