"""Debian's wrk as the many-connection load generator, and a parser for its report."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import asdict, dataclass

UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    requests: int
    non_2xx: int
    socket_errors: int

    @property
    def ok_requests_per_s(self) -> float:
        # Error replies are cheap and fast: counting them would flatter the throughput.
        return self.requests_per_s * (self.requests - self.non_2xx) / self.requests if self.requests else 0.0

    @property
    def failures(self) -> int:
        return self.non_2xx + self.socket_errors

    def as_dict(self) -> dict:
        return asdict(self)


def run_wrk(url: str, connections: int, duration_s: float, threads: int = 2,
            headers: tuple[str, ...] = ()) -> WrkResult:
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk not found: apt-get install wrk")
    argv = [binary, f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s", "--latency",
            *(arg for header in headers for arg in ("-H", header)), url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return parse_wrk(done.stdout)


def parse_wrk(text: str) -> WrkResult:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in", text, re.MULTILINE)
    if not rps or not total:
        raise ValueError(f"not a wrk report:\n{text}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return WrkResult(
        requests_per_s=float(rps.group(1)), requests=int(total.group(1)),
        p50_ms=_latency_ms(text, "50%"), p99_ms=_latency_ms(text, "99%"),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0)


def _latency_ms(text: str, label: str) -> float | None:
    found = re.search(rf"^\s+{re.escape(label)}\s+([\d.]+)(us|ms|s|m)\s*$", text, re.MULTILINE)
    return float(found.group(1)) * UNIT_MS[found.group(2)] if found else None
