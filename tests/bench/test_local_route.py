"""local_route's arithmetic: what one run derives from its measured routes, and the rows
(the gateway against bare Envoy included) the runs sum up to."""

from __future__ import annotations

import pytest

from bench.scenarios import local_route


def measured(p50_ms: float, rps: float, proxy_cpu_us: float, route: str) -> dict:
    cpu = {"wrk": 10.0, "backend": 30.0} | {name: 0.0 for name in local_route.PROXIES}
    if route in local_route.PROXIES:
        cpu[route] = proxy_cpu_us
    return {"p50_ms": p50_ms, "p99_ms": 2 * p50_ms, "rps": rps, "failures": 0, "cpu_us_per_request": cpu}


def one_run(gateway_p50_ms: float = 0.12, gateway_rps: float = 9000, gateway_cpu_us: float = 44) -> dict:
    figures = {"direct": (0.07, 30000, 0), "nginx": (0.10, 28000, 18), "haproxy": (0.11, 27000, 19),
               "envoy": (0.10, 10000, 40), "gateway": (gateway_p50_ms, gateway_rps, gateway_cpu_us)}
    return local_route.compared({route: measured(*f, route) for route, f in figures.items()})


def test_a_run_compares_the_gateway_with_each_baseline() -> None:
    run = one_run()
    gateway = run["gateway"]
    assert run["envoy"]["added_p50_ms"] == pytest.approx(0.03)
    assert gateway["added_p50_over_envoy_ms"] == pytest.approx(0.02)
    assert gateway["rps_vs_envoy"] == pytest.approx(0.9)
    assert gateway["rps_vs_haproxy"] == pytest.approx(9000 / 27000)
    assert gateway["cpu_vs_envoy"] == pytest.approx(1.1)
    assert gateway["cpu_vs_nginx"] == pytest.approx(44 / 18)
    assert run["haproxy"]["proxy_cpu_us"] == 19
    assert run["nginx"]["rps_share"] == pytest.approx(28000 / 30000)


def rows_by_baseline(runs: list[dict]) -> dict[tuple[str, str], local_route.Row]:
    return {(row.metric, row.baseline_name): row for row in local_route.summarize(runs)}


def test_the_gateway_at_bare_envoys_limits_meets_every_envoy_target() -> None:
    rows = rows_by_baseline([one_run(0.1199), one_run(0.1199)])
    assert rows["requests/s, 16 connections", "bare Envoy"].met is True
    assert rows["CPU per request in the proxy, 16 connections (µs)", "bare Envoy"].met is True
    assert rows["added p50 over bare Envoy's added p50, 1 connection (ms)", ""].met is True
    assert rows["added p50 over direct, 1 connection (ms)", "HAProxy"].baseline == pytest.approx(0.04)
    assert rows["CPU per request in the proxy, 16 connections (µs)", "nginx"].baseline == 18


def test_the_gateway_past_bare_envoys_limits_misses_the_envoy_targets() -> None:
    rows = rows_by_baseline([one_run(0.15, 8000, 50)])
    assert rows["requests/s, 16 connections", "bare Envoy"].met is False
    assert rows["CPU per request in the proxy, 16 connections (µs)", "bare Envoy"].met is False
    assert rows["added p50 over bare Envoy's added p50, 1 connection (ms)", ""].met is False


def test_the_existing_rows_are_kept() -> None:
    rows = rows_by_baseline([one_run()])
    assert rows["added p50 over direct, 1 connection (ms)", "nginx"].target is not None
    assert rows["requests/s, 16 connections", "direct"].target is not None
    assert rows["failed requests under load, all runs", "nginx"].met is True
