"""Scenario 1, local route overhead: one small backend called directly, through three
baseline proxies (nginx, HAProxy, bare Envoy: bench.proxies) and through the meshworker
gateway (`/service/bench/hello`, whatever `meshworker up` serves on its gateway port).

One connection: p50/p99 of sequential keep-alive requests. 16 connections: wrk's
requests/s, and the CPU time wrk, the backend and each proxy spend per request meanwhile:
from those, the CPU a gateway may spend per request for the throughput target to be
reachable at all on this machine (all CPUs busy at the target rate, wrk and the backend
costing what they cost directly). Each run measures all five routes back to back, in a
rotating order, and the ratios are taken within a run before the median, so a noisy
neighbour slowing one run moves every route of that run alike. The gateway's targets
against bare Envoy hold our layer to near zero over the proxy it is built on.
"""

from __future__ import annotations

import functools
import os
import resource
from collections.abc import Callable

from bench import httpclient, procs, stats
from bench.context import Context
from bench.report import Row, ScenarioResult, Target
from bench.wrk import run_wrk

NAME = "local_route"
BASELINES = {"nginx": "nginx", "haproxy": "HAProxy", "envoy": "bare Envoy"}  # route: shown as
PROXIES = (*BASELINES, "gateway")  # routes through a proxy, whose own CPU per request is counted
ROUTES = ("direct", *PROXIES)
CONNECTIONS = 16
ADDED_P50_TARGET_MS = 0.5
THROUGHPUT_SHARE_TARGET = 0.60
# The gateway against bare Envoy, the proxy it is built on: what our own layer may add.
ADDED_P50_OVER_ENVOY_TARGET_MS = 0.03
THROUGHPUT_VS_ENVOY_TARGET = 0.90
CPU_VS_ENVOY_TARGET = 1.1
# Linux delays an ACK by 40 ms (plus scheduling): a reply written in two pieces by a server
# that leaves Nagle on waits that long for each second piece.
NAGLE_STALL_MS = (38.0, 50.0)
NPROC = len(os.sched_getaffinity(0))
Figure = Callable[[str, str], float]  # (route, key) -> a figure over the runs


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named process tree, and by the children we reaped (wrk)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wrk": children.ru_utime + children.ru_stime} | {name: procs.tree_cpu_s(pid)
                                                               for name, pid in pids.items()}


def cpu_pids(ctx: Context) -> dict[str, int]:
    """Every process measured, named as its route (the backend as itself)."""
    return ({"backend": ctx.backend().proc.pid, "gateway": ctx.node().program_pid("gateway")}
            | {name: ctx.proxy(name).proc.pid for name in BASELINES})


def route_endpoints(ctx: Context) -> dict[str, tuple[str, str]]:
    """(base URL, path) of the same backend endpoint, by route."""
    return ({"direct": (ctx.backend().url, "/hello")}
            | {name: (ctx.proxy(name).url, "/hello") for name in BASELINES}
            | {"gateway": (ctx.node().url, "/service/bench/hello")})


def measure_route(ctx: Context, base: str, path: str, cpu_of: dict[str, int] | None = None) -> dict:
    settings = ctx.settings
    latencies = httpclient.sequential_latencies_ms(
        base, path, settings.latency_requests, settings.latency_warmup, settings.latency_budget_s)
    url = base + path
    cpu_before = cpu_seconds(cpu_of or {})
    load = run_wrk(url, CONNECTIONS, settings.wrk_seconds)
    cpu_after = cpu_seconds(cpu_of or {})
    if load.failures:
        ctx.progress(f"{url}: {load.non_2xx} non-2xx replies, {load.socket_errors} socket errors under load")
    p50 = stats.percentile(latencies, 50)
    if NAGLE_STALL_MS[0] <= p50 <= NAGLE_STALL_MS[1]:
        ctx.progress(f"{url}: p50 {p50:.1f} ms on a kept-alive connection is the Nagle + delayed-ACK "
                     "stall: are its accepted sockets TCP_NODELAY?")
    return {"p50_ms": p50, "p99_ms": stats.percentile(latencies, 99), "samples": len(latencies),
            "rps": load.ok_requests_per_s, "failures": load.failures, "wrk": load.as_dict(),
            "cpu_us_per_request": {name: 1e6 * (cpu_after[name] - cpu_before[name]) / max(load.requests, 1)
                                   for name in cpu_after}}


def gateway_cpu_budget_us(direct: dict) -> float:
    """CPU a gateway may spend per request for the throughput target: the machine's CPU time
    per request at the target rate, less what wrk and the backend spend per request."""
    spent = direct["cpu_us_per_request"]
    return 1e6 * NPROC / (THROUGHPUT_SHARE_TARGET * direct["rps"]) - spent["wrk"] - spent["backend"]


def one_run(ctx: Context, endpoints: dict[str, tuple[str, str]], index: int) -> dict:
    order = ROUTES[index % len(ROUTES):] + ROUTES[:index % len(ROUTES)]
    pids = cpu_pids(ctx)
    run = compared({route: measure_route(ctx, *endpoints[route], cpu_of=pids) for route in order})
    ctx.progress(f"{NAME} run {index + 1}/{ctx.settings.runs}: " + "; ".join(
        f"{r} p50 {run[r]['p50_ms']:.3f} ms p99 {run[r]['p99_ms']:.3f} ms {run[r]['rps']:.0f} req/s"
        for r in ROUTES))
    return run


def compared(measured: dict[str, dict]) -> dict:
    """One run's figures by route, with what is derived within the run: each proxy's added
    latency, share of direct throughput and own CPU per request; the gateway's ratios to
    each baseline; and the gateway's CPU budget."""
    run = {route: dict(figures) for route, figures in measured.items()}
    direct, gateway = run["direct"], run["gateway"]
    run["gateway_cpu_budget_us"] = gateway_cpu_budget_us(direct)
    for route in PROXIES:
        figures = run[route]
        figures["added_p50_ms"] = figures["p50_ms"] - direct["p50_ms"]
        figures["added_p99_ms"] = figures["p99_ms"] - direct["p99_ms"]
        figures["rps_share"] = figures["rps"] / direct["rps"]
        figures["proxy_cpu_us"] = figures["cpu_us_per_request"][route]
    for name in BASELINES:
        gateway[f"rps_vs_{name}"] = gateway["rps"] / run[name]["rps"]
        gateway[f"cpu_vs_{name}"] = gateway["proxy_cpu_us"] / run[name]["proxy_cpu_us"]
    gateway["added_p50_over_envoy_ms"] = gateway["added_p50_ms"] - run["envoy"]["added_p50_ms"]
    return run


def run(ctx: Context) -> ScenarioResult:
    endpoints = route_endpoints(ctx)
    runs = [one_run(ctx, endpoints, i) for i in range(ctx.settings.runs)]
    urls = {route: base + path for route, (base, path) in endpoints.items()}
    return ScenarioResult(rows=summarize(runs), raw={"urls": urls, "connections": CONNECTIONS, "runs": runs})


def summarize(runs: list[dict]) -> list[Row]:
    def med(route: str, key: str) -> float:
        """The median over runs of a route's figure; a dotted key reaches into a nested one."""
        return stats.median([functools.reduce(dict.__getitem__, key.split("."), r[route]) for r in runs])

    def total(route: str, key: str) -> float:
        return sum(r[route][key] for r in runs)

    return [
        Row("p50 latency, 1 connection (ms)", med("gateway", "p50_ms"), med("direct", "p50_ms"), "direct"),
        Row("p50 latency, 1 connection (ms)", med("gateway", "p50_ms"), med("nginx", "p50_ms"), "nginx"),
        Row("p99 latency, 1 connection (ms)", med("gateway", "p99_ms"), med("direct", "p99_ms"), "direct"),
        Row("p99 latency, 1 connection (ms)", med("gateway", "p99_ms"), med("nginx", "p99_ms"), "nginx"),
        Row("added p50 over direct, 1 connection (ms)", med("gateway", "added_p50_ms"),
            med("nginx", "added_p50_ms"), "nginx", Target("<=", ADDED_P50_TARGET_MS, unit="ms")),
        Row("added p99 over direct, 1 connection (ms)", med("gateway", "added_p99_ms"),
            med("nginx", "added_p99_ms"), "nginx"),
        Row(f"requests/s, {CONNECTIONS} connections", med("gateway", "rps"), med("direct", "rps"), "direct",
            Target(">=", THROUGHPUT_SHARE_TARGET, of="ratio"), ratio=med("gateway", "rps_share")),
        Row(f"requests/s, {CONNECTIONS} connections", med("gateway", "rps"), med("nginx", "rps"), "nginx",
            ratio=med("gateway", "rps_vs_nginx")),
        Row("share of direct requests/s", med("gateway", "rps_share"), med("nginx", "rps_share"), "nginx"),
        Row("failed requests under load, all runs", total("gateway", "failures"),
            total("nginx", "failures"), "nginx", Target("<=", 0)),
        Row(f"gateway CPU per request, {CONNECTIONS} connections (µs)", med("gateway", "cpu_us_per_request.gateway"),
            med("direct", "cpu_us_per_request.backend"), "the backend's own, direct"),
        Row(f"gateway CPU per request that {THROUGHPUT_SHARE_TARGET:.0%} of direct would allow here (µs)",
            stats.median([r["gateway_cpu_budget_us"] for r in runs])),
        *[row for name in ("haproxy", "envoy") for row in versus(name, med, total)],
        *[Row(f"CPU per request in the proxy, {CONNECTIONS} connections (µs)", med("gateway", "proxy_cpu_us"),
              med(name, "proxy_cpu_us"), shown, Target("<=", CPU_VS_ENVOY_TARGET, of="ratio") if name == "envoy"
              else None, ratio=med("gateway", f"cpu_vs_{name}")) for name, shown in BASELINES.items()],
        Row("added p50 over bare Envoy's added p50, 1 connection (ms)", med("gateway", "added_p50_over_envoy_ms"),
            target=Target("<=", ADDED_P50_OVER_ENVOY_TARGET_MS, unit="ms")),
    ]


def versus(name: str, med: Figure, total: Figure) -> list[Row]:
    """The gateway against one more baseline (nginx has its own rows above, kept as they were)."""
    shown = BASELINES[name]
    rps_target = Target(">=", THROUGHPUT_VS_ENVOY_TARGET, of="ratio") if name == "envoy" else None
    return [
        Row("added p50 over direct, 1 connection (ms)", med("gateway", "added_p50_ms"),
            med(name, "added_p50_ms"), shown),
        Row("added p99 over direct, 1 connection (ms)", med("gateway", "added_p99_ms"),
            med(name, "added_p99_ms"), shown),
        Row(f"requests/s, {CONNECTIONS} connections", med("gateway", "rps"), med(name, "rps"), shown,
            rps_target, ratio=med("gateway", f"rps_vs_{name}")),
        Row("failed requests under load, all runs", total("gateway", "failures"), total(name, "failures"), shown),
    ]
