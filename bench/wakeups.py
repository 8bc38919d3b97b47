"""What a wake-up costs: CPU a thread is charged for each return from a timed wait, on this host.

A thread that sleeps and wakes on a timer looks idle, but each wake-up is charged CPU (on the
project's VM, 50-150 µs: more than encoding a span), so periodic threads are paid for by the
wake, not by the work. Measured with the thread's own CPU clock over `--wakes` waits of each kind,
no work between them. `mesh.tracing.batch` picks its tick from this.

    python bench/wakeups.py [--wakes 200]
"""

from __future__ import annotations

import argparse
import select
import threading
import time
from collections.abc import Callable


def cpu_per_wake(wait: Callable[[], object], wakes: int) -> float:
    """µs of thread CPU per call of `wait`, measured in a fresh thread."""
    spent: list[float] = []

    def run() -> None:
        started = time.thread_time()
        for _ in range(wakes):
            wait()
        spent.append(time.thread_time() - started)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return spent[0] / wakes * 1e6


def main(wakes: int) -> None:
    never = threading.Event()
    held = threading.Lock()
    held.acquire()
    # (label, wait, share of --wakes): the 100 ms kind takes a fifth as many, to keep the run short
    kinds: list[tuple[str, Callable[[], object], float]] = [
        ("Event.wait(0.1)", lambda: never.wait(0.1), 0.2),
        ("Event.wait(0.02)", lambda: never.wait(0.02), 1),
        ("Lock.acquire(timeout=0.02)", lambda: held.acquire(timeout=0.02), 1),
        ("time.sleep(0.02)", lambda: time.sleep(0.02), 1),
        ("select([], [], [], 0.02)", lambda: select.select([], [], [], 0.02), 1),
        ("time.sleep(0.001)", lambda: time.sleep(0.001), 1),
    ]
    print(f"{'timed wait':<28} {'CPU µs per wake':>16}")
    for label, wait, share in kinds:
        print(f"{label:<28} {cpu_per_wake(wait, max(1, round(wakes * share))):>16.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="CPU charged per wake-up from a timed wait")
    parser.add_argument("--wakes", type=int, default=200, help="timed waits of each kind")
    main(parser.parse_args().wakes)
