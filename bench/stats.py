"""Order statistics. Medians everywhere: these machines are shared and noisy, and one slow
run should move a figure no more than one fast run does."""

from __future__ import annotations

import math
import statistics


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile: a value that was actually observed."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


def median_of(runs: list[dict], key: str) -> float:
    return median([run[key] for run in runs])
