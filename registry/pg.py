"""One PostgreSQL database behind the registry's stores: its pool, its layout versions, its outages.

Owns the connection pool (psycopg 3), the `schema_version` and `registry_mesh` tables, the
advisory-lock keys the stores share, LISTEN connections, and what an outage looks like: a call
that finds the database gone fails at once with StoreUnavailable (the API answers 503), later calls
fail without waiting, and a background thread opens a fresh pool as soon as the database answers
again. The stores' own SQL lives in `registry.pg_inventory`, `pg_approvals` and `pg_audit`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Generator, Mapping, Sequence
from contextlib import contextmanager
from typing import Final, LiteralString, Self, final
from urllib.parse import urlsplit, urlunsplit

import anyio
import psycopg
from anyio.abc import TaskStatus
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from mesh.errors import ConfigError
from mesh.text import one_line
from registry.stores import StoreUnavailable, Wake, refuse_newer

__all__ = ["AUDIT_LOCK", "SWEEP_LOCK", "Connection", "PgDatabase", "channel", "redacted"]

log = logging.getLogger(__name__)

Connection = psycopg.Connection[TupleRow]

SCHEMA_LOCK: Final = 0x6167_7078_0001
"""Advisory lock held while a replica makes or upgrades the tables (two starting at once upgrade once)."""
SWEEP_LOCK: Final = 0x6167_7078_0002
"""Advisory lock held while a replica closes expired or abandoned approvals: one replica at a time."""
AUDIT_LOCK: Final = 0x6167_7078_0003
"""Advisory lock held while a replica appends to the governance record: one chain, whoever writes."""

_RETRY: Final = 0.5
"""Seconds between attempts to reach a lost database (the pool's own backoff grows to minutes)."""

_DEFAULTS: Final[Mapping[str, str]] = {
    "application_name": "agentplex registry",
    # A lost host must fail a call within seconds, not after TCP's quarter of an hour.
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",
    "options": "-c statement_timeout=15000",
}
"""Connection settings the URL may override."""

_VERSIONS: Final = "CREATE TABLE IF NOT EXISTS schema_version (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
_MESH: Final = "CREATE TABLE IF NOT EXISTS registry_mesh (id INTEGER PRIMARY KEY CHECK (id = 1), mesh TEXT NOT NULL)"


def redacted(url: str) -> str:
    """`url` without its password, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def channel(topic: str, mesh: str) -> str:
    """The NOTIFY channel for `topic` in `mesh`: readable, or hashed to fit PostgreSQL's 63-byte names."""
    name = f"agentplex.{topic}.{mesh}"
    if len(name.encode()) <= 63:
        return name
    return f"agentplex.{topic}.{hashlib.sha256(mesh.encode()).hexdigest()[:32]}"


@final
class PgDatabase:
    """A pool of connections to one mesh's database, opened (and claimed for `mesh`) on construction.

    Raises StoreUnavailable (one line) when the database cannot be reached, ConfigError when it
    belongs to another mesh. Thread-safe.
    """

    def __init__(self, url: str, *, mesh: str, connect_timeout: float = 5.0, pool_size: int = 4) -> None:
        self.mesh = mesh
        self.where = redacted(url)
        self._timeout = connect_timeout
        self._size = pool_size
        try:
            given = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise ConfigError(f"--db {self.where} is not a PostgreSQL URL: {one_line(exc)}") from None
        settings = {**_DEFAULTS, "connect_timeout": str(max(1, round(connect_timeout)))}
        self._conninfo = make_conninfo(url, **{k: v for k, v in settings.items() if k not in given})
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._why = ""
        self._recovering: threading.Thread | None = None
        self._claim()
        pool = self._new_pool()
        try:
            pool.open(wait=True, timeout=connect_timeout)
        except psycopg.OperationalError as exc:
            pool.close()
            raise StoreUnavailable(f"cannot use PostgreSQL at {self.where}: {one_line(exc)}") from None
        self._pool: ConnectionPool[Connection] | None = pool

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pool and stop waiting for a lost database; later calls raise StoreUnavailable."""
        self._closed.set()
        with self._lock:
            pool, self._pool = self._pool, None
            self._why = "the store is closed"
            recovering = self._recovering
        if pool is not None:
            pool.close()
        if recovering is not None:
            recovering.join(self._timeout + 1)

    @property
    def available(self) -> bool:
        """False while the database is known to be lost (calls fail at once)."""
        return self._pool is not None

    @contextmanager
    def connection(self) -> Generator[Connection]:
        """A pooled connection in autocommit mode; StoreUnavailable when the database cannot answer."""
        pool = self._pool
        if pool is None:
            raise StoreUnavailable(self._unavailable())
        try:
            conn = pool.getconn()
        except psycopg.OperationalError as exc:  # PoolTimeout, PoolClosed
            raise self._lost(pool, exc) from None
        try:
            yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if conn.broken or conn.closed:
                raise self._lost(pool, exc) from None
            raise StoreUnavailable(f"PostgreSQL at {self.where} failed: {one_line(exc)}") from None
        finally:
            pool.putconn(conn)

    @contextmanager
    def transaction(self, *locks: int) -> Generator[Connection]:
        """A connection inside a transaction, holding the advisory `locks` (in order) until it ends."""
        with self.connection() as conn, conn.transaction():
            for key in locks:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
            yield conn

    def prepare(
        self,
        component: str,
        version: int,
        create: Sequence[LiteralString],
        upgrades: Mapping[int, Sequence[LiteralString]] | None = None,
    ) -> None:
        """Bring `component`'s tables to layout `version` (ConfigError if the database holds a newer one).

        `create` makes the layout from nothing; `upgrades[n]` brings layout n to n + 1.
        """
        with self.transaction(SCHEMA_LOCK) as conn:
            conn.execute(_VERSIONS)
            row = conn.execute("SELECT version FROM schema_version WHERE component = %s", (component,)).fetchone()
            found = int(row[0]) if row else 0
            refuse_newer(component, found, version, f"PostgreSQL at {self.where}")
            if found == version:
                return
            later = upgrades or {}
            steps: Sequence[LiteralString] = (
                create if found == 0 else [step for n in range(found, version) for step in later[n]]
            )
            for statement in steps:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (component, version) VALUES (%s, %s) "
                "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                (component, version),
            )

    def channel(self, topic: str) -> str:
        """The NOTIFY channel for `topic` in this mesh."""
        return channel(topic, self.mesh)

    async def listen(
        self, channel: str, wake: Wake, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Call `wake(payload)` for each NOTIFY on `channel` until cancelled, on a connection of its own.

        After every (re)connection it calls `wake(None)`: what was sent while it listened nowhere is
        found by reading again. Ready (task_status) once listening, or after a first failed attempt.
        """
        started = False
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
            except psycopg.Error as exc:
                log.debug("cannot listen on %s: %s", self.where, one_line(exc))
            else:
                try:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    if not started:
                        started = True
                        task_status.started()
                    wake(None)
                    async for note in conn.notifies():
                        wake(note.payload)
                except psycopg.Error as exc:  # lost, closed under it, or refused: listen again
                    log.debug("stopped listening on %s: %s", self.where, one_line(exc))
                finally:
                    with anyio.CancelScope(shield=True):
                        await conn.close()
            if not started:
                started = True
                task_status.started()
            await anyio.sleep(_RETRY)

    def _claim(self) -> None:
        """Connect once (the error at start is one line) and make sure the database is this mesh's."""
        try:
            with psycopg.connect(self._conninfo, autocommit=True) as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                conn.execute(_MESH)
                conn.execute("INSERT INTO registry_mesh (id, mesh) VALUES (1, %s) ON CONFLICT DO NOTHING", (self.mesh,))
                row = conn.execute("SELECT mesh FROM registry_mesh WHERE id = 1").fetchone()
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"cannot reach PostgreSQL at {self.where}: {one_line(exc)}") from None
        except psycopg.Error as exc:
            raise ConfigError(f"cannot use PostgreSQL at {self.where}: {one_line(exc)}") from None
        owner = str(row[0]) if row else self.mesh
        if owner != self.mesh:
            raise ConfigError(
                f"PostgreSQL at {self.where} holds mesh '{owner}', not '{self.mesh}': give each mesh its own database"
            )

    def _new_pool(self) -> ConnectionPool[Connection]:
        return ConnectionPool(
            self._conninfo,
            kwargs={"autocommit": True},
            min_size=1,
            max_size=self._size,
            open=False,
            name=f"agentplex-{self.mesh}",
            timeout=self._timeout,
        )

    def _unavailable(self) -> str:
        return f"PostgreSQL at {self.where} is unavailable ({self._why}); retry shortly"

    def _lost(self, pool: ConnectionPool[Connection], exc: BaseException) -> StoreUnavailable:
        """Stop using `pool` (once) and wait in the background for the database to answer again."""
        with self._lock:
            if self._pool is pool:
                self._pool = None
                self._why = one_line(exc)
                log.warning("lost PostgreSQL at %s: %s; answering 503 until it is back", self.where, self._why)
                self._recovering = threading.Thread(
                    target=self._recover, args=(pool,), name="agentplex-pg-recover", daemon=True
                )
                self._recovering.start()
        return StoreUnavailable(self._unavailable())

    def _recover(self, lost: ConnectionPool[Connection]) -> None:
        lost.close()
        while not self._closed.wait(_RETRY):
            try:
                psycopg.connect(self._conninfo, autocommit=True).close()
            except psycopg.OperationalError as exc:
                self._why = one_line(exc)
                continue
            pool = self._new_pool()
            try:
                pool.open(wait=True, timeout=self._timeout)
            except psycopg.OperationalError:
                pool.close(timeout=0)
                continue
            with self._lock:
                if self._closed.is_set():
                    pool.close(timeout=0)
                    return
                self._pool = pool
                self._recovering = None
            log.warning("PostgreSQL at %s is back", self.where)
            return
