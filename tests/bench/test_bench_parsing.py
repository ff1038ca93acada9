"""The pure parts of the bench harness: wrk's report, percentiles, targets and the table."""

from __future__ import annotations

import pytest

from bench import report, stats
from bench.wrk import parse_wrk

WRK_REPORT = """\
Running 2s test @ http://127.0.0.1:8000/hello
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   612.30us  120.11us   3.10ms   90.00%
    Req/Sec    13.01k     1.20k   14.50k    70.00%
  Latency Distribution
     50%  590.00us
     75%  650.00us
     90%  720.00us
     99%    1.20ms
  51840 requests in 2.00s, 8.45MB read
  Non-2xx or 3xx responses: 40
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:  25920.00
Transfer/sec:      4.22MB
"""


def test_wrk_report_is_parsed() -> None:
    result = parse_wrk(WRK_REPORT)
    assert result.requests_per_s == 25920.0
    assert result.requests == 51840
    assert result.p50_ms == pytest.approx(0.59)
    assert result.p99_ms == pytest.approx(1.2)
    assert (result.non_2xx, result.socket_errors, result.failures) == (40, 3, 43)
    assert result.ok_requests_per_s == pytest.approx(25920.0 * (51840 - 40) / 51840)


def test_text_that_is_not_a_wrk_report_is_refused() -> None:
    with pytest.raises(ValueError, match="not a wrk report"):
        parse_wrk("wrk: connection refused")


def test_percentile_is_an_observed_value() -> None:
    values = [float(v) for v in range(1, 101)]
    assert stats.percentile(values, 50) == 50.0
    assert stats.percentile(values, 99) == 99.0
    assert stats.percentile([3.0], 99) == 3.0


def test_row_ratio_and_target() -> None:
    share = report.Row("requests/s", 600.0, 1000.0, "direct", report.Target(">=", 0.6, of="ratio"))
    assert share.ratio == pytest.approx(0.6)
    assert share.met is True
    added = report.Row("added p50 (ms)", 0.7, target=report.Target("<=", 0.5, unit="ms"))
    assert added.ratio is None
    assert added.met is False
    assert str(added.target) == "ours ≤ 0.5 ms"


def test_markdown_table_names_every_column() -> None:
    head = {"date": "2026-01-01T00:00:00+00:00", "machine": {"nproc": 2, "cpu_model": "cpu"},
            "git_commit": "abc1234", "mode": "quick", "runs": 2, "node_starts": 1, "elapsed_s": 1.0}
    rows = [report.Row("p50 (ms)", 1.5, 0.5, "direct", report.Target("<=", 1, unit="ms"))]
    table = report.markdown(head, {"local_route": report.ScenarioResult(rows, {})})
    assert "| local_route | p50 (ms) | 1.50 | 0.500 (direct) | 3.00 | ours ≤ 1 ms | **no** |" in table
