"""The governance record in PostgreSQL: one MAC chain, whichever registry replica appends.

Owns the `audit` and `audit_head` tables of a mesh's PostgreSQL database. Appends hold an
advisory lock for their transaction, so entries from two replicas never fork the chain: each reads
the tip, links and writes under the lock (`registry.audit.Chain`, the same rules as SQLite's).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, LiteralString, final

from mesh.identity import MeshKeys
from mesh.wire import AuditHead, AuditRecord
from registry.audit import MAX_PAGE, Chain, Entry, entries, parsed, stored_head
from registry.pg import AUDIT_LOCK, PgDatabase

__all__ = ["PgAuditLog"]

_VERSION: Final = 1
_SCHEMA: Final[tuple[LiteralString, ...]] = (
    # record is TEXT, not JSONB: its MAC covers the exact canonical text.
    """CREATE TABLE IF NOT EXISTS audit (
        seq BIGINT PRIMARY KEY, at DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL, key TEXT UNIQUE,
        record TEXT NOT NULL, prev TEXT NOT NULL, mac TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS audit_at ON audit (at)",
    """CREATE TABLE IF NOT EXISTS audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, mac TEXT NOT NULL, sig TEXT NOT NULL
    )""",
)


@final
class PgAuditLog:
    """The governance record in PostgreSQL: appends serialized by an advisory lock, each MAC-chained to the last."""

    def __init__(self, db: PgDatabase, keys: MeshKeys, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        self._chain = Chain(keys)
        db.prepare("audit", _VERSION, _SCHEMA)

    def close(self) -> None:
        """Nothing to release: the database is shared with the other stores and closed by its owner."""

    def append(self, kind: str, record: Mapping[str, Any]) -> None:
        """Append one entry; a record whose "key" is already stored is skipped (a redelivery)."""
        self._append(entries([(kind, record)]))

    def append_many(self, records: Iterable[Mapping[str, Any]], *, kind: str) -> None:
        """Append `records` of one kind in one transaction, skipping those whose "key" is already stored."""
        self._append(entries((kind, record) for record in records))

    def read(self, *, since: float | None = None, after: int = 0, limit: int = 1000) -> list[AuditRecord]:
        """Entries after seq `after` (and appended at or after `since`), oldest first, at most `limit`."""
        when: LiteralString = "" if since is None else " AND at >= %(since)s"
        query: LiteralString = (
            f"SELECT seq, at, kind, record, prev, mac FROM audit WHERE seq > %(after)s{when} ORDER BY seq LIMIT %(n)s"
        )
        with self._db.connection() as conn:
            rows = conn.execute(query, {"after": after, "since": since, "n": max(0, min(limit, MAX_PAGE))}).fetchall()
        return [
            AuditRecord(seq=seq, at=at, kind=kind, record=parsed(text), prev=prev, mac=mac)
            for seq, at, kind, text, prev, mac in rows
        ]

    def head(self) -> AuditHead | None:
        """The stored head, as it is (the CLI checks its signature), or None when there is none."""
        with self._db.connection() as conn:
            row = conn.execute("SELECT seq, mac, sig FROM audit_head WHERE id = 1").fetchone()
        return stored_head(row)

    def _append(self, texts: list[Entry]) -> None:
        if not texts:
            return
        at = round(self._clock(), 6)
        keys = [key for _, _, key in texts if key is not None]
        with self._db.transaction(AUDIT_LOCK) as conn:
            (last,) = conn.execute("SELECT max(seq) FROM audit").fetchone() or (None,)
            head = conn.execute("SELECT seq, mac, sig FROM audit_head WHERE id = 1").fetchone()
            stored = (
                {k for (k,) in conn.execute("SELECT key FROM audit WHERE key = ANY(%s)", (keys,))} if keys else set()
            )
            rows, new_head = self._chain.link(texts, at, last=last, head=head, stored=stored)
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO audit (seq, at, kind, key, record, prev, mac) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    rows,
                )
            if new_head is not None:
                conn.execute(
                    "INSERT INTO audit_head (id, seq, mac, sig) VALUES (1, %s, %s, %s) "
                    "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, mac = excluded.mac, sig = excluded.sig",
                    (new_head.seq, new_head.mac, new_head.sig),
                )
