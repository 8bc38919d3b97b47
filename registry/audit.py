"""The governance record: an append-only, MAC-chained table in the registry's database, and its routes.

Owns the `audit` table (one row an entry), the `audit_head` row (the last entry, MACed apart), how
new entries link to the stored chain (`Chain`, shared with `registry.pg_audit`), the SQLite
`AuditStore`, and `GET /api/audit` (JSON Lines) and `GET /api/audit/head`, both for admin tokens
only. What is recorded comes from the approvals queue and the tracer; the chain's rules and checks
are `mesh.audit`; `mesh audit verify` checks the chain where the secret is, in the CLI.
"""

from __future__ import annotations

import hmac
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, final

from mcp.server.mcpserver import MCPServer
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mesh.audit import GENESIS, canonical, entry_mac, head_of
from mesh.errors import IdentityError
from mesh.identity import MeshKeys
from mesh.wire import AuditHead, AuditRecord
from registry.sqlite_schema import prepare
from registry.stores import AuditStore

__all__ = ["MAX_PAGE", "AuditLog", "Chain", "Entry", "entries", "install_audit", "parsed", "stored_head"]

log = logging.getLogger(__name__)

MAX_PAGE: Final = 10_000
"""The most entries one GET /api/audit answers; clients page on with `after`."""

_LOST: Final = "head-lost"
"""The `prev` of an entry appended after the head was found missing or altered: the break stays visible."""

_VERSION: Final = 1
"""The layout `_SCHEMA` makes (the `audit` row of `schema_version`)."""
_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS audit (
        seq INTEGER PRIMARY KEY, at REAL NOT NULL, kind TEXT NOT NULL, key TEXT UNIQUE,
        record TEXT NOT NULL, prev TEXT NOT NULL, mac TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS audit_at ON audit(at)",
    """CREATE TABLE IF NOT EXISTS audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, mac TEXT NOT NULL, sig TEXT NOT NULL
    )""",
)
# Typed on the way out, so that an edited cell reads as an altered entry instead of failing the export.
_SELECT: Final = (
    "SELECT seq, COALESCE(CAST(at AS REAL), 0.0), COALESCE(CAST(kind AS TEXT), ''), "
    "COALESCE(CAST(record AS TEXT), ''), COALESCE(CAST(prev AS TEXT), ''), COALESCE(CAST(mac AS TEXT), '') "
    "FROM audit"
)

Entry = tuple[str, str, str | None]
"""One entry to append: its kind, its canonical record, its redelivery key (or None)."""
Row = tuple[int, float, str, str | None, str, str, str]
"""One stored entry: seq, at, kind, key, record, prev, mac (the audit table's columns, in order)."""


@final
class AuditLog:
    """The governance record in SQLite: thread-safe appends, each chained to the last by a keyed MAC."""

    def __init__(self, path: str | Path, keys: MeshKeys, *, clock: Callable[[], float] = time.time) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            prepare(self._db, "audit", _VERSION, _SCHEMA, where=str(path))
        except BaseException:
            self._db.close()
            raise
        self._keys = keys
        self._clock = clock
        self._lock = threading.Lock()
        self._chain = Chain(keys)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def append(self, kind: str, record: Mapping[str, Any]) -> None:
        """Append one entry; a record whose "key" is already stored is skipped (a redelivery)."""
        self._append(entries([(kind, record)]))

    def append_many(self, records: Iterable[Mapping[str, Any]], *, kind: str) -> None:
        """Append `records` of one kind in one transaction, skipping those whose "key" is already stored."""
        self._append(entries((kind, record) for record in records))

    def read(self, *, since: float | None = None, after: int = 0, limit: int = 1000) -> list[AuditRecord]:
        """Entries after seq `after` (and appended at or after `since`), oldest first, at most `limit`."""
        query, args = f"{_SELECT} WHERE seq > ?", [after]
        if since is not None:
            query, args = query + " AND at >= ?", [after, since]
        with self._lock:
            rows = self._db.execute(query + " ORDER BY seq LIMIT ?", (*args, max(0, min(limit, MAX_PAGE)))).fetchall()
        return [
            AuditRecord(seq=seq, at=at, kind=kind, record=parsed(text), prev=prev, mac=mac)
            for seq, at, kind, text, prev, mac in rows
        ]

    def head(self) -> AuditHead | None:
        """The stored head, as it is (the CLI checks its signature), or None when there is none."""
        with self._lock:
            row = self._db.execute("SELECT seq, mac, sig FROM audit_head WHERE id = 1").fetchone()
        return stored_head(row)

    def _append(self, texts: list[Entry]) -> None:
        if not texts:
            return
        at = round(self._clock(), 6)
        keys = [key for _, _, key in texts if key is not None]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                (last,) = self._db.execute("SELECT max(seq) FROM audit").fetchone()
                head = self._db.execute("SELECT seq, mac, sig FROM audit_head WHERE id = 1").fetchone()
                marks = ",".join("?" * len(keys))
                stored = {k for (k,) in self._db.execute(f"SELECT key FROM audit WHERE key IN ({marks})", keys)}
                rows, new_head = self._chain.link(texts, at, last=last, head=head, stored=stored)
                self._db.executemany(
                    "INSERT INTO audit (seq, at, kind, key, record, prev, mac) VALUES (?, ?, ?, ?, ?, ?, ?)", rows
                )
                if new_head is not None:
                    self._db.execute(
                        "INSERT INTO audit_head (id, seq, mac, sig) VALUES (1, ?, ?, ?) "
                        "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, mac = excluded.mac, sig = excluded.sig",
                        (new_head.seq, new_head.mac, new_head.sig),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise


@final
class Chain:
    """How new entries link to the stored chain, the same for every backend (which holds the write lock)."""

    def __init__(self, keys: MeshKeys) -> None:
        self._keys = keys
        self._warned = False

    def link(
        self, texts: Sequence[Entry], at: float, *, last: object, head: Sequence[object] | None, stored: set[str]
    ) -> tuple[list[Row], AuditHead | None]:
        """The rows to insert for `texts` (those whose key is in `stored`, or repeated, skipped) and the new head.

        `last` is the highest stored seq (None: no entry), `head` the stored head row (seq, mac, sig).
        """
        seq, prev = self._tip(last if isinstance(last, int) else None, head)
        rows: list[Row] = []
        seen = set(stored)
        for kind, text, key in texts:
            if key is not None:
                if key in seen:
                    continue
                seen.add(key)
            seq += 1
            mac = entry_mac(self._keys, seq, at, kind, text, prev)
            rows.append((seq, at, kind, key, text, prev, mac))
            prev = mac
        return rows, (head_of(self._keys, seq, prev) if rows else None)

    def _tip(self, last: int | None, head: Sequence[object] | None) -> tuple[int, str]:
        """The seq and MAC to chain the next entry to: the signed head's, never merely the last row's.

        Chaining to the last row would heal a cut-off end; a head found missing or altered leaves
        the next entry linked to _LOST, so `mesh audit verify` keeps reporting the break.
        """
        signed = self._signed(head) if head is not None else None
        if signed is not None:
            seq, mac = signed
            return max(seq, last or 0), mac
        if last is None and head is None:
            return 0, GENESIS
        if not self._warned:
            self._warned = True
            log.error("the governance record's head is missing or altered; `mesh audit verify` will report the break")
        return last or 0, _LOST

    def _signed(self, head: Sequence[object]) -> tuple[int, str] | None:
        """The head's seq and MAC when its signature holds (its cells may have been edited to anything)."""
        seq, mac, sig = head
        if not (isinstance(seq, int) and isinstance(mac, str) and isinstance(sig, str)):
            return None
        return (seq, mac) if hmac.compare_digest(head_of(self._keys, seq, mac).sig, sig) else None


def entries(items: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Entry]:
    """Records to append as (kind, canonical text, key); ValueError for a bad kind or a record that is not JSON."""
    return [(_checked_kind(kind), canonical(record), _key_of(record)) for kind, record in items]


def stored_head(row: Sequence[object] | None) -> AuditHead | None:
    """The head a stored row (seq, mac, sig) holds, as it is."""
    if row is None:
        return None
    seq, mac, sig = row
    return AuditHead(seq=_int(seq), mac=str(mac), sig=str(sig))


def install_audit(server: MCPServer, log: AuditStore, keys: MeshKeys) -> None:
    """Add `GET /api/audit` (JSON Lines, `since`/`after`/`limit`) and `GET /api/audit/head`, for admins."""

    @server.custom_route("/api/audit", methods=["GET"])
    async def export(request: Request) -> Response:
        refused = _refusal(request, keys)
        if refused is not None:
            return refused
        query = request.query_params
        try:
            since = float(query["since"]) if query.get("since") else None
            after = int(query.get("after") or 0)
            limit = int(query.get("limit") or 1000)
        except ValueError:
            return _error(400, "since is epoch seconds; after and limit are whole numbers")
        lines = "".join(json.dumps(r.model_dump()) + "\n" for r in log.read(since=since, after=after, limit=limit))
        return Response(lines, media_type="application/x-ndjson")

    @server.custom_route("/api/audit/head", methods=["GET"])
    async def head(request: Request) -> Response:
        refused = _refusal(request, keys)
        if refused is not None:
            return refused
        found = log.head()
        return JSONResponse(found.model_dump() if found else None)


def _refusal(request: Request, keys: MeshKeys) -> Response | None:
    """None for an admin's registry token; else the 401 or 403 that says why not."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _error(401, "no mesh token: send 'Authorization: Bearer <token>' of role admin")
    try:
        claims = keys.verify(token.strip(), audience="registry")
    except IdentityError as exc:
        return _error(401, str(exc))
    if claims.role != "admin":
        return _error(403, f"a token of role '{claims.role}' cannot read the governance record; an admin's can")
    return None


def _checked_kind(kind: str) -> str:
    if not kind or not kind.isprintable():
        raise ValueError(f"an audit entry's kind must be printable text, not {kind!r}")
    return kind


def _key_of(record: Mapping[str, Any]) -> str | None:
    key = record.get("key")
    return key if isinstance(key, str) and key else None


def parsed(text: str) -> dict[str, Any]:
    """The stored record; text that is no longer a JSON object is shown as it is (its MAC will not match)."""
    try:
        value = json.loads(text)
    except ValueError:
        return {"unreadable": text}
    return value if isinstance(value, dict) else {"unreadable": text}  # pyright: ignore[reportUnknownVariableType]


def _int(value: object) -> int:
    try:
        return int(value)  # pyright: ignore[reportArgumentType]
    except (TypeError, ValueError):
        return 0


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)
