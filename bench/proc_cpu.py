"""CPU time of benchmarked processes, from Linux /proc (shared by the bench scripts)."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU seconds of a process so far, all its threads; with its live children if asked.

    Children count for a tracer or registry, whose ingest workers are child processes.
    """
    total = _ticks(Path(f"/proc/{pid}/stat"))
    if children:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if stat.read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                    total += _ticks(stat)
            except OSError:  # exited meanwhile
                continue
    return total / os.sysconf("SC_CLK_TCK")


def _ticks(stat: Path) -> int:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])
