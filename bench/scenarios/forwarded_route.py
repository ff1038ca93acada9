"""Scenario 2, forwarded route: node B hosts nothing and forwards `/service/bench/hello` to
node A, which serves it from the bench backend; both on loopback, in one mesh. B's Envoy
forwards to A's Envoy peer listener over mTLS (certificates derived from the mesh secret),
as it would between hosts.

Each run measures, back to back in a rotating order: the backend directly, A's local route
and B's forwarded route (client -> B -> A -> backend), one connection (p50/p99) and 16
connections (wrk); and the same two shapes with nothing of ours, to the same backend: one
bare Envoy, and two chained with mutual TLS between them (bench.proxies.EnvoyChain). A
route's added latency is its p50 minus the direct p50 of the same run; the target compares
what forwarding adds with what the local route adds, and the bare chain's ratio shows what
the proxy itself costs.

B's router counters are read before and after the runs (after a warm-up that cached the
route): every measured request must have been routed from the cache, with no DHT lookup.
"""

from __future__ import annotations

from bench import stats
from bench.context import Context
from bench.httpclient import KeepAliveClient
from bench.report import Row, ScenarioResult, Target
from bench.scenarios.local_route import CONNECTIONS, measure_route
from bench.targets import SERVICE
from services.common.rpc import dht_pb2

NAME = "forwarded_route"
ROUTES = ("direct", "local", "forwarded", "envoy", "envoy_chain")
ADDED_RATIO_TARGET = 2.5  # issue #9: forwarding (two Envoys, mTLS between them) ≤ 2.5x the local route
PATH = f"/service/{SERVICE}/hello"


def route_endpoints(ctx: Context) -> dict[str, tuple[str, str]]:
    """A serves `bench` from the bench's backend, which the bare Envoys front too."""
    mesh = ctx.mesh()
    return {"direct": (ctx.backend().url, "/hello"), "local": (mesh.providers["a"].url, PATH),
            "forwarded": (mesh.forwarder.url, PATH), "envoy": (ctx.proxy("envoy").url, "/hello"),
            "envoy_chain": (ctx.proxy("envoy_chain").url, "/hello")}


def one_run(ctx: Context, endpoints: dict[str, tuple[str, str]], index: int) -> dict:
    order = ROUTES[index % len(ROUTES):] + ROUTES[:index % len(ROUTES)]
    run = {route: measure_route(ctx, *endpoints[route]) for route in order}
    direct = run["direct"]
    for route in (run[name] for name in ROUTES[1:]):
        route["added_p50_ms"] = route["p50_ms"] - direct["p50_ms"]
        route["added_p99_ms"] = route["p99_ms"] - direct["p99_ms"]
        route["rps_share"] = route["rps"] / direct["rps"]
    for two, one in (("forwarded", "local"), ("envoy_chain", "envoy")):
        # A one-hop route adding nothing measurable (≤ 0) would make the ratio meaningless.
        one_added = run[one]["added_p50_ms"]
        run[two]["added_ratio"] = run[two]["added_p50_ms"] / one_added if one_added > 0 else None
        run[two]["rps_vs_one_hop"] = run[two]["rps"] / run[one]["rps"]
    ctx.progress(f"{NAME} run {index + 1}/{ctx.settings.runs}: " + "; ".join(
        f"{r} p50 {run[r]['p50_ms']:.3f} ms p99 {run[r]['p99_ms']:.3f} ms {run[r]['rps']:.0f} req/s"
        for r in ROUTES))
    return run


def warm_up(ctx: Context) -> None:
    """The first forwarded request resolves the route (one DHT lookup); later ones are cached.
    Its answer must say it was forwarded and served by A, or the figures measure something else."""
    mesh = ctx.mesh()
    base, path = mesh.forwarder.url, PATH
    with KeepAliveClient(base) as client:
        status, body = client.request("GET", path)
        headers = client.last_headers
    route, worker = headers.get(b"x-mesh-route", b"").decode(), headers.get(b"x-mesh-worker", b"").decode()
    expected = mesh.worker_id("a")
    if status != 200 or route != "forwarded" or worker != expected:
        raise RuntimeError(f"GET {base}{path} on the forwarding node: status {status}, X-Mesh-Route {route!r}, "
                           f"X-Mesh-Worker {worker!r} (expected forwarded, {expected}): {body[:200]!r}")


def lookup_counts(ctx: Context) -> dict[str, int]:
    forwarder = ctx.mesh().forwarder
    routing = forwarder.routing()
    served = forwarder.dht("Stats", dht_pb2.DhtStatsRequest()).lookups
    return {"router_dht_lookups": routing["dht_lookups"], "cache_misses": routing["cache_misses"],
            "forwarded_requests": routing["forwarded_requests"], "cache_hits": routing["cache_hits"],
            "dht_find_providers_served": served}


def run(ctx: Context) -> ScenarioResult:
    endpoints = route_endpoints(ctx)
    warm_up(ctx)
    before = lookup_counts(ctx)
    runs = [one_run(ctx, endpoints, i) for i in range(ctx.settings.runs)]
    after = lookup_counts(ctx)
    delta = {key: after[key] - before[key] for key in before}
    ctx.progress(f"{NAME}: {delta['forwarded_requests']} forwarded requests after the warm-up cost "
                 f"{delta['router_dht_lookups']} DHT lookups")
    urls = {route: base + path for route, (base, path) in endpoints.items()}
    raw = {"urls": urls, "connections": CONNECTIONS, "runs": runs, "counters_before": before,
           "counters_after": after, "counters_delta": delta}
    return ScenarioResult(rows=summarize(runs, delta), raw=raw)


def summarize(runs: list[dict], delta: dict[str, int]) -> list[Row]:
    def med(route: str, key: str) -> float | None:
        values = [r[route][key] for r in runs if r[route].get(key) is not None]
        return stats.median(values) if values else None

    failures = {route: sum(r[route]["failures"] for r in runs) for route in ("local", "forwarded")}
    return [
        Row("p50 latency, 1 connection (ms)", med("forwarded", "p50_ms"), med("local", "p50_ms"), "local route"),
        Row("p99 latency, 1 connection (ms)", med("forwarded", "p99_ms"), med("local", "p99_ms"), "local route"),
        Row("added p50 over direct, 1 connection (ms)", med("forwarded", "added_p50_ms"),
            med("local", "added_p50_ms"), "local route", Target("<=", ADDED_RATIO_TARGET, of="ratio"),
            ratio=med("forwarded", "added_ratio")),
        Row("added p99 over direct, 1 connection (ms)", med("forwarded", "added_p99_ms"),
            med("local", "added_p99_ms"), "local route"),
        Row("bare Envoy chain (mTLS): added p50 over direct, 1 connection (ms)", med("envoy_chain", "added_p50_ms"),
            med("envoy", "added_p50_ms"), "one bare Envoy", ratio=med("envoy_chain", "added_ratio")),
        Row(f"requests/s, {CONNECTIONS} connections", med("forwarded", "rps"), med("local", "rps"), "local route",
            ratio=med("forwarded", "rps_vs_one_hop")),
        Row(f"bare Envoy chain (mTLS): requests/s, {CONNECTIONS} connections", med("envoy_chain", "rps"),
            med("envoy", "rps"), "one bare Envoy", ratio=med("envoy_chain", "rps_vs_one_hop")),
        Row(f"requests/s, {CONNECTIONS} connections", med("forwarded", "rps"), med("direct", "rps"), "direct",
            ratio=med("forwarded", "rps_share")),
        Row("failed requests under load, all runs", failures["forwarded"], failures["local"], "local route",
            Target("<=", 0)),
        # Baseline: how many requests B forwarded meanwhile, so the ratio is lookups per request.
        Row("DHT lookups by B's router during cached forwarded requests", delta["router_dht_lookups"],
            delta["forwarded_requests"], "forwarded requests", Target("<=", 0)),
        Row("FindProviders served by B's dht meanwhile (background refresh only)",
            delta["dht_find_providers_served"], delta["forwarded_requests"], "forwarded requests"),
    ]
