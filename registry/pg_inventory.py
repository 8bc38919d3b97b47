"""The agent inventory in PostgreSQL: registrations and their leases, an `InventoryStore` for replicas.

Owns the `agents` table of a mesh's PostgreSQL database (tools and governance metadata as jsonb).
Leases need no sweeper: a lapsed lease is a row whose `expires_at` is past, so replicas never race
on expiry. Like the SQLite store, it reads no clock: callers pass `now`.
"""

from __future__ import annotations

from typing import Any, Final, LiteralString, final

from psycopg import sql
from pydantic import TypeAdapter

from mesh.wire import AgentRecord, Registration, ToolInfo
from registry.inventory_rows import RowReader
from registry.pg import PgDatabase

__all__ = ["PgInventory"]

_VERSION: Final = 1
_SCHEMA: Final[tuple[LiteralString, ...]] = (
    """CREATE TABLE IF NOT EXISTS agents (
        name TEXT COLLATE "C" NOT NULL,
        instance TEXT COLLATE "C" NOT NULL,
        url TEXT NOT NULL,
        version TEXT NOT NULL,
        tools JSONB NOT NULL,
        metadata JSONB NOT NULL,
        lease_seconds DOUBLE PRECISION NOT NULL,
        authenticated BOOLEAN NOT NULL,
        first_seen DOUBLE PRECISION NOT NULL,
        last_seen DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (name, instance)
    )""",
    "CREATE INDEX IF NOT EXISTS agents_expires_at ON agents (expires_at)",
)

# jsonb read back as text: pydantic parses it faster than psycopg's json.loads plus validation.
_COLUMNS: Final = (
    "name, instance, url, version, tools::text, metadata::text, lease_seconds, authenticated,"
    " first_seen, last_seen, expires_at"
)
_UPSERT: Final = f"""
INSERT INTO agents (name, instance, url, version, tools, metadata, lease_seconds, authenticated,
    first_seen, last_seen, expires_at)
VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s, %s, %s)
ON CONFLICT (name, instance) DO UPDATE SET
    url = excluded.url, version = excluded.version, tools = excluded.tools,
    metadata = excluded.metadata, lease_seconds = excluded.lease_seconds,
    authenticated = excluded.authenticated, last_seen = excluded.last_seen,
    expires_at = excluded.expires_at
RETURNING {_COLUMNS}
"""
_RENEW: Final = f"""
UPDATE agents SET last_seen = %(now)s, expires_at = %(now)s + lease_seconds
WHERE name = %(name)s AND instance = %(instance)s
RETURNING {_COLUMNS}
"""
_GOVERNANCE_KEYS: Final = ("owner", "jurisdiction", "data_class")

_tools_adapter: Final = TypeAdapter(list[ToolInfo])


@final
class PgInventory:
    """Registrations keyed by (name, instance), each with a lease, in PostgreSQL; durable when a write returns.

    Raises StoreUnavailable when the database cannot answer. Thread-safe: each call takes a pooled
    connection of its own, so the registry's worker threads run their calls side by side.
    """

    def __init__(self, db: PgDatabase) -> None:
        self._db = db
        self._rows = RowReader()
        db.prepare("inventory", _VERSION, _SCHEMA)

    def close(self) -> None:
        """Nothing to release: the database is shared with the other stores and closed by its owner."""

    def upsert(self, reg: Registration, now: float) -> AgentRecord:
        """Store `reg` with a lease from `now`; a known (name, instance) keeps its first_seen."""
        params = (
            reg.name,
            reg.instance,
            reg.url,
            reg.version,
            _tools_adapter.dump_json(reg.tools).decode(),
            reg.metadata.model_dump_json(),
            reg.lease_seconds,
            reg.authenticated,
            now,
            now,
            now + reg.lease_seconds,
        )
        with self._db.connection() as conn:
            row = conn.execute(_UPSERT, params).fetchone()
        assert row is not None  # an upsert always returns its row
        return self._rows.record(row)

    def renew(self, name: str, instance: str, now: float) -> AgentRecord | None:
        """Extend the lease of (name, instance) from `now`; None if unknown (the agent must register)."""
        with self._db.connection() as conn:
            row = conn.execute(_RENEW, {"now": now, "name": name, "instance": instance}).fetchone()
        return self._rows.record(row) if row else None

    def remove(self, name: str, instance: str) -> bool:
        """Forget (name, instance); True if it was known."""
        with self._db.connection() as conn:
            cursor = conn.execute("DELETE FROM agents WHERE name = %s AND instance = %s", (name, instance))
        return cursor.rowcount > 0

    def alive(self, now: float) -> list[AgentRecord]:
        """Registrations whose lease has not lapsed at `now`, by name and instance."""
        return self.find(now)

    def all(self) -> list[AgentRecord]:
        """Every registration, lapsed ones included (the asset view, with last seen)."""
        return self.find(None)

    def count(self, now: float) -> int:
        """How many registrations are alive at `now`."""
        with self._db.connection() as conn:
            row = conn.execute("SELECT count(*) FROM agents WHERE expires_at > %s", (now,)).fetchone()
        return int(row[0]) if row else 0

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

    def _select(
        self,
        now: float | None,
        tool: str | None,
        owner: str | None,
        jurisdiction: str | None,
        data_class: str | None,
        name: str | None,
    ) -> list[tuple[Any, ...]]:
        clauses: list[sql.Composable] = []
        params: list[Any] = []
        if now is not None:
            clauses.append(sql.SQL("expires_at > %s"))
            params.append(now)
        if name is not None:
            clauses.append(sql.SQL("name = %s"))
            params.append(name)
        if tool is not None:
            clauses.append(sql.SQL("tools @> jsonb_build_array(jsonb_build_object('name', %s::text))"))
            params.append(tool)
        # Governance filters compare case-insensitively: "EU" and "eu" name the same jurisdiction.
        for key, value in zip(_GOVERNANCE_KEYS, (owner, jurisdiction, data_class), strict=True):
            if value is not None:
                clauses.append(sql.SQL("lower(metadata ->> {}) = lower(%s)").format(sql.Literal(key)))
                params.append(value)
        where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("")
        query = sql.SQL("SELECT {} FROM agents{} ORDER BY name, instance").format(sql.SQL(_COLUMNS), where)
        with self._db.connection() as conn:
            return conn.execute(query, params).fetchall()
