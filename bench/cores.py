"""What this machine's CPUs deliver together: N busy processes against one, side by side in one run.

Each process counts in a pure-Python loop for a fixed time; the sum of N counts over the count of
one process alone is the machine's parallel speed-up. On the shared 2-CPU host these benchmarks
run on it moved between x1.2 and x1.96 from run to run (2026-12-01): the CPUs slow down when both
are busy, which caps any multi-process design (the tracer's ingest workers) and is why CPU µs
per span read higher under full load than in one process.

    python bench/cores.py [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time


def spin(seconds: float) -> int:
    """Count for `seconds` of wall time; the count."""
    count = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(10_000):
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    ratios: list[float] = []
    with multiprocessing.Pool(cpus) as pool:
        for _ in range(args.rounds):  # interleaved: the host's drift hits both sides alike
            alone = pool.apply(spin, (args.seconds,))
            together = sum(pool.map(spin, [args.seconds] * cpus, chunksize=1))
            ratios.append(together / alone)
            rates = alone / args.seconds / 1e6, together / args.seconds / 1e6
            print(f"  one process {rates[0]:6.2f} M/s, {cpus} at once {rates[1]:6.2f} M/s")
    ratio = statistics.median(ratios)
    print(f"\n{cpus} busy processes deliver x{ratio:.2f} one process (median of {args.rounds} rounds)")


if __name__ == "__main__":
    main()
