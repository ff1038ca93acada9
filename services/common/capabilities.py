"""The node's hardware description: what the api serves under "capabilities" in GET /stats.

`collect()` is the I/O shell: it reads the hostname, CPU cores, RAM, GPUs (via NVML) and the
TCP connect time to one peer, then hands them to `summarize()`, which is pure and builds the
document. A machine with no GPU, no driver or no NVML library is normal, not an error:
`read_gpus()` returns [] there.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

import pynvml

log = logging.getLogger(__name__)

# Below this round trip a peer is on the same LAN or close to it, so the node is worth
# preferring for interactive calls; WAN hops between regions are rarely under 20 ms.
LOW_LATENCY_MS = 20.0
# Boards such as a Raspberry Pi or a small ARM box have at most this many cores...
EDGE_MAX_CPU_CORES = 2
# ...and less than this much RAM; anything bigger can host ordinary CPU services.
EDGE_MAX_RAM_BYTES = 4 * 2**30
# One connect attempt is enough to tell near from far; a slow peer must not stall start-up.
LATENCY_TIMEOUT_S = 1.0
MEMINFO_PATH = "/proc/meminfo"


def summarize(
    hostname: str,
    cpu_cores: int,
    ram_bytes: int,
    gpus: list[dict],
    latency_ms: float | None,
    has_edge: bool = False,
) -> dict:
    """Build the capabilities document: the seed's keys first, then the exact numbers."""
    first = gpus[0] if gpus else None
    if first is not None:
        worker_type = "gpu"
    elif cpu_cores <= EDGE_MAX_CPU_CORES and ram_bytes < EDGE_MAX_RAM_BYTES:
        worker_type = "edge"
    else:
        worker_type = "cpu"
    return {
        "hostname": hostname,
        "cpu_cores": cpu_cores,
        "has_gpu": bool(gpus),
        "gpu_type": first["name"] if first else None,
        # The seed document spoke in MiB strings; keep that form for existing readers.
        "gpu_memory": f"{first['memory_total_bytes'] // 2**20} MiB" if first else None,
        "worker_type": worker_type,
        "low_latency": latency_ms is not None and latency_ms < LOW_LATENCY_MS,
        "latency_ms": round(latency_ms, 2) if latency_ms is not None else None,
        "has_edge": has_edge,
        "ram": f"{ram_bytes // 2**30}GB",
        "ram_bytes": ram_bytes,
        "gpus": gpus,
    }


def read_gpus(nvml: Any) -> list[dict]:
    """Describe each GPU NVML sees; [] when there is no GPU, driver or library."""
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        log.debug("no GPUs: NVML unavailable: %s", exc)
        return []
    try:
        count = nvml.nvmlDeviceGetCount()
        return [_read_gpu(nvml, nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
    except nvml.NVMLError as exc:
        log.debug("no GPUs: NVML query failed: %s", exc)
        return []
    finally:
        nvml.nvmlShutdown()


def _read_gpu(nvml: Any, handle: Any) -> dict:
    """One GPU's entry; a device that cannot report utilization still counts."""
    name = nvml.nvmlDeviceGetName(handle)
    # Older nvidia-ml-py releases return bytes, newer ones str.
    if isinstance(name, bytes):
        name = name.decode("utf-8", errors="replace")
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    try:
        utilization: int | None = int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except nvml.NVMLError as exc:
        log.debug("GPU %s: no utilization: %s", name, exc)
        utilization = None
    return {
        "name": name,
        "memory_total_bytes": int(memory.total),
        "memory_free_bytes": int(memory.free),
        "utilization_percent": utilization,
    }


def read_ram_bytes(path: str = MEMINFO_PATH) -> int:
    """Total RAM from /proc/meminfo's MemTotal (given in kB); 0 when it cannot be read."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError) as exc:
        log.debug("cannot read RAM from %s: %s", path, exc)
        return 0
    log.debug("no MemTotal in %s", path)
    return 0


def measure_latency_ms(peer: str | None, timeout: float = LATENCY_TIMEOUT_S) -> float | None:
    """TCP connect time to "host:port" in ms; None without a peer or when the connect fails."""
    if peer is None:
        return None
    host, sep, port = peer.rpartition(":")
    if not sep or not port.isdigit():
        log.debug("latency peer %r is not host:port", peer)
        return None
    host = host.strip("[]")  # allow "[::1]:443"
    start = time.perf_counter()
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            elapsed = time.perf_counter() - start
    except OSError as exc:
        log.debug("latency peer %s unreachable: %s", peer, exc)
        return None
    return elapsed * 1000.0


def collect(latency_peer: str | None, nvml: Any = None) -> dict:
    """Read this machine's hardware and summarize it; `nvml` is replaceable for tests."""
    return summarize(
        hostname=socket.gethostname(),
        # cpu_count() is None only where the count is unknowable; one core is the safe floor.
        cpu_cores=os.cpu_count() or 1,
        ram_bytes=read_ram_bytes(),
        gpus=read_gpus(nvml if nvml is not None else pynvml),
        latency_ms=measure_latency_ms(latency_peer),
    )
