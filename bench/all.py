"""Every benchmark, in a fixed order, with short settings: one command for the whole picture.

Each runs as its own process with a deadline (a bench that hangs is killed and reported, the
others still run) and prints its own table, ratios measured side by side within its own run;
`bench/cores.py` goes first, as the host's gauge for the rest. Longer settings: run one bench
alone with its own flags (each file's docstring says which).

    python bench/all.py [--only fifty,hop] [--deadline 900]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent

ORDER: list[tuple[str, list[str]]] = [
    ("cores", ["--seconds", "1", "--rounds", "2"]),
    ("wakeups", ["--wakes", "50"]),
    ("hop", ["--calls", "400"]),
    ("tracing_overhead", ["--trials", "2", "--pairs", "2", "--calls", "300"]),
    ("exporter", ["--seconds", "2", "--rounds", "2"]),
    ("ingest", ["--spans", "20000", "--stored", "50000", "--rounds", "1"]),
    ("trace_ids", ["--stored", "20000", "--slices", "2", "--pairs", "4"]),
    ("registry_stores", ["--instances", "200", "--rounds", "2"]),
    ("discovery", ["--starts", "5"]),
    ("fifty", ["--idle", "10", "--settle", "15"]),
]
"""(bench, short settings), in the order they run."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated bench names (default: all)")
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds each bench may take")
    args = parser.parse_args()
    only = {name for name in args.only.split(",") if name}
    outcomes: list[tuple[str, str, float]] = []
    for name, settings in ORDER:
        script = BENCH / f"{name}.py"
        if (only and name not in only) or not script.is_file():
            continue
        print(f"\n=== {name} {' '.join(settings)}", flush=True)
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, str(script), *settings], start_new_session=True)
        try:
            code = process.wait(timeout=args.deadline)
            outcome = "ok" if code == 0 else f"exit {code}"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the bench and what it started in its group
            process.wait()
            outcome = f"killed after {args.deadline:g} s"
        outcomes.append((name, outcome, time.perf_counter() - started))
    print("\n| bench | outcome | seconds |\n|---|---|---|")
    for name, outcome, seconds in outcomes:
        print(f"| {name} | {outcome} | {seconds:.0f} |")
    if any(outcome != "ok" for _, outcome, _ in outcomes):
        sys.exit(1)


if __name__ == "__main__":
    main()
