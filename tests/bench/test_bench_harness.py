"""The bench harness runs end to end: starts its processes, measures, stops them, writes
its results. Smoke mode makes every load tiny; no figure is checked, only the shape."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = {"local_route", "large_body", "footprint"}
HARNESS_DEADLINE_S = 90


def run_bench(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output, _ = proc.communicate(timeout=HARNESS_DEADLINE_S)
    except subprocess.TimeoutExpired:
        # SIGTERM lets the harness stop what it started; SIGKILL would leave its children.
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        pytest.fail(f"python -m bench {' '.join(args)} ran past {HARNESS_DEADLINE_S} s:\n{output}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, output)


@pytest.mark.timeout(120)
def test_smoke_run_writes_every_scenario(tmp_path: Path) -> None:
    done = run_bench("--smoke", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout

    results = json.loads((tmp_path / "latest.json").read_text())
    assert set(results["scenarios"]) == SCENARIOS
    assert {"date", "machine", "git_commit", "mode"} <= set(results)
    for name, scenario in results["scenarios"].items():
        assert scenario["rows"], f"{name} reported no figures"
        for row in scenario["rows"]:
            assert {"metric", "ours", "baseline", "ratio", "target", "met"} <= set(row)
    table = (tmp_path / "latest.md").read_text()
    assert "| scenario | metric | ours | baseline | ratio | target | met? |" in table


@pytest.mark.timeout(30)
def test_unknown_scenario_is_refused(tmp_path: Path) -> None:
    done = run_bench("--only", "no_such_scenario", "--out", str(tmp_path))
    assert done.returncode == 2
    assert "unknown scenario" in done.stdout
    assert not (tmp_path / "latest.json").exists()
