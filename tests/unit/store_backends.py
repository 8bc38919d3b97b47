"""The registry's stores on either backend, for tests that must pass on both (SQLite and PostgreSQL).

A `Backend` opens stores on one database: a SQLite file in the test's folder, or a fresh database
in the run's throwaway PostgreSQL cluster (started only when a PostgreSQL case runs). Each store it
opens has connections of its own, so two stores of one kind are two registry replicas.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Generator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import psycopg
import pytest

from mesh.identity import MeshKeys
from registry.audit import AuditLog
from registry.inventory import Inventory
from registry.pg import PgDatabase
from registry.pg_approvals import PgApprovals
from registry.pg_audit import PgAuditLog
from registry.pg_inventory import PgInventory
from registry.sqlite_approvals import SqliteApprovals
from registry.stores import ApprovalStore, AuditStore, InventoryStore

BACKENDS = ("sqlite", "postgresql")
Kind = Literal["sqlite", "postgresql"]


class Backend:
    """Opens stores of one database and closes them all at the end of the test."""

    def __init__(self, kind: Kind, db: str, *, mesh: str = "acme") -> None:
        self.kind = kind
        self.db = db
        self.mesh = mesh
        self._closers: list[Callable[[], None]] = []

    def database(self) -> PgDatabase:
        """A new pool on the PostgreSQL database: what one registry process holds."""
        assert self.kind == "postgresql"
        database = PgDatabase(self.db, mesh=self.mesh)
        self._closers.append(database.close)
        return database

    def inventory(self) -> InventoryStore:
        """An inventory store (a replica of its own on PostgreSQL)."""
        store = Inventory(self.db) if self.kind == "sqlite" else PgInventory(self.database())
        self._closers.append(store.close)
        return store

    def approvals(self) -> ApprovalStore:
        """An approvals store (a replica of its own on PostgreSQL)."""
        store = SqliteApprovals(self.db) if self.kind == "sqlite" else PgApprovals(self.database())
        self._closers.append(store.close)
        return store

    def audit(self, keys: MeshKeys, *, clock: Callable[[], float] = time.time) -> AuditStore:
        """A governance record (a replica of its own on PostgreSQL)."""
        if self.kind == "sqlite":
            store: AuditStore = AuditLog(self.db, keys, clock=clock)
        else:
            store = PgAuditLog(self.database(), keys, clock=clock)
        self._closers.append(store.close)
        return store

    def edit(self, statement: str, *args: Any) -> None:
        """Run one statement on the database behind the stores' backs (`?` placeholders), as a tamperer would."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.db) as db:
                db.execute(statement, args)
            return
        with psycopg.connect(self.db, autocommit=True) as conn:
            conn.execute(statement.replace("?", "%s"), args)  # pyright: ignore[reportArgumentType, reportCallIssue]

    def rows(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        """The rows of one query run on the database behind the stores' backs (`?` placeholders)."""
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.db)) as db:
                return db.execute(query, args).fetchall()
        with psycopg.connect(self.db, autocommit=True) as conn:
            return conn.execute(query.replace("?", "%s"), args).fetchall()  # pyright: ignore[reportArgumentType, reportCallIssue]

    def close(self) -> None:
        """Close every store and database opened, newest first."""
        while self._closers:
            self._closers.pop()()


@contextmanager
def opened(request: pytest.FixtureRequest, tmp_path: Path) -> Generator[Backend]:
    """The backend `request.param` names, on a fresh database; closed afterwards."""
    kind: Kind = request.param
    db = str(tmp_path / "registry.sqlite3") if kind == "sqlite" else str(request.getfixturevalue("pg_url"))
    backend = Backend(kind, db)
    try:
        yield backend
    finally:
        backend.close()
