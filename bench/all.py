"""Every benchmark, in a fixed order, with short settings: one command for the whole picture.

Each runs as its own process with a deadline (a bench that hangs is killed and reported, the
others still run) and prints its own table, ratios measured side by side within its own run;
`bench/cores.py` goes first, as the host's gauge for the rest. What each printed is written to
docs/performance.md, one section per bench between `<!-- bench/all.py: NAME -->` markers (a
section of a bench that did not run this time is kept), under the run's date and load average.
Longer settings: run one bench alone with its own flags (each file's docstring says which).

    python bench/all.py [--only fifty,hop] [--deadline 900] [--no-write]
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DOC = BENCH.parent / "docs" / "performance.md"
GENERATED = "## The latest `python bench/all.py`"

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
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md as it is")
    args = parser.parse_args()
    only = {name for name in args.only.split(",") if name}
    outcomes: list[tuple[str, str, float]] = []
    printed: dict[str, str] = {}
    load = os.getloadavg()[0]
    for name, settings in ORDER:
        script = BENCH / f"{name}.py"
        if (only and name not in only) or not script.is_file():
            continue
        print(f"\n=== {name} {' '.join(settings)}", flush=True)
        started = time.perf_counter()
        outcome, printed[name] = run(script, settings, args.deadline)
        outcomes.append((name, outcome, time.perf_counter() - started))
    print("\n| bench | outcome | seconds |\n|---|---|---|")
    for name, outcome, seconds in outcomes:
        print(f"| {name} | {outcome} | {seconds:.0f} |")
    if not args.no_write:
        heading = (
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {load:.1f} → {os.getloadavg()[0]:.1f}"
        )
        sections = {
            name: section(name, settings_of(name), heading, outcome, printed[name]) for name, outcome, _ in outcomes
        }
        DOC.write_text(write_sections(DOC.read_text(encoding="utf-8"), sections), encoding="utf-8")
        print(f"\nwritten to {DOC.relative_to(BENCH.parent)}")
    if any(outcome != "ok" for _, outcome, _ in outcomes):
        sys.exit(1)


def run(script: Path, settings: list[str], deadline: float) -> tuple[str, str]:
    """Run one bench, echoing what it prints; (its outcome, its stdout)."""
    process = subprocess.Popen(
        [sys.executable, str(script), *settings], start_new_session=True, stdout=subprocess.PIPE, text=True
    )
    lines: list[str] = []

    def echo() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line)

    reader = threading.Thread(target=echo, daemon=True)
    reader.start()
    try:
        code = process.wait(timeout=deadline)
        outcome = "ok" if code == 0 else f"exit {code}"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the bench and what it started in its group
        process.wait()
        outcome = f"killed after {deadline:g} s"
    reader.join(timeout=10)
    return outcome, "".join(lines)


def settings_of(name: str) -> list[str]:
    return next(settings for bench, settings in ORDER if bench == name)


def section(name: str, settings: list[str], heading: str, outcome: str, stdout: str) -> str:
    """One bench's part of docs/performance.md: its command, when, and what it printed (tables as tables)."""
    body: list[str] = []
    for is_table, run in itertools.groupby(stdout.rstrip().splitlines(), key=lambda line: line.startswith("|")):
        lines = list(run)
        if is_table:
            body += ["", *lines, ""]
        elif any(line.strip() for line in lines):
            body += ["", "```text", *_trimmed(lines), "```", ""]
    command = f"python bench/{name}.py {' '.join(settings)}".rstrip()
    text = "\n".join([f"### `{command}`", "", f"{heading}; {outcome}.", *body])
    return re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"


def _trimmed(lines: list[str]) -> list[str]:
    """`lines` without the blank ones at either end."""
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def write_sections(doc: str, sections: dict[str, str]) -> str:
    """`doc` with each bench's section replaced (or added in ORDER's place), under the generated heading."""
    if GENERATED not in doc:
        doc = (
            doc.rstrip() + f"\n\n{GENERATED}\n\nWritten by `python bench/all.py`; every other table above is by hand.\n"
        )
    head, _, tail = doc.partition(GENERATED)
    kept = dict(re.findall(r"<!-- bench/all.py: (\w+) -->\n(.*?)<!-- /bench/all.py: \1 -->\n", tail, re.DOTALL))
    intro = re.split(r"<!-- bench/all.py: ", tail, maxsplit=1)[0]
    merged = kept | sections
    parts = [f"<!-- bench/all.py: {n} -->\n{merged[n]}<!-- /bench/all.py: {n} -->\n" for n, _ in ORDER if n in merged]
    return head + GENERATED + intro.rstrip() + "\n\n" + "\n".join(parts)


if __name__ == "__main__":
    main()
