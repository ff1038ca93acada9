"""Scenario 5, failover and recovery, on a mesh of its own: A and C both host `bench` (each
node runs bench/backend.py itself, as its supervised program svc-bench), B hosts nothing and
forwards; a Python client keeps CONNECTIONS requests in flight on B throughout.

Each round, under that load:
1. kill -9 the backend of the provider serving B's traffic (supervisorctl pid svc-bench):
   failed client requests, and the time from the kill to the end of the last failed one;
2. once that backend answers again and B's traffic reaches it again (B's Envoy may keep a
   provider ejected a while after it is back), kill -9 the other provider's: here too
   another provider is in service;
3. kill -9 B's router, 4. B's dht, 5. B's api: failed requests, and the time until B's
   /health says healthy again with a new process in place (Envoy carries the traffic alone
   meanwhile: none may fail);
6. kill -9 the Envoy (program `gateway`) of the provider serving B's traffic: B's Envoy
   must retry on the other provider, so none may fail;
7. kill -9 B's own Envoy: every connection of the client is cut, so requests fail until
   supervisord has restarted it and the router has pushed its configuration; the figure is
   the time from the kill to the first 200 again (design: < 2 s);
8. in the last round only, kill -9 a whole provider node (supervisord and every program
   under it, busiest first): none may fail.
Every phase also records the time from the kill to the first request that succeeds after it.
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
from dataclasses import dataclass

from bench import procs, stats
from bench.context import Context, mesh_started
from bench.httpclient import KeepAliveClient
from bench.load import TimedLoad
from bench.mesh import Mesh
from bench.report import Row, ScenarioResult, Target
from bench.targets import READY_DEADLINE_S, SERVICE, Node, http_get_json, supervised_backend

NAME = "failover"
CONNECTIONS = 4
PATH = f"/service/{SERVICE}/hello"
POLL_S = 0.05
TAIL_S = 0.5            # load kept on past the recovery, to see that it holds
KNOWS_BOTH_DEADLINE_S = 10
PHASES = ("backend", "other_backend", "router", "dht", "api", "provider_gateway", "gateway", "provider_node")
GATEWAY_BACK_TARGET_S = 2  # design: Envoy back, with its full configuration, within 2 s
NODE = "node"  # kill -9 the whole node, not one program


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


@dataclass(frozen=True)
class Kill:
    """What a recovery check may look at: what was killed, when, and the load meanwhile."""
    node: Node
    program: str
    pid: int
    at: float
    load: TimedLoad


def kill_under_load(ctx: Context, mesh: Mesh, choose: Callable[[TimedLoad, float], tuple[Node, str]],
                    recovered: Callable[[Kill], bool]) -> dict:
    """Load B; after the settle time kill -9 the program choose() names; poll until recovered();
    keep the load on for failover_after_s after the kill and TAIL_S past the recovery."""
    settings = ctx.settings
    with TimedLoad(mesh.forwarder.url, PATH, CONNECTIONS) as load:
        started = time.monotonic()
        time.sleep(settings.failover_settle_s)
        node, program = choose(load, started)
        pid = node.proc.pid if program == NODE else node.program_pid(program)
        killed_at = time.monotonic()
        kill_node(node) if program == NODE else os.kill(pid, signal.SIGKILL)
        kill = Kill(node, program, pid, killed_at, load)
        recovered_at = first_time(lambda: recovered(kill), killed_at + settings.failover_recovery_s)
        end = max(killed_at + settings.failover_after_s, (recovered_at or time.monotonic()) + TAIL_S)
        time.sleep(max(0.0, end - time.monotonic()))
        stopped = time.monotonic()
    samples = load.between(started, stopped)
    failed = [s for s in samples if not s.ok and s.ended >= killed_at]
    first_ok = min((s.ended for s in samples if s.ok and s.sent >= killed_at), default=None)
    # When the failures fell, by half second after the kill: a burst, or a trickle through ejections.
    failed_when = Counter(f"{int((s.ended - killed_at) * 2) / 2:.1f}" for s in failed)
    return {
        "killed": f"{node.env['MESHWORKER_WORKER_ID']}:{program}", "pid": pid,
        "requests_after_kill": sum(1 for s in samples if s.ended >= killed_at),
        "failed": len(failed), "failed_before_kill": sum(1 for s in samples if not s.ok and s.ended < killed_at),
        "failure_statuses": dict(Counter(str(s.status) for s in failed)),
        "failed_by_half_second": dict(sorted(failed_when.items(), key=lambda kv: float(kv[0]))),
        "failure_details": dict(Counter(f"{s.status} {s.detail}" for s in failed).most_common(5)),
        "until_none_fail_s": max(s.ended for s in failed) - killed_at if failed else 0.0,
        "recovered_s": None if recovered_at is None else recovered_at - killed_at,
        "first_ok_s": None if first_ok is None else first_ok - killed_at,
        "served_by_after_kill": dict(Counter(s.worker for s in samples if s.ok and s.sent >= killed_at)),
    }


def kill_node(node: Node) -> None:
    """kill -9 supervisord first (it would restart the rest), then every program under it:
    supervisord puts each in a process group of its own, so one killpg would not reach them."""
    for process in procs.process_tree(node.proc.pid):
        try:
            os.kill(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    node.proc.wait(5)


def busiest_provider(mesh: Mesh, program: str = f"svc-{SERVICE}") -> Callable[[TimedLoad, float], tuple[Node, str]]:
    def choose(load: TimedLoad, started: float) -> tuple[Node, str]:
        worker = load.busiest_worker(started)
        name = next((n for n in mesh.providers if mesh.worker_id(n) == worker), "a")
        return mesh.providers[name], program
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


def serves_again(kill: Kill) -> bool:
    """The restarted backend answers, and B's traffic reaches it again: only then is the other
    provider's backend killed, so that the second kill too leaves a provider in service."""
    if not (backend_answers(kill.node) and kill.node.program_pid(kill.program) != kill.pid):
        return False
    worker = kill.node.env["MESHWORKER_WORKER_ID"]
    return any(s.ok and s.worker == worker for s in kill.load.between(kill.at, float("inf")))


def restarted_and_healthy(kill: Kill) -> bool:
    health = kill.node.health()
    healthy = health["status"] == "healthy" and all(v == "healthy" for v in health["backends"].values())
    return healthy and kill.node.program_pid(kill.program) != kill.pid


def forwarder_answers(kill: Kill) -> bool:
    """B's Envoy is back (a new process) and serves the forwarded route again."""
    with KeepAliveClient(kill.node.url, timeout_s=1) as client:
        status, _ = client.request("GET", PATH)
    return status == 200 and kill.node.program_pid(kill.program) != kill.pid


def dropped_by_forwarder(mesh: Mesh) -> Callable[[Kill], bool]:
    """B no longer counts the killed node among the healthy providers of the service."""
    def recovered(kill: Kill) -> bool:
        view = http_get_json(f"{mesh.forwarder.url}/mesh/services", timeout_s=2)
        gone = kill.node.env["MESHWORKER_WORKER_ID"]
        return not any(p["worker_id"] == gone and p.get("healthy", True)
                       for s in view["services"] if s["name"] == SERVICE for p in s["providers"])
    return recovered


def saved_dht_peers(node: Node) -> list:
    return json.loads((node.state_dir / "dht.json").read_text())["peers"]


def one_round(ctx: Context, mesh: Mesh, index: int) -> dict:
    forwarder = mesh.forwarder
    # B drops a provider from its cache when a forward to it fails; the router restart of the
    # previous round looked both up again.
    knows_both = first_time(lambda: remote_providers(forwarder) >= {mesh.worker_id(n) for n in mesh.providers},
                            time.monotonic() + KNOWS_BOTH_DEADLINE_S) is not None
    result = {"forwarder_knew_both_providers": knows_both,
              "backend": kill_under_load(ctx, mesh, busiest_provider(mesh), serves_again)}
    result["other_backend"] = kill_under_load(ctx, mesh, other_provider(mesh, result["backend"]["killed"]),
                                              serves_again)
    result["router"] = kill_under_load(ctx, mesh, lambda *_: (forwarder, "router"), restarted_and_healthy)
    # With DHT port 0 a restarted dht binds a new port, and B (the seed, with no seeds of its
    # own) can rejoin only through the peers its dht saves every 10 s: wait for that save.
    procs.wait_until(lambda: saved_dht_peers(forwarder), READY_DEADLINE_S, "B's saved DHT peers")
    result["dht"] = kill_under_load(ctx, mesh, lambda *_: (forwarder, "dht"), restarted_and_healthy)
    result["api"] = kill_under_load(ctx, mesh, lambda *_: (forwarder, "api"), restarted_and_healthy)
    result["provider_gateway"] = kill_under_load(ctx, mesh, busiest_provider(mesh, "gateway"),
                                                 restarted_and_healthy)
    result["gateway"] = kill_under_load(ctx, mesh, lambda *_: (forwarder, "gateway"), forwarder_answers)
    if index == ctx.settings.failover_runs - 1:  # a node killed stays dead: the last round's last phase
        both_known = first_time(lambda: remote_providers(forwarder) >= {mesh.worker_id(n) for n in mesh.providers},
                                time.monotonic() + KNOWS_BOTH_DEADLINE_S) is not None
        result["forwarder_knew_both_before_node_kill"] = both_known
        result["provider_node"] = kill_under_load(ctx, mesh, busiest_provider(mesh, NODE), dropped_by_forwarder(mesh))
    ctx.progress(f"{NAME} round {index + 1}/{ctx.settings.failover_runs}: "
                 + "; ".join(phase_line(phase, result[phase]) for phase in PHASES if phase in result))
    return result


def phase_line(phase: str, outcome: dict) -> str:
    recovered = outcome["recovered_s"]
    return (f"{phase} killed: {outcome['failed']}/{outcome['requests_after_kill']} failed, none after "
            f"{outcome['until_none_fail_s']:.2f} s, back after "
            + ("(not within the deadline)" if recovered is None else f"{recovered:.2f} s")
            + ("" if outcome["first_ok_s"] is None else f", first 200 after {outcome['first_ok_s']:.2f} s"))


def run(ctx: Context) -> ScenarioResult:
    ctx.progress("starting a three-node mesh: A and C run the bench backend themselves, B forwards")
    with Mesh({"a": lambda d: [supervised_backend(d)], "c": lambda d: [supervised_backend(d)]}) as mesh:
        ctx.progress(mesh_started(mesh))
        rounds = [one_round(ctx, mesh, i) for i in range(ctx.settings.failover_runs)]
    return ScenarioResult(rows=summarize(rounds), raw={"connections": CONNECTIONS, "path": PATH, "rounds": rounds})


WHAT = {"backend": "a provider's backend", "other_backend": "then the other provider's backend",
        "router": "B's router", "dht": "B's dht", "api": "B's api",
        "provider_gateway": "the serving provider's Envoy (gateway)", "gateway": "B's own Envoy (gateway)",
        "provider_node": "a whole provider node (supervisord and all)"}
RECOVERED = {"backend": "B's traffic reaches it again", "other_backend": "B's traffic reaches it again", "router": "B is healthy again",
             "dht": "B is healthy again", "api": "B is healthy again",
             "provider_gateway": "that provider is healthy again",
             "gateway": "B's new Envoy serves the route (health check)",
             "provider_node": "B's mesh view drops it"}


def summarize(rounds: list[dict]) -> list[Row]:
    def total(phase: str, key: str) -> int:
        return sum(r[phase][key] for r in rounds if phase in r)

    def med(phase: str, key: str) -> float | None:
        values = [r[phase][key] for r in rounds if phase in r and r[phase][key] is not None]
        return stats.median(values) if values else None

    rows = []
    for phase in (p for p in PHASES if any(p in r for r in rounds)):
        own_gateway = phase == "gateway"  # the client's own connections are cut: failures expected
        rows += [
            # Baseline: the requests made after the kill, so the ratio is the share that failed.
            Row(f"{WHAT[phase]} killed -9: failed requests, all runs", total(phase, "failed"),
                total(phase, "requests_after_kill"), "requests after the kill",
                None if own_gateway else Target("<=", 0)),
            Row(f"{WHAT[phase]} killed -9: time until no request fails (s)", med(phase, "until_none_fail_s")),
            Row(f"{WHAT[phase]} killed -9: time from the kill to the first 200 (s)", med(phase, "first_ok_s"),
                target=Target("<=", GATEWAY_BACK_TARGET_S, unit="s") if own_gateway else None),
            Row(f"{WHAT[phase]} killed -9: time until {RECOVERED[phase]} (s)", med(phase, "recovered_s")),
        ]
    return rows
