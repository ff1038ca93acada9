"""Scenario 3, large bodies: a 10 MiB POST to the backend's /upload, directly, through the
gateway (`/service/bench/upload`) and through a forwarded route (node B forwards to node A,
which serves it from the same backend), timed, while the gateways' RSS is sampled every 10 ms.

A gateway that streams holds a chunk at a time; one that buffers grows by the whole body.
Growth is measured against each gateway's RSS before its first large upload: once a
buffering gateway has freed a big body, the allocator may keep those pages resident, so a
baseline taken later would hide every later copy.

The bytes are carried by Envoy, so the processes watched are each node's `gateway` program
(Envoy itself): the single node's, and on the forwarded route B's and A's. B's route to A is
warmed up first with a GET: its first request for `bench` is answered by a redirect once the
router has resolved it (discovery's subject, not this one's), which a client still sending
10 MiB sees as a reset connection.
"""

from __future__ import annotations

import json
import time

from bench import procs, stats
from bench.context import Context
from bench.httpclient import KeepAliveClient
from bench.report import Row, ScenarioResult, Target
from bench.scenarios.forwarded_route import warm_up

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


def one_run(ctx: Context, gateways: dict[str, int], idle_kib: dict[str, int], index: int) -> dict:
    """One upload on each route; each gateway's growth is its peak on its own route."""
    size = ctx.settings.upload_mib * MIB
    mesh = ctx.mesh()
    result = {"direct_s": upload_seconds(ctx.backend().url, "/upload", size)}
    routes = {"gateway": (ctx.node().url, ("gateway",)),
              "forwarded": (mesh.forwarder.url, ("forwarding", "serving"))}
    for route, (base_url, watched) in routes.items():
        with procs.PeakRss({name: gateways[name] for name in watched}, SAMPLE_EVERY_S) as rss:
            result[f"{route}_s"] = upload_seconds(base_url, "/service/bench/upload", size)
        result[f"{route}_time_ratio"] = result[f"{route}_s"] / result["direct_s"]
        for name in watched:
            result[f"{name}_growth_mib"] = (rss.peak_kib[name] - idle_kib[name]) / 1024
    ctx.progress(f"{NAME} run {index + 1}/{ctx.settings.runs}: direct {result['direct_s'] * 1e3:.0f} ms, "
                 f"gateway {result['gateway_s'] * 1e3:.0f} ms, forwarded {result['forwarded_s'] * 1e3:.0f} ms; RSS "
                 + ", ".join(f"{name} +{result[f'{name}_growth_mib']:.2f}" for name in gateways) + " MiB")
    return result


def run(ctx: Context) -> ScenarioResult:
    mesh = ctx.mesh()
    warm_up(ctx)
    gateways = {"gateway": ctx.node().pids()["gateway"], "forwarding": mesh.forwarder.pids()["gateway"],
                "serving": mesh.providers["a"].pids()["gateway"]}
    idle_kib = {name: procs.rss_kib(pid) for name, pid in gateways.items()}
    runs = [one_run(ctx, gateways, idle_kib, i) for i in range(ctx.settings.runs)]
    mib = ctx.settings.upload_mib
    growth = Target("<", GROWTH_TARGET_MIB, unit="MiB")
    rows = [
        Row(f"{mib} MiB upload time (ms)", 1e3 * stats.median_of(runs, "gateway_s"),
            1e3 * stats.median_of(runs, "direct_s"), "direct", ratio=stats.median_of(runs, "gateway_time_ratio")),
        Row(f"{mib} MiB upload time, forwarded (ms)", 1e3 * stats.median_of(runs, "forwarded_s"),
            1e3 * stats.median_of(runs, "direct_s"), "direct", ratio=stats.median_of(runs, "forwarded_time_ratio")),
        # The worst run, not the median: one buffered body is enough to fail.
        Row("gateway (Envoy) peak RSS growth during upload (MiB)", max(r["gateway_growth_mib"] for r in runs),
            target=growth),
        Row("forwarding node's Envoy (B) peak RSS growth, forwarded upload (MiB)",
            max(r["forwarding_growth_mib"] for r in runs), target=growth),
        Row("serving node's Envoy (A) peak RSS growth, forwarded upload (MiB)",
            max(r["serving_growth_mib"] for r in runs), target=growth),
    ]
    raw = {"body_bytes": mib * MIB, "idle_kib": idle_kib, "sample_every_s": SAMPLE_EVERY_S, "runs": runs}
    return ScenarioResult(rows, raw)
