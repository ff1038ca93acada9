"""Scenario 3, large bodies: a 10 MiB POST to the backend's /upload, directly and through the
gateway (`/service/bench/upload`), timed, while the gateway's RSS is sampled every 10 ms.

A gateway that streams holds a chunk at a time; one that buffers grows by the whole body.
Growth is measured against the gateway's RSS before its first large upload: once a
buffering gateway has freed a big body, the allocator may keep those pages resident, so a
baseline taken later would hide every later copy.
"""

from __future__ import annotations

import json
import time

from bench import procs, stats
from bench.context import Context
from bench.httpclient import KeepAliveClient
from bench.report import Row, ScenarioResult, Target

NAME = "large_body"
MIB = 1024 * 1024
SAMPLE_EVERY_S = 0.010
CHUNK = b"\x5a" * (64 * 1024)
GROWTH_TARGET_MIB = 5  # half the body: a buffering gateway needs at least the whole 10 MiB


def upload_seconds(base_url: str, path: str, size: int) -> float:
    with KeepAliveClient(base_url, timeout_s=120) as client:
        start = time.perf_counter()
        status, body = client.upload(path, size, CHUNK)
        elapsed = time.perf_counter() - start
    if status != 200 or json.loads(body).get("received_bytes") != size:
        raise RuntimeError(f"upload to {base_url}{path}: status {status}, reply {body[:200]!r}")
    return elapsed


def one_run(ctx: Context, gateway_pid: int, idle_kib: int, index: int) -> dict:
    size = ctx.settings.upload_mib * MIB
    direct_s = upload_seconds(ctx.backend().url, "/upload", size)
    with procs.PeakRss({"gateway": gateway_pid}, SAMPLE_EVERY_S) as rss:
        gateway_s = upload_seconds(ctx.node().url, "/service/bench/upload", size)
    peak_kib = rss.peak_kib["gateway"]
    growth_mib = (peak_kib - idle_kib) / 1024
    ctx.progress(f"{NAME} run {index + 1}/{ctx.settings.runs}: direct {direct_s * 1e3:.0f} ms, "
                 f"gateway {gateway_s * 1e3:.0f} ms, gateway RSS +{growth_mib:.2f} MiB")
    return {"direct_s": direct_s, "gateway_s": gateway_s, "time_ratio": gateway_s / direct_s,
            "gateway_peak_kib": peak_kib, "gateway_growth_mib": growth_mib}


def run(ctx: Context) -> ScenarioResult:
    gateway_pid = ctx.node().pids()["gateway"]
    idle_kib = procs.rss_kib(gateway_pid)
    runs = [one_run(ctx, gateway_pid, idle_kib, i) for i in range(ctx.settings.runs)]
    mib = ctx.settings.upload_mib
    rows = [
        Row(f"{mib} MiB upload time (ms)", 1e3 * stats.median_of(runs, "gateway_s"),
            1e3 * stats.median_of(runs, "direct_s"), "direct", ratio=stats.median_of(runs, "time_ratio")),
        # The worst run, not the median: one buffered body is enough to fail.
        Row("gateway peak RSS growth during upload (MiB)", max(r["gateway_growth_mib"] for r in runs),
            target=Target("<", GROWTH_TARGET_MIB, unit="MiB")),
    ]
    raw = {"body_bytes": mib * MIB, "gateway_idle_kib": idle_kib, "sample_every_s": SAMPLE_EVERY_S,
           "runs": runs}
    return ScenarioResult(rows, raw)
