"""Scenario 8, the mesh's OpenAI API (`/v1`): where a model's requests go, and how soon a new
model is known everywhere.

A mesh of its own: providers A and C each run bench/openai_double.py twice as supervised
programs, an OpenAI-compatible server of one model that holds each request DOUBLE_DELAY_S
and reports inflight/capacity on /health as the built-in backends do: `chat` serves
double-1 one request at a time, `chat-2` serves double-2 two at a time. B hosts nothing.
Every node checks its backends' health every HEALTH_INTERVAL_S and announces with a TTL of
ANNOUNCE_TTL_S, so its announce period (the TTL's half) is ANNOUNCE_PERIOD_S.

- Busy provider, per model: sequential chat requests to B's `/v1/chat/completions`, who
  served each read from x-mesh-worker. First with both providers idle (the baseline: what
  the balancer does with equals), then while a parallel load, sent straight to A's backend
  and so unseen by any gateway, keeps A's model busy: the requests start once B's
  `/v1/models` shows A saturated, load_percent over 100 (A's router announced its load,
  B's read it). The figure is the share C served, the idle one (issue: >= 80 %). Two
  capacities: a capacity-1 provider serving one of these sequential requests itself
  reports 100 %, full but not saturated (nobody waits there), so it keeps its place;
  with room for two, C stays below that. B's view of the loads during the requests is
  kept in the raw results.
- Catalog propagation: a provider node D joins serving a model no node had, and the seconds
  from the moment D's gateway is healthy until every node's `GET /v1/models` (A, B, C and
  D's own) lists it (issue: within one announce period). Repeated with a fresh node and model
  per join; the median and the slowest are reported.

Everything started here (the mesh, the joining nodes, the load) stops when the scenario ends.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from bench import procs, stats
from bench.context import Context, mesh_started
from bench.httpclient import HttpError, KeepAliveClient
from bench.load import Connections
from bench.mesh import Mesh, ServicesFor
from bench.report import Row, ScenarioResult, Target
from bench.targets import REPO, Hosted, Node, http_get_json

NAME = "openai"
DOUBLE = REPO / "bench" / "openai_double.py"


@dataclass(frozen=True)
class Served:
    """A double on a provider: its service (and supervised program) name, and how many requests
    it serves at once."""
    service: str
    capacity: int = 1


MODELS = {"double-1": Served("chat", 1), "double-2": Served("chat-2", 2)}  # on A and C, by model id
NEW_MODEL = "double-new-{}"  # the model a joining node brings, one per join
DOUBLE_DELAY_S = 0.1
HEALTH_INTERVAL_S = 0.5
ANNOUNCE_TTL_S = 20
ANNOUNCE_PERIOD_S = ANNOUNCE_TTL_S / 2  # how often a node announces again (the router's rule)
SATURATED_PCT = 100  # services.common.models.SATURATED: a provider past this load gets no new request
LOAD_CONNECTIONS = 3  # in parallel to A's backend, more than either capacity: inflight stays >= it
LOAD_LIMIT_S = 120  # the load stops by itself after this long, whatever happens to the scenario
SATURATION_DEADLINE_S = 30  # for B to see A busy: a health check, a catalog record, B's catalog read
CATALOG_DEADLINE_S = 3 * ANNOUNCE_PERIOD_S  # a model not everywhere by then counts as this late
MODELS_POLL_S = 0.05
REQUEST_TIMEOUT_S = 30
IDLE_SHARE_TARGET_PCT = 80.0


def doubles(worker: str, models: dict[str, Served]) -> ServicesFor:
    """A provider's plan: a double per model as its supervised program, each on a free loopback
    port. It answers with `worker` as its text, which the scenario checks against x-mesh-worker."""
    def services(_state_dir: Path) -> list[Hosted]:
        ports = procs.free_tcp_ports(len(models))
        return [Hosted(d.service, f"http://127.0.0.1:{port}",
                       (sys.executable, str(DOUBLE), str(port), model, worker, str(DOUBLE_DELAY_S), str(d.capacity)))
                for port, (model, d) in zip(ports, models.items(), strict=True)]
    return services


def backend_url(node: Node, model: str) -> str:
    return next(s.url for s in node.services if s.name == MODELS[model].service)


def chat_body(model: str) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()


def listed(node: Node) -> dict[str, dict[str, int]]:
    """model id -> {worker id: load_percent}, as `node`'s GET /v1/models lists them."""
    answer = http_get_json(f"{node.url}/v1/models", timeout_s=5)
    return {m["id"]: {n["worker_id"]: n["load_percent"] for n in m.get("nodes", [])} for m in answer["data"]}


# --- where new requests go -----------------------------------------------------------------

class BusyLoad(Connections):
    """Requests in parallel straight to a backend, one after another on each connection, until
    stopped or LOAD_LIMIT_S has passed."""

    def __init__(self, url: str, model: str, connections: int):
        self.url, self.body = url, chat_body(model)
        self.sent = self.failed = 0
        self._counted = threading.Lock()
        super().__init__(connections, REQUEST_TIMEOUT_S)

    def _loop(self) -> None:
        give_up_at = time.monotonic() + LOAD_LIMIT_S
        client = None
        while not self._stop.is_set() and time.monotonic() < give_up_at:
            try:
                client = client or KeepAliveClient(self.url, timeout_s=REQUEST_TIMEOUT_S)
                status, _ = client.request("POST", "/v1/chat/completions", self.body)
                with self._counted:
                    self.sent += 1
                    self.failed += status != 200
            except (OSError, HttpError, ValueError):  # load, not a check: reconnect and go on
                with self._counted:
                    self.failed += 1
                if client is not None:
                    client.close()
                client = None
                self._stop.wait(0.05)
        if client is not None:
            client.close()


class LoadWatch:
    """B's view of every provider's load, read from its /v1/models while requests go out."""

    def __init__(self, node: Node, model: str, every_s: float = 0.25):
        self.node, self.model, self.every_s = node, model, every_s
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.samples.append((round(time.monotonic() - self._started, 2),
                                     listed(self.node).get(self.model, {})))
            except (OSError, ValueError, KeyError):
                pass


def served_by(url: str, model: str, count: int, check: bool = True) -> list[dict]:
    """`count` chat requests one after another to a gateway's /v1: who served each (x-mesh-worker,
    and the double's own answer), and how. An error status raises, or (check=False) returns []."""
    served = []
    with KeepAliveClient(url, timeout_s=REQUEST_TIMEOUT_S) as client:
        for _ in range(count):
            start = time.perf_counter()
            status, body = client.request("POST", "/v1/chat/completions", chat_body(model))
            elapsed_ms = 1e3 * (time.perf_counter() - start)
            if status != 200 and not check:
                return []
            if status != 200:
                raise RuntimeError(f"POST {url}/v1/chat/completions: status {status}: {body[:300]!r}")
            served.append({"worker": client.last_headers.get(b"x-mesh-worker", b"").decode(),
                           "route": client.last_headers.get(b"x-mesh-route", b"").decode(),
                           "answer": json.loads(body)["choices"][0]["message"]["content"],
                           "ms": round(elapsed_ms, 2)})
    return served


def share_pct(served: list[dict], worker: str) -> float:
    return 100 * sum(s["worker"] == worker for s in served) / len(served)


def measure_shares(mesh: Mesh, ctx: Context, model: str) -> dict:
    a, b = mesh.providers["a"], mesh.forwarder
    idle, busy = mesh.worker_id("c"), mesh.worker_id("a")
    count, capacity = ctx.settings.model_requests, MODELS[model].capacity
    procs.wait_until(lambda: set(listed(b).get(model, {})) == {busy, idle}, SATURATION_DEADLINE_S,
                     f"B's /v1/models to list {model} on A and C")
    # Unmeasured: B's route ready (its /v1/models may list a model an instant before Envoy holds
    # the route it pushed) and its connections to A and C open.
    procs.wait_until(lambda: served_by(b.url, model, 2, check=False), SATURATION_DEADLINE_S,
                     f"B to serve {model}", interval_s=0.1)

    with LoadWatch(b, model) as watch:
        baseline = served_by(b.url, model, count)
    result = {"model": model, "capacity": capacity, "requests": count,
              "baseline": {"served": baseline, "b_saw": watch.samples, "share_pct": share_pct(baseline, idle)}}
    ctx.progress(f"{NAME}: {model} (capacity {capacity}), both idle: {result['baseline']['share_pct']:.0f} % "
                 f"of {count} requests to C ({summary(baseline)})")

    with BusyLoad(backend_url(a, model), model, LOAD_CONNECTIONS) as load:
        started = time.monotonic()
        procs.wait_until(lambda: listed(b)[model].get(busy, 0) > SATURATED_PCT, SATURATION_DEADLINE_S,
                         f"B's /v1/models to show A's {model} busy")
        seen_after_s = time.monotonic() - started
        with LoadWatch(b, model) as watch:
            loaded = served_by(b.url, model, count)
    result["busy"] = {"served": loaded, "b_saw": watch.samples, "share_pct": share_pct(loaded, idle),
                      "b_saw_a_busy_after_s": seen_after_s, "load_requests": load.sent,
                      "load_failed": load.failed}
    result["answers_matching_worker"] = sum(s["answer"] == s["worker"] for s in baseline + loaded)
    c_full = sum(loads.get(idle, 0) > SATURATED_PCT for _, loads in watch.samples)
    ctx.progress(f"{NAME}: {model}, A busy (seen by B after {seen_after_s:.1f} s): "
                 f"{result['busy']['share_pct']:.0f} % of {count} requests to C ({summary(loaded)}); B saw C "
                 f"saturated in {c_full} of {len(watch.samples)} looks; {load.sent} load requests to A's backend")
    return result


def summary(served: list[dict]) -> str:
    return ", ".join(f"{worker} {n}" for worker, n in sorted(Counter(s["worker"] for s in served).items()))


# --- how soon a new model is known ---------------------------------------------------------

def join(mesh: Mesh, ctx: Context, index: int) -> dict:
    """Start one more provider with a new model; seconds from its gateway being healthy until
    each node lists the model."""
    name, model = f"d{index + 1}", NEW_MODEL.format(index + 1)
    with mesh.provider(name, doubles(mesh.worker_id(name), {model: Served("chat")})) as node:
        healthy_at = time.monotonic()
        nodes = {"a": mesh.providers["a"], "b": mesh.forwarder, "c": mesh.providers["c"], name: node}
        seen: dict[str, float] = {}
        while len(seen) < len(nodes) and time.monotonic() - healthy_at < CATALOG_DEADLINE_S:
            for key, other in nodes.items():
                if key not in seen:
                    try:
                        if model in listed(other):
                            seen[key] = time.monotonic() - healthy_at
                    except (OSError, ValueError, KeyError):
                        pass
            time.sleep(MODELS_POLL_S)
        missing = sorted(set(nodes) - set(seen))
        result = {"node": name, "model": model, "node_healthy_after_s": node.healthy_after_s,
                  "seen_after_s": seen, "missing": missing,
                  "everywhere_after_s": CATALOG_DEADLINE_S if missing else max(seen.values())}
    ctx.progress(f"{NAME}: {name} joined with {model}: listed everywhere after "
                 f"{result['everywhere_after_s']:.2f} s ("
                 + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(seen.items(), key=lambda kv: kv[1]))
                 + (f"; not on {', '.join(missing)} within {CATALOG_DEADLINE_S:.0f} s" if missing else "") + ")")
    return result


# --- the scenario --------------------------------------------------------------------------

def run(ctx: Context) -> ScenarioResult:
    settings = {"MESHWORKER_ANNOUNCE_TTL_S": str(ANNOUNCE_TTL_S),
                "MESHWORKER_HEALTH_INTERVAL_S": str(HEALTH_INTERVAL_S)}
    ctx.progress(f"starting a three-node mesh: A and C serve {', '.join(MODELS)} (test doubles), B forwards; "
                 f"announce TTL {ANNOUNCE_TTL_S} s")
    with Mesh({name: doubles(Mesh.worker_id(name), MODELS) for name in ("a", "c")}, env=settings) as mesh:
        ctx.progress(mesh_started(mesh))
        shares = {model: measure_shares(mesh, ctx, model) for model in MODELS}
        joins = [join(mesh, ctx, i) for i in range(ctx.settings.model_joins)]
    ctx.progress(f"{NAME} mesh stopped")
    raw = {"capacities": {model: d.capacity for model, d in MODELS.items()}, "double_delay_s": DOUBLE_DELAY_S,
           "health_interval_s": HEALTH_INTERVAL_S, "announce_ttl_s": ANNOUNCE_TTL_S,
           "announce_period_s": ANNOUNCE_PERIOD_S, "load_connections": LOAD_CONNECTIONS,
           "shares": shares, "joins": joins}
    return ScenarioResult(summarize(shares, joins), raw)


def summarize(shares: dict, joins: list[dict]) -> list[Row]:
    everywhere = [j["everywhere_after_s"] for j in joins]
    period = Target("<=", ANNOUNCE_PERIOD_S, unit="s")
    rows = []
    for model, measured in shares.items():
        each = "one request" if measured["capacity"] == 1 else f"{measured['capacity']} requests"
        rows += [
            Row(f"two providers of one model ({model}) serving {each} at a time, A kept busy by a parallel "
                f"load: share of B's new /v1 requests sent to C, the idle one (%)", measured["busy"]["share_pct"],
                target=Target(">=", IDLE_SHARE_TARGET_PCT, unit="%")),
            Row(f"same ({each} at a time), neither busy (baseline): share sent to C (%)",
                measured["baseline"]["share_pct"]),
            Row(f"same ({each} at a time), from A's load starting until B's /v1/models shows A busy (s)",
                measured["busy"]["b_saw_a_busy_after_s"]),
        ]
    return rows + [
        Row(f"a new model in every node's /v1/models, from its node's gateway healthy: median of "
            f"{len(everywhere)} joins (s)", stats.median(everywhere), target=period),
        Row(f"same, the slowest of {len(everywhere)} joins (s)", max(everywhere), target=period),
    ]
