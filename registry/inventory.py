"""The agent inventory in SQLite (WAL): registrations and their leases, an `InventoryStore`.

Owns the `agents` table of the registry's SQLite file (one row per name and instance, tools and
governance metadata as JSON columns). It does not authenticate, speak HTTP or MCP, or read a
clock: callers pass `now` (wall-clock seconds, since rows outlive the process). The PostgreSQL
store is `registry.pg_inventory`; what a row means is `registry.inventory_rows`'.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, final

from pydantic import TypeAdapter

from mesh.wire import AgentRecord, Registration, ToolInfo
from registry.inventory_rows import RowReader
from registry.sqlite_schema import prepare

__all__ = ["Inventory"]

_VERSION: Final = 1
"""The layout `_SCHEMA` makes (the `inventory` row of `schema_version`)."""
_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS agents (
        name TEXT NOT NULL,
        instance TEXT NOT NULL,
        url TEXT NOT NULL,
        version TEXT NOT NULL,
        tools TEXT NOT NULL,
        metadata TEXT NOT NULL,
        lease_seconds REAL NOT NULL,
        authenticated INTEGER NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (name, instance)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS agents_expires_at ON agents (expires_at)",
)

_COLUMNS: Final = (
    "name, instance, url, version, tools, metadata, lease_seconds, authenticated, first_seen, last_seen, expires_at"
)

_UPSERT: Final = f"""
INSERT INTO agents ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (name, instance) DO UPDATE SET
    url = excluded.url, version = excluded.version, tools = excluded.tools,
    metadata = excluded.metadata, lease_seconds = excluded.lease_seconds,
    authenticated = excluded.authenticated, last_seen = excluded.last_seen,
    expires_at = excluded.expires_at
RETURNING {_COLUMNS}
"""

_RENEW: Final = f"""
UPDATE agents SET last_seen = ?1, expires_at = ?1 + lease_seconds
WHERE name = ?2 AND instance = ?3
RETURNING {_COLUMNS}
"""

# Governance filters compare case-insensitively: "EU" and "eu" name the same jurisdiction.
_GOVERNANCE_FILTER: Final = "lower(json_extract(metadata, '$.{key}')) = lower(?)"
_TOOL_FILTER: Final = "EXISTS (SELECT 1 FROM json_each(agents.tools) WHERE json_extract(value, '$.name') = ?)"

_tools_adapter: Final = TypeAdapter(list[ToolInfo])


@final
class Inventory:
    """Registrations keyed by (name, instance), each with a lease, in SQLite; durable when a write returns.

    Raises ConfigError when the file was written by a newer agentplex. Thread-safe, for the
    registry's worker threads (`registry.store_calls`): writes take turns on one connection, reads on
    another, so a listing never waits for a heartbeat's fsync (WAL: readers see the last commit);
    other connections to the file (approvals, audit, another process) wait their turn to write.
    """

    def __init__(self, path: str | Path) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.path = target
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._queued_lock = threading.Lock()
        self._queued: list[_Renewal] = []
        self._rows = RowReader()
        self._db = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a registration acknowledged to an agent survives power loss, not only kill -9.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            prepare(self._db, "inventory", _VERSION, _SCHEMA, where=str(target))
            self._reader = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        except BaseException:
            self._db.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the database; later calls raise sqlite3.ProgrammingError."""
        with self._lock, self._read_lock:
            self._db.close()
            self._reader.close()

    def upsert(self, reg: Registration, now: float) -> AgentRecord:
        """Store `reg` with a lease from `now`; a known (name, instance) keeps its first_seen."""
        row = self._one(
            _UPSERT,
            (
                reg.name,
                reg.instance,
                reg.url,
                reg.version,
                _tools_adapter.dump_json(reg.tools).decode(),
                reg.metadata.model_dump_json(),
                reg.lease_seconds,
                int(reg.authenticated),
                now,
                now,
                now + reg.lease_seconds,
            ),
        )
        assert row is not None  # an upsert always returns its row
        return row

    def renew(self, name: str, instance: str, now: float) -> AgentRecord | None:
        """Extend the lease of (name, instance) from `now`; None if unknown (the agent must register).

        Heartbeats that arrive while another is being made durable are committed together after
        it, in one transaction: one fsync for all of them, each durable when its call returns.
        """
        mine = _Renewal((now, name, instance))
        with self._queued_lock:
            self._queued.append(mine)
        with self._lock:
            if not mine.done:  # else a call that held the lock before committed it
                with self._queued_lock:
                    batch, self._queued = self._queued, []
                self._commit(batch)
        if mine.error is not None:
            raise mine.error
        return self._rows.record(mine.row) if mine.row is not None else None

    def remove(self, name: str, instance: str) -> bool:
        """Forget (name, instance); True if it was known."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM agents WHERE name = ? AND instance = ?", (name, instance))
        return cursor.rowcount > 0

    def alive(self, now: float) -> list[AgentRecord]:
        """Registrations whose lease has not lapsed at `now`, by name and instance."""
        return self.find(now)

    def all(self) -> list[AgentRecord]:
        """Every registration, lapsed ones included (the asset view, with last seen)."""
        return self.find(None)

    def count(self, now: float) -> int:
        """How many registrations are alive at `now`."""
        with self._read_lock:
            (found,) = self._reader.execute("SELECT count(*) FROM agents WHERE expires_at > ?", (now,)).fetchone()
        return int(found)

    def find(
        self,
        now: float | None,
        *,
        tool: str | None = None,
        owner: str | None = None,
        jurisdiction: str | None = None,
        data_class: str | None = None,
        name: str | None = None,
    ) -> list[AgentRecord]:
        """Registrations matching every given filter, alive at `now` (None: lapsed ones too)."""
        rows = self._select(now, tool, owner, jurisdiction, data_class, name)
        return [self._rows.record(row) for row in rows]

    def find_json(
        self,
        now: float | None,
        *,
        tool: str | None = None,
        owner: str | None = None,
        jurisdiction: str | None = None,
        data_class: str | None = None,
        name: str | None = None,
    ) -> bytes:
        """What `find` gives, as a JSON array (the bytes `TypeAdapter(list[AgentRecord]).dump_json` makes)."""
        return self._rows.listing(self._select(now, tool, owner, jurisdiction, data_class, name))

    def integrity_check(self) -> str:
        """SQLite's `PRAGMA integrity_check` verdict: "ok" when the file is sound."""
        with self._read_lock:
            rows = self._reader.execute("PRAGMA integrity_check").fetchall()
        return "; ".join(str(row[0]) for row in rows)

    def _select(
        self,
        now: float | None,
        tool: str | None,
        owner: str | None,
        jurisdiction: str | None,
        data_class: str | None,
        name: str | None,
    ) -> list[Any]:
        clauses: list[str] = []
        params: list[Any] = []
        if now is not None:
            clauses.append("expires_at > ?")
            params.append(now)
        if name is not None:
            clauses.append("name = ?")
            params.append(name)
        if tool is not None:
            clauses.append(_TOOL_FILTER)
            params.append(tool)
        for key, value in (("owner", owner), ("jurisdiction", jurisdiction), ("data_class", data_class)):
            if value is not None:
                clauses.append(_GOVERNANCE_FILTER.format(key=key))
                params.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        query = f"SELECT {_COLUMNS} FROM agents{where} ORDER BY name, instance"
        with self._read_lock:
            return self._reader.execute(query, params).fetchall()

    def _commit(self, batch: list[_Renewal]) -> None:
        """Renew every lease of `batch` in one transaction (the write lock held); each learns its outcome."""
        outcome: Exception | None = RuntimeError("the heartbeats' transaction was interrupted")
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                found = [self._db.execute(_RENEW, renewal.params).fetchall() for renewal in batch]
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            for renewal, rows in zip(batch, found, strict=True):
                renewal.row = rows[0] if rows else None
            outcome = None
        except Exception as exc:  # every heartbeat of the batch fails as the transaction did
            outcome = exc
        finally:
            for renewal in batch:
                renewal.error = outcome
                renewal.done = True

    def _one(self, sql: str, params: tuple[Any, ...]) -> AgentRecord | None:
        # fetchall, not fetchone: a RETURNING statement commits only once stepped to its end.
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return self._rows.record(rows[0]) if rows else None


@dataclass(slots=True)
class _Renewal:
    """One heartbeat waiting to be committed, and then its outcome."""

    params: tuple[float, str, str]
    row: tuple[Any, ...] | None = None
    error: Exception | None = None
    done: bool = False
