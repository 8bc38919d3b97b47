"""The approvals table in PostgreSQL: the `ApprovalStore` that several registry replicas share.

Owns the table's layout and the cross-replica part of the queue: every write that ends a pending
approval sends `NOTIFY` on the mesh's approvals channel (payload: the approval's id) in its own
transaction, so the notice leaves only once the change is durable; `watch` LISTENs on that channel.
Expiry sweeps hold an advisory lock, so one replica at a time closes what is overdue.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, LiteralString, final

import anyio
from anyio.abc import TaskStatus

from mesh.wire import Approval, ApprovalStatus, Decider
from registry.approval_rows import COLUMNS, SELECT, approval_from_row, row_of
from registry.pg import SWEEP_LOCK, Connection, PgDatabase
from registry.stores import Pending, Wake

__all__ = ["PgApprovals"]

_VERSION: Final = 1
_SCHEMA: Final[tuple[LiteralString, ...]] = (
    """CREATE TABLE IF NOT EXISTS approvals (
        id TEXT COLLATE "C" PRIMARY KEY, agent TEXT NOT NULL, tool TEXT NOT NULL, caller TEXT NOT NULL,
        arguments_digest TEXT NOT NULL, requested_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL, status TEXT NOT NULL, trace_id TEXT, decided_by TEXT,
        decided_at DOUBLE PRECISION, reason TEXT, summary TEXT, requested_by TEXT, approvers TEXT,
        decided_groups TEXT, arguments JSON, polled_at DOUBLE PRECISION
    )""",
    "CREATE INDEX IF NOT EXISTS approvals_status ON approvals (status, requested_at)",
)
# JSON, not JSONB: the arguments come back as the agent sent them (key order included), for a person to read.
_RETURNED: Final[LiteralString] = ", ".join("arguments::text" if c == "arguments" else c for c in COLUMNS)
_INSERT: Final[LiteralString] = f"INSERT INTO approvals ({SELECT}) VALUES ({', '.join('%s' for _ in COLUMNS)})"


@final
class PgApprovals:
    """The approvals table of a mesh's PostgreSQL database; thread-safe, shared by every replica."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db
        self._channel = db.channel("approvals")
        db.prepare("approvals", _VERSION, _SCHEMA)

    def close(self) -> None:
        """Nothing to release: the database is shared with the other stores and closed by its owner."""

    def insert(self, approval: Approval, summary: str | None) -> None:
        """Store a new approval."""
        with self._db.connection() as conn:
            conn.execute(_INSERT, row_of(approval, summary))

    def get(self, approval_id: str) -> Approval | None:
        """One approval, or None."""
        with self._db.connection() as conn:
            row = conn.execute(f"SELECT {_RETURNED} FROM approvals WHERE id = %s", (approval_id,)).fetchone()
        return approval_from_row(row) if row else None

    def list(self, *, status: str | None, limit: int) -> list[Approval]:
        """Approvals, newest first, optionally of one status."""
        where = "WHERE status = %(status)s" if status else ""
        query = f"SELECT {_RETURNED} FROM approvals {where} ORDER BY requested_at DESC LIMIT %(limit)s"
        with self._db.connection() as conn:
            rows = conn.execute(query, {"status": status, "limit": limit}).fetchall()
        return [approval_from_row(r) for r in rows]

    def pending(self) -> list[Pending]:
        """The pending approvals, for the expiry sweep."""
        with self._db.connection() as conn:
            rows = conn.execute(
                "SELECT id, requested_at, expires_at, polled_at FROM approvals WHERE status = 'pending'"
            ).fetchall()
        return [Pending(*row) for row in rows]

    def decide(self, approval_id: str, status: ApprovalStatus, by: Decider, reason: str | None, now: float) -> bool:
        """Record a person's answer if the approval is still pending (and tell every replica); False if not."""
        with self._db.transaction() as conn:
            changed = conn.execute(
                "UPDATE approvals SET status=%s, decided_by=%s, decided_groups=%s, decided_at=%s, reason=%s "
                "WHERE id=%s AND status='pending'",
                (status, by.person, ",".join(by.groups), now, reason, approval_id),
            ).rowcount
            if changed:
                self._notify(conn, [approval_id])
        return changed > 0

    def close_pending(self, ids: Sequence[str], status: ApprovalStatus, reason: str, now: float) -> list[Approval]:
        """Close those of `ids` still pending, one replica at a time; exactly the approvals this call closed."""
        if not ids:
            return []
        with self._db.transaction(SWEEP_LOCK) as conn:
            rows = conn.execute(
                "UPDATE approvals SET status=%s, decided_at=%s, reason=%s "
                f"WHERE status='pending' AND id = ANY(%s) RETURNING {_RETURNED}",
                (status, now, reason, list(ids)),
            ).fetchall()
            closed = [approval_from_row(r) for r in rows]
            self._notify(conn, [a.id for a in closed])
        return closed

    def touch(self, approval_id: str, now: float) -> None:
        """Note that a call still waits on `approval_id`, for every replica's abandonment check."""
        with self._db.connection() as conn:
            conn.execute(
                "UPDATE approvals SET polled_at = greatest(polled_at, %s) WHERE id = %s AND status = 'pending'",
                (now, approval_id),
            )

    async def watch(self, wake: Wake, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Call `wake(id)` whenever any replica ends approval `id` (LISTEN), until cancelled."""
        await self._db.listen(self._channel, wake, task_status=task_status)

    def _notify(self, conn: Connection, ids: Sequence[str]) -> None:
        # Sent at commit, in commit order; a notice to a replica not listening at the time is caught
        # up by its re-read after it (re)connects (`PgDatabase.listen` wakes everything).
        for approval_id in ids:
            conn.execute("SELECT pg_notify(%s, %s)", (self._channel, approval_id))
