"""The approvals table in SQLite (WAL): the embedded `ApprovalStore`, for one registry process.

Owns the table's layout in the registry's SQLite file and its upgrades (older files gain the
columns later versions added). Change notices stay in the process: the queue wakes its own
waiters, so `watch` has nothing to listen to.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Final, final

import anyio
from anyio.abc import TaskStatus

from mesh.wire import Approval, ApprovalStatus, Decider
from registry.approval_rows import COLUMNS, SELECT, approval_from_row, row_of
from registry.sqlite_schema import columns_of, prepare
from registry.stores import Pending, Wake

__all__ = ["SqliteApprovals"]

_VERSION: Final = 1
"""The layout `_SCHEMA` makes (the `approvals` row of `schema_version`)."""
_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS approvals (
        id TEXT PRIMARY KEY, agent TEXT NOT NULL, tool TEXT NOT NULL, caller TEXT NOT NULL,
        arguments_digest TEXT NOT NULL, requested_at REAL NOT NULL, expires_at REAL NOT NULL,
        status TEXT NOT NULL, trace_id TEXT, decided_by TEXT, decided_at REAL, reason TEXT, summary TEXT,
        requested_by TEXT, approvers TEXT, decided_groups TEXT, arguments TEXT, polled_at REAL
    )""",
    "CREATE INDEX IF NOT EXISTS approvals_status ON approvals(status, requested_at)",
)
_ADDED_COLUMNS: Final = (
    ("requested_by", "TEXT"),
    ("approvers", "TEXT"),
    ("decided_groups", "TEXT"),
    ("arguments", "TEXT"),
    ("polled_at", "REAL"),
)
"""Columns added since the first layout, in order; a table from before versions gains those it lacks."""


@final
class SqliteApprovals:
    """The approvals table in one SQLite file; thread-safe (one connection behind a lock)."""

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            prepare(self._db, "approvals", _VERSION, _SCHEMA, _upgrade, where=str(path))
        except BaseException:
            self._db.close()
            raise
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def insert(self, approval: Approval, summary: str | None) -> None:
        """Store a new approval."""
        marks = ", ".join("?" * len(COLUMNS))
        with self._lock:
            self._db.execute(f"INSERT INTO approvals ({SELECT}) VALUES ({marks})", row_of(approval, summary))

    def get(self, approval_id: str) -> Approval | None:
        """One approval, or None."""
        with self._lock:
            row = self._db.execute(f"SELECT {SELECT} FROM approvals WHERE id = ?", (approval_id,)).fetchone()
        return approval_from_row(row) if row else None

    def list(self, *, status: str | None, limit: int) -> list[Approval]:
        """Approvals, newest first, optionally of one status."""
        query, args = f"SELECT {SELECT} FROM approvals", []
        if status:
            query, args = query + " WHERE status = ?", [status]
        with self._lock:
            rows = self._db.execute(query + " ORDER BY requested_at DESC LIMIT ?", (*args, limit)).fetchall()
        return [approval_from_row(r) for r in rows]

    def pending(self) -> list[Pending]:
        """The pending approvals, for the expiry sweep."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, requested_at, expires_at, polled_at FROM approvals WHERE status = 'pending'"
            ).fetchall()
        return [Pending(*row) for row in rows]

    def decide(self, approval_id: str, status: ApprovalStatus, by: Decider, reason: str | None, now: float) -> bool:
        """Record a person's answer if the approval is still pending; False if it is not."""
        with self._lock:
            changed = self._db.execute(
                "UPDATE approvals SET status=?, decided_by=?, decided_groups=?, decided_at=?, reason=? "
                "WHERE id=? AND status='pending'",
                (status, by.person, ",".join(by.groups), now, reason, approval_id),
            ).rowcount
        return changed > 0

    def close_pending(self, ids: Sequence[str], status: ApprovalStatus, reason: str, now: float) -> list[Approval]:
        """Close those of `ids` still pending; exactly the approvals this call closed."""
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        with self._lock:
            # fetchall, not fetchone: a RETURNING statement commits only once stepped to its end.
            rows = self._db.execute(
                f"UPDATE approvals SET status=?, decided_at=?, reason=? WHERE status='pending' AND id IN ({marks}) "
                f"RETURNING {SELECT}",
                (status, now, reason, *ids),
            ).fetchall()
        return [approval_from_row(r) for r in rows]

    def touch(self, approval_id: str, now: float) -> None:
        """Note that a call still waits on `approval_id`."""
        with self._lock:
            self._db.execute(
                "UPDATE approvals SET polled_at = max(coalesce(polled_at, 0), ?) WHERE id = ? AND status = 'pending'",
                (now, approval_id),
            )

    async def watch(self, wake: Wake, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Nothing changes here but through this process, whose queue wakes its own waiters."""
        task_status.started()
        await anyio.sleep_forever()


def _upgrade(db: sqlite3.Connection, found: int) -> None:
    if found == 0:  # before versions: whichever of the added columns the table lacks
        present = columns_of(db, "approvals")
        for column, kind in _ADDED_COLUMNS:
            if column not in present:
                db.execute(f"ALTER TABLE approvals ADD COLUMN {column} {kind}")
