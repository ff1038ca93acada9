"""What an API key costs a request: the same local route (`/service/bench/hello`) on the
same node, without a key and with one, measured back to back in each run.

A keyed request passes Envoy's jwt_authn (an Ed25519 signature checked), the key's token
bucket, and the access log that streams it to the router for usage and limits; a keyless
one from loopback (exempt) passes the same filters with nothing to check. The ratios are
taken within a run before the median, so a noisy neighbour moves both alike.
"""

from __future__ import annotations

import os
import subprocess

from bench import httpclient, stats
from bench.context import Context
from bench.report import Row, ScenarioResult, Target
from bench.targets import REPO, VENV_BIN
from bench.wrk import run_wrk
from services.common import keys

NAME = "api_keys"
CONNECTIONS = 16
PATH = "/service/bench/hello"
ADDED_P50_TARGET_MS = 0.1  # a key checked in Envoy, not a Python call
THROUGHPUT_TARGET = 0.9


def make_key(ctx: Context) -> str:
    """A key without limits, made on the bench node with its own CLI."""
    node = ctx.node()
    env = dict(os.environ, MESHWORKER_STATE_DIR=str(node.state_dir),
               MESHWORKER_CONFIG=str(node.state_dir / "meshworker.toml"))
    done = subprocess.run([str(VENV_BIN / "meshworker"), "keys", "create", "--name", "bench"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=True)
    return next(line for line in done.stdout.splitlines() if line.startswith(keys.PREFIX))


def measure(ctx: Context, headers: tuple[str, ...]) -> dict:
    url = ctx.node().url
    settings = ctx.settings
    latencies = httpclient.sequential_latencies_ms(url, PATH, settings.latency_requests, settings.latency_warmup,
                                                   settings.latency_budget_s, headers)
    load = run_wrk(url + PATH, CONNECTIONS, settings.wrk_seconds, headers=headers)
    return {"p50_ms": stats.percentile(latencies, 50), "p99_ms": stats.percentile(latencies, 99),
            "rps": load.ok_requests_per_s, "failures": load.failures}


def one_run(ctx: Context, key: str, index: int) -> dict:
    routes = {"keyless": (), "keyed": (f"X-API-Key: {key}",)}
    order = list(routes) if index % 2 == 0 else list(reversed(routes))
    run = {route: measure(ctx, routes[route]) for route in order}
    run["added_p50_ms"] = run["keyed"]["p50_ms"] - run["keyless"]["p50_ms"]
    run["rps_ratio"] = run["keyed"]["rps"] / run["keyless"]["rps"]
    ctx.progress(f"{NAME} run {index + 1}/{ctx.settings.runs}: " + "; ".join(
        f"{r} p50 {run[r]['p50_ms']:.3f} ms {run[r]['rps']:.0f} req/s" for r in routes))
    return run


def run(ctx: Context) -> ScenarioResult:
    key = make_key(ctx)
    runs = [one_run(ctx, key, i) for i in range(ctx.settings.runs)]

    def med(route: str, figure: str) -> float:
        return stats.median([r[route][figure] for r in runs])
    return ScenarioResult(rows=[
        Row("p50 latency with a key, 1 connection (ms)", med("keyed", "p50_ms"), med("keyless", "p50_ms"),
            "without"),
        Row("added p50 of a key, 1 connection (ms)", stats.median([r["added_p50_ms"] for r in runs]),
            target=Target("<=", ADDED_P50_TARGET_MS, unit="ms")),
        Row(f"requests/s with a key, {CONNECTIONS} connections", med("keyed", "rps"), med("keyless", "rps"),
            "without", Target(">=", THROUGHPUT_TARGET, of="ratio"), ratio=stats.median([r["rps_ratio"] for r in runs])),
        Row("failed requests under load, all runs", sum(r["keyed"]["failures"] for r in runs),
            sum(r["keyless"]["failures"] for r in runs), "without", Target("<=", 0)),
    ], raw={"path": PATH, "connections": CONNECTIONS, "runs": runs})
