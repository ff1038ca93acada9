"""Scenario 6, footprint: the RSS of every process of a node, idle and under load, and the
time from `meshworker up` to a healthy /health that lists the service.

Processes are named by supervisord's program (nebula-agent, dht, router, api, gateway: Envoy
itself). The target judges the node's idle total without models: every program under
supervisord, Envoy included (supervisord's own RSS is shown apart, and in the total with it).

Each run starts a fresh node (the one other scenarios share has already served load), so
"idle" means just started and not yet called.

Beside it, the floor of this design, measured in the same run: what a node of four Python
gRPC programs and an Envoy takes before any of our code does anything. Each Python program
is at least the interpreter, grpcio and a health service; Envoy is at least a bare one
(same binary, one worker, static config).
"""

from __future__ import annotations

import subprocess
import sys
import time

from bench import procs, proxies, stats
from bench.context import Context
from bench.report import Row, ScenarioResult, Target
from bench.targets import Node
from bench.wrk import run_wrk

NAME = "footprint"
KIB_PER_MIB = 1024
SAMPLE_EVERY_S = 0.050
LOAD_CONNECTIONS = 16
COMPONENTS = ("supervisord", "nebula-agent", "dht", "router", "api", "gateway")
PROGRESS_EXIT_S = 10
IDLE_TARGET_MIB = 250  # issue #9: a node without models, every program under supervisord
PYTHON_PROGRAMS = tuple(c for c in COMPONENTS if c not in ("supervisord", "gateway"))  # Envoy is the gateway
READY_S = 30
SETTLE_S = 1.0  # as the node's programs, measured a while after they started
MINIMAL_PROGRAM = """
import asyncio, sys
import grpc
from grpc_health.v1 import health, health_pb2_grpc

async def main():
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port("unix:" + sys.argv[1])
    await server.start()
    print("serving", flush=True)
    await server.wait_for_termination()

asyncio.run(main())
"""


def idle_rss_mib(node: Node) -> dict[str, float]:
    programs = node.programs()
    by_name: dict[str, float] = {}
    for process in procs.process_tree(node.proc.pid):
        # Sum same-named processes (a program may fork helpers): RSS is per name here.
        name = node.program_name(process, programs)
        by_name[name] = by_name.get(name, 0) + procs.rss_kib(process.pid) / KIB_PER_MIB
    by_name["total"] = sum(by_name.values())
    by_name["programs"] = by_name["total"] - by_name.get("supervisord", 0)
    by_name["programs_pss"] = sum(procs.pss_kib(p.pid) for p in procs.process_tree(node.proc.pid)
                                  if p.pid != node.proc.pid) / KIB_PER_MIB
    return by_name


def floor_rss_mib(ctx: Context) -> dict[str, float]:
    """Idle RSS of one minimal Python gRPC program and of a bare Envoy, and the floor they
    make for a node: one such program per Python program of ours, and one Envoy."""
    workdir = ctx.scratch()
    program = procs.spawn([sys.executable, "-c", MINIMAL_PROGRAM, str(workdir / "grpc.sock")], workdir / "grpc.log",
                          stdout=subprocess.PIPE, text=True)
    try:
        procs.read_first_line(program, READY_S)
        time.sleep(SETTLE_S)
        python = procs.rss_kib(program.pid) / KIB_PER_MIB
    finally:
        procs.stop(program)
    with proxies.Envoy(workdir, ctx.backend().port) as bare:
        time.sleep(SETTLE_S)
        envoy = procs.rss_kib(bare.proc.pid) / KIB_PER_MIB
    return {"python": python, "envoy": envoy, "node": len(PYTHON_PROGRAMS) * python + envoy}


def loaded_rss_mib(ctx: Context, node: Node) -> dict[str, float]:
    """Peak RSS per process while wrk drives the gateway route with 16 connections."""
    pids = node.pids()
    with procs.PeakRss(pids, SAMPLE_EVERY_S) as rss:
        load = run_wrk(f"{node.url}/service/bench/hello", LOAD_CONNECTIONS, ctx.settings.wrk_seconds)
    peaks = {name: kib / KIB_PER_MIB for name, kib in rss.peak_kib.items()}
    # Per-process peaks may fall at different instants: their sum bounds the total from above.
    peaks["total"] = sum(peaks.values())
    peaks["requests_per_s"] = load.requests_per_s
    return peaks


def one_run(ctx: Context, index: int, with_load: bool) -> dict:
    with Node(ctx.backend().url) as node:
        # `progress` says the node is healthy, then exits: an idle node runs without it.
        procs.wait_until(lambda: "RUNNING" not in node.supervisorctl("status", "progress"), PROGRESS_EXIT_S,
                         "the progress program to exit")
        result = {"up_to_healthy_s": node.healthy_after_s, "idle_mib": idle_rss_mib(node)}
        if with_load:
            result["loaded_mib"] = loaded_rss_mib(ctx, node)
    ctx.progress(f"{NAME} run {index + 1}/{ctx.settings.footprint_runs}: healthy after "
                 f"{result['up_to_healthy_s']:.2f} s, idle RSS {result['idle_mib']['total']:.1f} MiB")
    return result


def run(ctx: Context) -> ScenarioResult:
    count = ctx.settings.footprint_runs
    runs = [one_run(ctx, i, with_load=i == count - 1) for i in range(count)]
    floors = [floor_rss_mib(ctx) for _ in range(count)]
    floor = {name: stats.median([f[name] for f in floors]) for name in floors[0]}
    names = [n for n in COMPONENTS if n in runs[0]["idle_mib"]]
    names += sorted(set(runs[0]["idle_mib"]) - set(names) - {"total", "programs", "programs_pss"})
    rows = [Row(f"idle RSS, {name} (MiB)", stats.median([r["idle_mib"].get(name, 0) for r in runs]))
            for name in names]
    rows += [Row("idle RSS, a minimal Python gRPC program (MiB)", floor["python"]),
             Row("idle RSS, a bare Envoy (MiB)", floor["envoy"]),
             Row("idle RSS, every program under supervisord, Envoy included (MiB)",
                 stats.median([r["idle_mib"]["programs"] for r in runs]), floor["node"],
                 f"this design's floor: {len(PYTHON_PROGRAMS)} minimal Python gRPC programs and a bare Envoy",
                 target=Target("<=", IDLE_TARGET_MIB, unit="MiB")),
             Row("idle PSS, every program under supervisord (shared pages split) (MiB)",
                 stats.median([r["idle_mib"]["programs_pss"] for r in runs])),
             Row("idle RSS, total with supervisord (MiB)", stats.median([r["idle_mib"]["total"] for r in runs]))]
    loaded = runs[-1]["loaded_mib"]
    rows += [Row(f"RSS under {LOAD_CONNECTIONS}-connection load, {name} (MiB)", loaded[name])
             for name in ("gateway", "total")]
    rows.append(Row("time from `meshworker up` to healthy (s)", stats.median_of(runs, "up_to_healthy_s")))
    return ScenarioResult(rows, {"runs": runs, "floor_mib": floors})
