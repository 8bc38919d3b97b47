"""A bounded, durable spool of OTLP batches that could not be delivered yet.

Each batch is one file (protobuf bytes), written atomically; delivery removes it. When
the spool is full the oldest batch is dropped and counted, never silently. Thread-safe:
the exporter's worker thread and the drain thread share it.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import final

__all__ = ["Spool"]


@final
class Spool:
    """Batches waiting for a tracer, oldest first, bounded by `max_bytes`."""

    def __init__(self, directory: Path, *, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.dropped_batches = 0
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def put(self, batch: bytes) -> None:
        """Keep `batch` until it can be delivered (dropping the oldest batches to stay in bounds)."""
        with self._lock:
            name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.otlp"
            tmp = self.directory / f".{name}.tmp"
            tmp.write_bytes(batch)
            os.replace(tmp, self.directory / name)
            self._trim()

    def pending(self) -> int:
        """How many batches wait."""
        with self._lock:
            return len(self._files())

    def drain(self, deliver: Callable[[bytes], bool], *, limit: int = 64) -> int:
        """Offer up to `limit` batches, oldest first, to `deliver`; stop at its first refusal. Returns how many went."""
        sent = 0
        for path in self._oldest(limit):
            try:
                batch = path.read_bytes()
            except FileNotFoundError:
                continue  # another drain took it
            if not deliver(batch):
                break
            path.unlink(missing_ok=True)
            sent += 1
        return sent

    def _oldest(self, limit: int) -> list[Path]:
        with self._lock:
            return self._files()[:limit]

    def _files(self) -> list[Path]:
        return sorted(self.directory.glob("*.otlp"))

    def _trim(self) -> None:
        files = self._files()
        total = sum(f.stat().st_size for f in files)
        while files and total > self.max_bytes:
            oldest = files.pop(0)
            total -= oldest.stat().st_size
            oldest.unlink(missing_ok=True)
            self.dropped_batches += 1
