"""Layout versions of the registry's SQLite file: a `schema_version` row per store, upgraded on open.

Owns the `schema_version` table (component, version) that the inventory, the approvals queue and
the governance record share in one file, the upgrade on open (in one write transaction, so two
processes opening an old file at once upgrade it once) and the refusal of a newer layout. A file
from before versions existed reads as version 0: its tables are made if missing, then upgraded.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Final

from registry.stores import refuse_newer

__all__ = ["prepare", "columns_of"]

_TABLE: Final = "CREATE TABLE IF NOT EXISTS schema_version (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"


def prepare(
    db: sqlite3.Connection,
    component: str,
    version: int,
    create: Sequence[str],
    upgrade: Callable[[sqlite3.Connection, int], None] | None = None,
    *,
    where: str,
) -> None:
    """Bring `component`'s tables in `db` (autocommit mode) to layout `version`, or refuse a newer one.

    `create` makes the current layout from nothing (`IF NOT EXISTS`); `upgrade(db, found)` brings
    tables of an older layout `found` up to date.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(_TABLE)
        row = db.execute("SELECT version FROM schema_version WHERE component = ?", (component,)).fetchone()
        found = int(row[0]) if row else 0
        refuse_newer(component, found, version, where)
        if found < version:
            for statement in create:
                db.execute(statement)
            if upgrade is not None:
                upgrade(db, found)
            db.execute(
                "INSERT INTO schema_version (component, version) VALUES (?, ?) "
                "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                (component, version),
            )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def columns_of(db: sqlite3.Connection, table: str) -> set[str]:
    """The column names of `table`."""
    return {str(row[1]) for row in db.execute(f"PRAGMA table_info({table})")}
