"""Scenario 5, failover and recovery, on a mesh of its own: A and C both host `bench` (each
node runs bench/backend.py itself, as its supervised program svc-bench), B hosts nothing and
forwards; a Python client keeps CONNECTIONS requests in flight on B throughout.

Each round, under that load:
1. kill -9 the backend of the provider serving B's traffic (supervisorctl pid svc-bench):
   failed client requests, and the time from the kill to the end of the last failed one;
2. once that backend answers again, kill -9 the other provider's: the first is healthy
   again, so here too another provider exists;
3. kill -9 B's router, then 4. B's dht: failed requests, and the time until B's /health
   says healthy again with a new process in place.
The service is marked idempotent (its GET /hello is): a request already sent to a backend
that dies may then be retried on the other provider, as the design allows only for those.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable

from bench import procs, stats
from bench.context import Context, mesh_started
from bench.load import TimedLoad
from bench.mesh import Mesh
from bench.report import Row, ScenarioResult, Target
from bench.targets import READY_DEADLINE_S, SERVICE, Node, http_get_json, supervised_backend

NAME = "failover"
CONNECTIONS = 4
PATH = f"/service/{SERVICE}/hello"
POLL_S = 0.05
RECOVERY_DEADLINE_S = 30
TAIL_S = 0.5            # load kept on past the recovery, to see that it holds
KNOWS_BOTH_DEADLINE_S = 10
PHASES = ("backend", "other_backend", "router", "dht")


def remote_providers(node: Node) -> set[str]:
    view = http_get_json(f"{node.url}/mesh/services", timeout_s=10)
    return {p["worker_id"] for s in view["services"] if s["name"] == SERVICE
            for p in s["providers"] if not p.get("local")}


def first_time(check: Callable[[], bool], deadline: float) -> float | None:
    """Poll check() until it holds (returns that monotonic time) or the deadline passes."""
    while time.monotonic() < deadline:
        try:
            if check():
                return time.monotonic()
        except (OSError, ValueError, KeyError, RuntimeError):
            pass
        time.sleep(POLL_S)
    return None


def kill_under_load(ctx: Context, mesh: Mesh, choose: Callable[[TimedLoad, float], tuple[Node, str]],
                    recovered: Callable[[Node, str, int], bool]) -> dict:
    """Load B; after the settle time kill -9 the program choose() names; poll until recovered();
    keep the load on for failover_after_s after the kill and TAIL_S past the recovery."""
    settings = ctx.settings
    with TimedLoad(mesh.forwarder.url, PATH, CONNECTIONS) as load:
        started = time.monotonic()
        time.sleep(settings.failover_settle_s)
        node, program = choose(load, started)
        pid = node.program_pid(program)
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        recovered_at = first_time(lambda: recovered(node, program, pid), killed_at + RECOVERY_DEADLINE_S)
        end = max(killed_at + settings.failover_after_s, (recovered_at or time.monotonic()) + TAIL_S)
        time.sleep(max(0.0, end - time.monotonic()))
        stopped = time.monotonic()
    samples = load.between(started, stopped)
    failed = [s for s in samples if not s.ok and s.ended >= killed_at]
    return {
        "killed": f"{node.env['MESHWORKER_WORKER_ID']}:{program}", "pid": pid,
        "requests_after_kill": sum(1 for s in samples if s.ended >= killed_at),
        "failed": len(failed), "failed_before_kill": sum(1 for s in samples if not s.ok and s.ended < killed_at),
        "failure_statuses": dict(Counter(str(s.status) for s in failed)),
        "until_none_fail_s": max(s.ended for s in failed) - killed_at if failed else 0.0,
        "recovered_s": None if recovered_at is None else recovered_at - killed_at,
        "served_by_after_kill": dict(Counter(s.worker for s in samples if s.ok and s.sent >= killed_at)),
    }


def busiest_provider(mesh: Mesh) -> Callable[[TimedLoad, float], tuple[Node, str]]:
    def choose(load: TimedLoad, started: float) -> tuple[Node, str]:
        worker = load.busiest_worker(started)
        name = next((n for n in mesh.providers if mesh.worker_id(n) == worker), "a")
        return mesh.providers[name], f"svc-{SERVICE}"
    return choose


def other_provider(mesh: Mesh, killed: str) -> Callable[[TimedLoad, float], tuple[Node, str]]:
    def choose(load: TimedLoad, started: float) -> tuple[Node, str]:
        name = next(n for n in mesh.providers if f"{mesh.worker_id(n)}:svc-{SERVICE}" != killed)
        return mesh.providers[name], f"svc-{SERVICE}"
    return choose


def backend_answers(node: Node) -> bool:
    """GET /health straight on the provider's backend socket, past its node."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        sock.connect(node.services[0].url.removeprefix("unix:"))
        sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        return sock.recv(64).startswith(b"HTTP/1.1 200")


def backend_restarted(node: Node, program: str, old_pid: int) -> bool:
    return backend_answers(node) and node.program_pid(program) != old_pid


def restarted_and_healthy(node: Node, program: str, old_pid: int) -> bool:
    health = node.health()
    healthy = health["status"] == "healthy" and all(v == "healthy" for v in health["backends"].values())
    return healthy and node.program_pid(program) != old_pid


def saved_dht_peers(node: Node) -> list:
    return json.loads((node.state_dir / "dht.json").read_text())["peers"]


def one_round(ctx: Context, mesh: Mesh, index: int) -> dict:
    forwarder = mesh.forwarder
    # B drops a provider from its cache when a forward to it fails; the router restart of the
    # previous round looked both up again.
    knows_both = first_time(lambda: remote_providers(forwarder) >= {mesh.worker_id(n) for n in mesh.providers},
                            time.monotonic() + KNOWS_BOTH_DEADLINE_S) is not None
    result = {"forwarder_knew_both_providers": knows_both,
              "backend": kill_under_load(ctx, mesh, busiest_provider(mesh), backend_restarted)}
    result["other_backend"] = kill_under_load(ctx, mesh, other_provider(mesh, result["backend"]["killed"]),
                                              backend_restarted)
    result["router"] = kill_under_load(ctx, mesh, lambda *_: (forwarder, "router"), restarted_and_healthy)
    # With DHT port 0 a restarted dht binds a new port, and B (the seed, with no seeds of its
    # own) can rejoin only through the peers its dht saves every 10 s: wait for that save.
    procs.wait_until(lambda: saved_dht_peers(forwarder), READY_DEADLINE_S, "B's saved DHT peers")
    result["dht"] = kill_under_load(ctx, mesh, lambda *_: (forwarder, "dht"), restarted_and_healthy)
    ctx.progress(f"{NAME} round {index + 1}/{ctx.settings.failover_runs}: "
                 + "; ".join(phase_line(phase, result[phase]) for phase in PHASES))
    return result


def phase_line(phase: str, outcome: dict) -> str:
    recovered = outcome["recovered_s"]
    return (f"{phase} killed: {outcome['failed']}/{outcome['requests_after_kill']} failed, none after "
            f"{outcome['until_none_fail_s']:.2f} s, back after "
            + ("(not within the deadline)" if recovered is None else f"{recovered:.2f} s"))


def run(ctx: Context) -> ScenarioResult:
    ctx.progress("starting a three-node mesh: A and C run the bench backend themselves, B forwards")
    with Mesh({"a": lambda d: [supervised_backend(d)], "c": lambda d: [supervised_backend(d)]}) as mesh:
        ctx.progress(mesh_started(mesh))
        rounds = [one_round(ctx, mesh, i) for i in range(ctx.settings.failover_runs)]
    return ScenarioResult(rows=summarize(rounds), raw={"connections": CONNECTIONS, "path": PATH, "rounds": rounds})


def summarize(rounds: list[dict]) -> list[Row]:
    def total(phase: str, key: str) -> int:
        return sum(r[phase][key] for r in rounds)

    def med(phase: str, key: str) -> float | None:
        values = [r[phase][key] for r in rounds if r[phase][key] is not None]
        return stats.median(values) if values else None

    what = {"backend": "a provider's backend", "other_backend": "then the other provider's backend",
            "router": "B's router", "dht": "B's dht"}
    rows = []
    for phase in PHASES:
        backend = phase.endswith("backend")
        rows += [
            # Baseline: the requests made after the kill, so the ratio is the share that failed.
            Row(f"{what[phase]} killed -9: failed requests, all runs", total(phase, "failed"),
                total(phase, "requests_after_kill"), "requests after the kill",
                Target("<=", 0) if backend else None),
            Row(f"{what[phase]} killed -9: time until no request fails (s)", med(phase, "until_none_fail_s")),
            Row(f"{what[phase]} killed -9: time until it answers again (s)" if backend else
                f"{what[phase]} killed -9: time until B is healthy again (s)", med(phase, "recovered_s")),
        ]
    return rows
