"""Results: one row per figure, written as latest.json (everything) and latest.md (the table)."""

from __future__ import annotations

import datetime
import json
import operator
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMPARE = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
SHOWN = {"<=": "≤", "<": "<", ">=": "≥", ">": ">"}
NOTES = """\
How to read it: ratio = ours / baseline. "added" is a route's latency minus calling the
backend directly. Every figure is a median over the runs; ratios and differences are taken
within a run (all routes measured back to back, order rotating) before the median, so a
noisy neighbour slows every route of that run alike. Peak RSS growth is the worst run.
forwarded_route: node B hosts nothing and forwards to node A (client -> B -> A -> backend);
its added latency is judged against A's local route's. discovery: swarm lookups run one at a
time from random nodes that do not provide the service; "found" means every provider. failover:
failed requests are those ending after the kill; failures and requests are totals over rounds.
models: "direct" calls the built-in backend on its own unix socket; "gateway share" is
(gateway - direct) / gateway of one request's time. Embeddings texts/s is the batch over the
median request; "mesh API" is the gateway's /v1, routed by the body's model. LLM tokens/s
counts the tokens after the first over the time from the first streamed text to the last
(temperature 0, the same body on every route); the LLM streams through /v1 on the serving
node and on a forwarding one (client -> B -> A's peer listener -> A's backend); their added
time to first token is theirs less direct's within a run. openai: two providers A and C of a
test double model, B forwarding; the share is of B's sequential /v1 requests that C served;
a new model's time is from its node's gateway healthy until every node's /v1/models lists it.
"""


@dataclass(frozen=True)
class Target:
    """A goal from the issue: `of` is the figure it judges ("ours" or "ratio")."""
    op: str
    value: float
    of: str = "ours"
    unit: str = ""

    def met(self, ours: float | None, ratio: float | None) -> bool | None:
        figure = ours if self.of == "ours" else ratio
        return None if figure is None else COMPARE[self.op](figure, self.value)

    def __str__(self) -> str:
        return f"{self.of} {SHOWN[self.op]} {self.value:g}{' ' + self.unit if self.unit else ''}"


@dataclass(frozen=True)
class Row:
    metric: str
    ours: float | None
    baseline: float | None = None
    baseline_name: str = ""
    target: Target | None = None
    ratio: float | None = field(default=None)

    def __post_init__(self) -> None:
        # ratio = ours / baseline, unless a scenario supplies a median of per-run ratios.
        if self.ratio is None and self.ours is not None and self.baseline:
            object.__setattr__(self, "ratio", self.ours / self.baseline)

    @property
    def met(self) -> bool | None:
        return self.target.met(self.ours, self.ratio) if self.target else None

    def as_dict(self) -> dict:
        return {"metric": self.metric, "ours": self.ours, "baseline": self.baseline,
                "baseline_name": self.baseline_name or None, "ratio": self.ratio,
                "target": str(self.target) if self.target else None, "met": self.met}


@dataclass
class ScenarioResult:
    rows: list[Row]
    raw: dict


def header(mode: str, runs: int, node_starts: int, elapsed_s: float) -> dict:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"nproc": len(os.sched_getaffinity(0)), "cpu_model": cpu_model()},
        "git_commit": git_commit(), "mode": mode, "runs": runs, "node_starts": node_starts,
        "elapsed_s": round(elapsed_s, 1),
    }


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=False).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    # A dirty tree means the figures are for code that no commit holds: say so.
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def write(out_dir: Path, head: dict, results: dict[str, ScenarioResult]) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    document = {**head, "scenarios": {name: {"rows": [r.as_dict() for r in res.rows], "raw": res.raw}
                                      for name, res in results.items()}}
    json_path, md_path = out_dir / "latest.json", out_dir / "latest.md"
    write_atomically(json_path, json.dumps(document, indent=2) + "\n")
    write_atomically(md_path, markdown(head, results))
    return json_path, md_path


def write_atomically(path: Path, text: str) -> None:
    # An interrupted write must not leave a half table where the last good one was.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def markdown(head: dict, results: dict[str, ScenarioResult]) -> str:
    machine = head["machine"]
    lines = [
        "# meshworker benchmark", "",
        f"- date: {head['date']}",
        f"- machine: {machine['nproc']} CPUs, {machine['cpu_model']}",
        f"- git commit: {head['git_commit']}",
        (f"- mode: {head['mode']}: medians over {head['runs']} runs, {head['node_starts']} fresh node "
         f"start(s) for footprint; took {head['elapsed_s']} s"), "",
        "| scenario | metric | ours | baseline | ratio | target | met? |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for name, result in results.items():
        lines += [table_row(name, row) for row in result.rows]
    lines += ["", NOTES]
    return "\n".join(lines)


def table_row(scenario: str, row: Row) -> str:
    baseline = "" if row.baseline is None else f"{fmt(row.baseline)} ({row.baseline_name})"
    met = {True: "yes", False: "**no**", None: ""}[row.met]
    cells = [scenario, row.metric, fmt(row.ours), baseline, fmt(row.ratio), str(row.target or ""), met]
    return "| " + " | ".join(cells) + " |"


def fmt(value: float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int):  # counts
        return str(value)
    magnitude = abs(value)
    return f"{value:.0f}" if magnitude >= 100 else f"{value:.2f}" if magnitude >= 1 else f"{value:.3f}"
