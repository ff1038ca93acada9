"""python -m bench [--quick | --smoke] [--only SCENARIO,...] [--out DIR]

Starts what the chosen scenarios need, runs them, stops everything it started (also on
an error, Ctrl-C or SIGTERM), and writes latest.json and latest.md to the output folder.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from pathlib import Path

from bench import procs, report
from bench.context import SETTINGS, Context
from bench.scenarios import SCENARIOS

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer runs and shorter loads (< 2 min)")
    size.add_argument("--smoke", action="store_true", help="tiny loads: proves the harness runs, "
                                                           "figures mean nothing")
    parser.add_argument("--only", type=scenario_list, default=list(SCENARIOS),
                        help=f"comma-separated scenarios (default: all of {','.join(SCENARIOS)})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    return parser.parse_args(argv)


def scenario_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown scenario(s) {unknown}; expected some of {list(SCENARIOS)}")
    return names


def stop_on_sigterm() -> None:
    # Turn SIGTERM into an exception, so the finally blocks stop every child as Ctrl-C would.
    def raise_exit(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, raise_exit)


def run_scenarios(names: list[str], ctx: Context) -> dict[str, report.ScenarioResult]:
    results = {}
    for name in names:
        ctx.progress(f"scenario {name}")
        results[name] = SCENARIOS[name].run(ctx)
    return results


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    settings = SETTINGS["smoke" if args.smoke else "quick" if args.quick else "full"]
    stop_on_sigterm()
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        ctx = Context(settings, stack)
        ctx.progress(f"{settings.mode} run of {', '.join(args.only)}; results to {args.out}")
        try:
            results = run_scenarios(args.only, ctx)
        finally:
            # A second Ctrl-C must not cut the clean-up short and orphan a node: each stop is
            # bounded anyway (SIGTERM, then SIGKILL after procs.STOP_GRACE_S).
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            ctx.progress("stopping everything the bench started")
            procs.terminate_all()
    head = report.header(settings.mode, settings.runs, settings.footprint_runs,
                         time.monotonic() - started)
    json_path, md_path = report.write(args.out, head, results)
    print(md_path.read_text(), flush=True)
    print(f"wrote {json_path} and {md_path}", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        # Everything started was stopped on the way out; a traceback would only add noise.
        print("interrupted: stopped everything the bench started", file=sys.stderr)
        sys.exit(130)
