"""Which database the registry keeps its inventory, approvals and governance record in: `open_stores`.

Owns the one choice between backends: a `postgresql://` URL (from `--db` or MESH_REGISTRY_DB) means
PostgreSQL, shared by every replica of the mesh; a path, or nothing, means the SQLite file (the
embedded default, under MESH_HOME). PostgreSQL's driver is imported only when asked for. The stores
are called through `Stores.calls`, off the event loop, at most as many at once as the database serves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mesh.identity import MeshKeys
from registry.store_calls import StoreCalls
from registry.stores import ApprovalStore, AuditStore, InventoryStore

__all__ = ["Stores", "is_postgres", "open_stores"]


@dataclass(frozen=True, slots=True)
class Stores:
    """The registry's three stores on one database, how to call them, and how to say where that is."""

    inventory: InventoryStore
    approvals: ApprovalStore
    audit: AuditStore
    where: str
    """The file, or the URL without its password."""
    sqlite_path: Path | None
    """The SQLite file, when that is the backend (other SQLite files of the registry sit beside it)."""
    _close: Callable[[], None]
    calls: StoreCalls = field(default_factory=StoreCalls)
    """Makes the stores' (blocking) calls in worker threads, as many at once as the database serves."""

    def close(self) -> None:
        """Close every store and the database."""
        self._close()


def open_stores(db: str | None, *, mesh: str, keys: MeshKeys, default_path: Path) -> Stores:
    """Open the stores at `db`: a PostgreSQL URL, a SQLite path, or None (the SQLite file `default_path`).

    Raises StoreUnavailable (PostgreSQL unreachable) or ConfigError (a newer layout, another mesh's
    database), each one line.
    """
    if is_postgres(db):
        assert db is not None
        return _postgres(db, mesh, keys)
    return _sqlite(Path(db) if db else default_path, keys)


def is_postgres(db: str | None) -> bool:
    """True when `db` names a PostgreSQL database (a postgresql:// or postgres:// URL)."""
    return db is not None and db.startswith(("postgresql://", "postgres://"))


def _sqlite(path: Path, keys: MeshKeys) -> Stores:
    from registry.audit import AuditLog
    from registry.inventory import Inventory
    from registry.sqlite_approvals import SqliteApprovals

    inventory = Inventory(path)
    try:
        audit = AuditLog(path, keys)
        try:
            approvals = SqliteApprovals(path)
        except BaseException:
            audit.close()
            raise
    except BaseException:
        inventory.close()
        raise

    def close() -> None:
        approvals.close()
        audit.close()
        inventory.close()

    return Stores(inventory, approvals, audit, str(path), path, close)


def _postgres(url: str, mesh: str, keys: MeshKeys) -> Stores:
    from registry.pg import PgDatabase
    from registry.pg_approvals import PgApprovals
    from registry.pg_audit import PgAuditLog
    from registry.pg_inventory import PgInventory

    calls = StoreCalls()
    # Room beyond the store threads: span intake appends the governance record from its own, and the
    # mesh map reads the inventory from anyio's default ones.
    database = PgDatabase(url, mesh=mesh, pool_size=calls.threads + 2)
    try:
        stores = Stores(
            PgInventory(database),
            PgApprovals(database),
            PgAuditLog(database, keys),
            database.where,
            None,
            database.close,
            calls,
        )
    except BaseException:
        database.close()
        raise
    return stores
