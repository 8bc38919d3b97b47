"""The approvals queue: human decisions on calls that no interactive client can answer.

Owns the `approvals` table (the audit record of every request and answer) and its routes:
agents file requests and wait on them (long-poll), people list and decide them (`mesh
approvals`, the web page). A request that nobody decides before its expiry is expired.
Writes need a mesh token for audience "registry"; reads need none (loopback by default).
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Final, final

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mesh.errors import IdentityError
from mesh.identity import MeshKeys
from mesh.wire import Approval, ApprovalDecision, ApprovalRequest

__all__ = ["ApprovalQueue", "install_approvals"]

MAX_WAIT: Final = 30.0
"""Longest a long-poll holds a request open (seconds)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY, agent TEXT NOT NULL, tool TEXT NOT NULL, caller TEXT NOT NULL,
    arguments_digest TEXT NOT NULL, requested_at REAL NOT NULL, expires_at REAL NOT NULL,
    status TEXT NOT NULL, trace_id TEXT, decided_by TEXT, decided_at REAL, reason TEXT, summary TEXT
);
CREATE INDEX IF NOT EXISTS approvals_status ON approvals(status, requested_at);
"""


@final
class ApprovalQueue:
    """The approvals table, with an event per pending request for long-polls."""

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._waiters: dict[str, anyio.Event] = {}

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def file(self, request: ApprovalRequest, now: float) -> Approval:
        """Store a request (or an answer given elsewhere) and return it."""
        decided = request.status != "pending"
        row = Approval(
            id=uuid.uuid4().hex[:12],
            agent=request.agent,
            tool=request.tool,
            caller=request.caller,
            arguments_digest=request.arguments_digest,
            requested_at=now,
            expires_at=request.expires_at,
            status=request.status,
            trace_id=request.trace_id,
            decided_by=request.decided_by if decided else None,
            decided_at=now if decided else None,
            reason=request.reason,
        )
        with self._lock:
            self._db.execute(
                "INSERT INTO approvals VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (*row.model_dump(exclude={"summary"}).values(), request.summary),
            )
        return row

    def get(self, approval_id: str, now: float) -> Approval | None:
        """One approval, expiring it first if its time is up."""
        self._expire(now)
        with self._lock:
            found = self._db.execute("SELECT * FROM approvals WHERE id = ?", (approval_id,)).fetchone()
        return _row(found) if found else None

    def list(self, now: float, *, status: str | None = None, limit: int = 100) -> list[Approval]:
        """Approvals, newest first, optionally of one status."""
        self._expire(now)
        query, args = "SELECT * FROM approvals", []
        if status:
            query, args = query + " WHERE status = ?", [status]
        with self._lock:
            rows = self._db.execute(query + " ORDER BY requested_at DESC LIMIT ?", (*args, limit)).fetchall()
        return [_row(r) for r in rows]

    def decide(self, approval_id: str, decision: ApprovalDecision, by: str, now: float) -> Approval | None:
        """Record a person's answer to a pending request; None if there is no such pending request."""
        self._expire(now)
        status = "approved" if decision.decision == "approve" else "denied"
        with self._lock:
            changed = self._db.execute(
                "UPDATE approvals SET status=?, decided_by=?, decided_at=?, reason=? WHERE id=? AND status='pending'",
                (status, by, now, decision.reason, approval_id),
            ).rowcount
        if changed:
            self._wake(approval_id)
        return self.get(approval_id, now) if changed else None

    async def wait(self, approval_id: str, timeout: float) -> Approval | None:
        """The approval once decided or expired, or as it stands after `timeout` seconds."""
        deadline = time.time() + timeout
        while True:
            now = time.time()
            current = self.get(approval_id, now)
            if current is None or current.status != "pending" or now >= deadline:
                return current
            event = self._waiters.setdefault(approval_id, anyio.Event())
            with anyio.move_on_after(min(deadline, current.expires_at) - now + 0.01):
                await event.wait()

    def _wake(self, approval_id: str) -> None:
        event = self._waiters.pop(approval_id, None)
        if event is not None:
            event.set()

    def _expire(self, now: float) -> None:
        with self._lock:
            expired = self._db.execute(
                "SELECT id FROM approvals WHERE status='pending' AND expires_at < ?", (now,)
            ).fetchall()
            if expired:
                self._db.execute(
                    "UPDATE approvals SET status='expired', decided_at=?, reason='nobody decided before expiry' "
                    "WHERE status='pending' AND expires_at < ?",
                    (now, now),
                )
        for (approval_id,) in expired:
            self._wake(approval_id)


def install_approvals(server: MCPServer, queue: ApprovalQueue, keys: MeshKeys) -> None:
    """Add the `/api/approvals` routes and the `list_approvals` MCP tool to the registry's server."""

    def claims_of(request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise IdentityError("no mesh token: send 'Authorization: Bearer <token>' (see `mesh token`)")
        return keys.verify(token.strip(), audience="registry").caller

    @server.custom_route("/api/approvals", methods=["GET", "POST"])
    async def approvals(request: Request) -> Response:
        now = time.time()
        if request.method == "GET":
            status = request.query_params.get("status") or None
            return _ok([a.model_dump(mode="json") for a in queue.list(now, status=status)])
        try:
            caller = claims_of(request)
            filed = ApprovalRequest.model_validate_json(await request.body())
        except IdentityError as exc:
            return _error(401, str(exc))
        except ValidationError as exc:
            return _error(422, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
        if caller != filed.agent:
            return _error(401, f"a token of '{caller}' may not file approvals for '{filed.agent}'")
        return _ok(queue.file(filed, now).model_dump(mode="json"), status=201)

    @server.custom_route("/api/approvals/{approval_id}", methods=["GET"])
    async def one(request: Request) -> Response:
        approval_id = request.path_params["approval_id"]
        try:
            wait = min(float(request.query_params.get("wait", "0")), MAX_WAIT)
        except ValueError:
            return _error(400, "wait must be a number of seconds")
        found = await queue.wait(approval_id, wait) if wait > 0 else queue.get(approval_id, time.time())
        return _ok(found.model_dump(mode="json")) if found else _error(404, f"no approval {approval_id}")

    @server.custom_route("/api/approvals/{approval_id}/decision", methods=["POST"])
    async def decide(request: Request) -> Response:
        approval_id = request.path_params["approval_id"]
        try:
            by = claims_of(request)
            decision = ApprovalDecision.model_validate_json(await request.body())
        except IdentityError as exc:
            return _error(401, str(exc))
        except ValidationError as exc:
            return _error(422, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
        decided = queue.decide(approval_id, decision, by, time.time())
        if decided is None:
            current = queue.get(approval_id, time.time())
            if current is None:
                return _error(404, f"no approval {approval_id}")
            return _error(409, f"approval {approval_id} is already {current.status}")
        return _ok(decided.model_dump(mode="json"))

    async def list_approvals(status: str | None = "pending") -> list[dict[str, Any]]:
        return [a.model_dump(mode="json") for a in queue.list(time.time(), status=status)]

    server.add_tool(
        list_approvals,
        name="list_approvals",
        description="Human approvals of risky calls: who asked to run which tool, and what was decided.",
        annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True),
    )


_COLUMNS: Final = (
    "id",
    "agent",
    "tool",
    "caller",
    "arguments_digest",
    "requested_at",
    "expires_at",
    "status",
    "trace_id",
    "decided_by",
    "decided_at",
    "reason",
)


def _row(row: tuple[Any, ...]) -> Approval:
    return Approval.model_validate(dict(zip(_COLUMNS, row[: len(_COLUMNS)], strict=True)))


def _ok(body: Any, status: int = 200) -> Response:
    return JSONResponse(body, status_code=status)


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)
