"""A bounded, durable spool of OTLP batches that could not be delivered yet: one per running instance.

Each instance of a service spools into its own directory, `ROOT/SERVICE/INSTANCE`, and holds an
`fcntl.flock` on its lock file while it runs, so replicas never take each other's batches. The
kernel lets go of the lock when the process dies, however it dies: `adopt` moves the batches of
a service's dead instances into the caller's own spool, so a restarted agent still delivers what
its predecessor left. Each batch is one file (protobuf bytes, its span count in its name), written
atomically; delivery removes it. When the spool is full the oldest batches are dropped and their
spans counted, never silently. Thread-safe: the exporter's worker thread and the drain thread
share it. Owns files and locks only; delivering is the exporter's.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Final, final

__all__ = ["Spool"]

if sys.platform != "win32":
    import fcntl
else:  # pragma: no cover - no flock: every instance spools alone and adopts only the pre-instance layout
    fcntl = None


@final
class Spool:
    """One instance's batches waiting for a tracer, oldest first, bounded by `max_bytes`.

    `root` is the service's spool directory; this spool owns `root/instance` (or, if a live
    process already holds that one, a fresh sibling) until `close`.
    """

    def __init__(self, root: Path, instance: str, *, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.dropped_batches = 0
        self.dropped_spans = 0
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.directory, self._owner = _claim(root, _safe_name(instance))

    def put(self, batch: bytes, spans: int) -> None:
        """Keep `batch` of `spans` spans until it can be delivered (dropping the oldest to stay in bounds)."""
        with self._lock:
            name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}-{spans}.otlp"
            tmp = self.directory / f".{name}.tmp"
            tmp.write_bytes(batch)
            os.replace(tmp, self.directory / name)
            self._trim()

    def pending(self) -> int:
        """How many batches wait."""
        with self._lock:
            return len(self._files())

    def drain(self, deliver: Callable[[bytes, int], bool], *, limit: int = 64) -> int:
        """Offer up to `limit` batches, oldest first, to `deliver(batch, spans)`; stop at its first refusal.

        Returns how many spans went.
        """
        sent = 0
        for path in self._oldest(limit):
            try:
                batch = path.read_bytes()
            except FileNotFoundError:
                continue  # another drain took it
            spans = _spans_in(path)
            if not deliver(batch, spans):
                break
            path.unlink(missing_ok=True)
            sent += spans
        return sent

    def adopt(self) -> int:
        """Move into this spool the batches of the service's instances whose process is gone; how many.

        A directory whose lock a live process holds is left alone. Batches of the layout before
        instances had their own directory (directly under `root`) are taken too.
        """
        adopted = 0
        with self._lock:
            adopted += self._take(self.root)
            for directory in _siblings(self.root, self.directory):
                owner = _lock(directory)
                if owner is None:
                    continue  # alive, or removed meanwhile
                try:
                    adopted += self._take(directory)
                    _remove(directory)
                finally:
                    os.close(owner)
            if adopted:
                self._trim()
        return adopted

    def close(self) -> None:
        """Let go of this spool's directory (removed if empty); what it holds waits for the next instance."""
        with self._lock:
            if self._owner < 0:
                return
            if not self._files():
                _remove(self.directory)
            os.close(self._owner)
            self._owner = -1

    def _take(self, directory: Path) -> int:
        taken = 0
        for path in directory.glob("*.otlp"):
            with contextlib.suppress(FileNotFoundError):  # another instance adopting the old layout won it
                os.replace(path, self.directory / path.name)
                taken += 1
        return taken

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
            self.dropped_spans += _spans_in(oldest)


# -- private helpers ---------------------------------------------------------------------------

_LOCK_FILE: Final = ".owner.lock"
_CLAIM_ATTEMPTS: Final = 8
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _safe_name(instance: str) -> str:
    # An instance id names a directory: nothing that climbs out of the service's spool or hides.
    return _UNSAFE.sub("_", instance) or "instance"


def _claim(root: Path, instance: str) -> tuple[Path, int]:
    """The directory this instance spools into, and the descriptor holding its lock."""
    name = instance
    for _ in range(_CLAIM_ATTEMPTS):
        directory = root / name
        directory.mkdir(exist_ok=True, mode=0o700)
        owner = _lock(directory)
        if owner is not None:
            return directory, owner
        name = f"{instance}-{secrets.token_hex(4)}"  # a live process has it (or an adopter just removed it)
    raise OSError(f"cannot claim a span spool directory under {root}")


def _lock(directory: Path) -> int | None:
    """A descriptor holding `directory`'s lock, or None if a live process holds it or it is gone."""
    path = directory / _LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        return None
    if fcntl is None:  # pragma: no cover - Windows
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # An adopter removes a directory while holding its lock: the file locked must still be the one there.
        held, there = os.fstat(fd), os.stat(path)
        if (held.st_dev, held.st_ino) != (there.st_dev, there.st_ino):
            raise FileNotFoundError(path)
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        return None
    return fd


def _siblings(root: Path, own: Path) -> list[Path]:
    if fcntl is None:  # pragma: no cover - Windows: live and dead instances look alike
        return []
    return [path for path in root.iterdir() if path != own and not path.name.startswith(".") and path.is_dir()]


def _remove(directory: Path) -> None:
    """Remove a spool directory whose lock the caller holds; a file that appeared meanwhile keeps it."""
    for leftover in directory.glob(".*.tmp"):  # a write its process did not finish
        leftover.unlink(missing_ok=True)
    (directory / _LOCK_FILE).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        directory.rmdir()


def _spans_in(path: Path) -> int:
    """The span count in a batch's file name; 0 for a file of the layout that did not record it."""
    count = path.stem.rsplit("-", 2)
    return int(count[2]) if len(count) == 3 and count[2].isdigit() else 0
