"""The approvals queue: human decisions on calls that no interactive client can answer.

Owns the `approvals` table (the audit record of every request and answer) and its routes:
agents file requests and wait on them (long-poll), people list and decide them (`mesh
approvals`, the web page). A request that nobody decides before its expiry is expired.
Filing and cancelling need the filing agent's own token; deciding needs a person who may
(`may_decide`); reads need none on loopback. Every change is appended to the governance record.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, final

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mesh.errors import IdentityError
from mesh.identity import Claims, MeshKeys
from mesh.wire import Approval, ApprovalDecision, ApprovalRequest, Decider

__all__ = ["ABANDONED_AFTER", "ApprovalQueue", "DecisionRefused", "install_approvals", "may_decide"]

MAX_WAIT: Final = 30.0
"""Longest a long-poll holds a request open (seconds)."""

ABANDONED_AFTER: Final = 10.0
"""Seconds a pending approval may go without its agent waiting on it before it is cancelled."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY, agent TEXT NOT NULL, tool TEXT NOT NULL, caller TEXT NOT NULL,
    arguments_digest TEXT NOT NULL, requested_at REAL NOT NULL, expires_at REAL NOT NULL,
    status TEXT NOT NULL, trace_id TEXT, decided_by TEXT, decided_at REAL, reason TEXT, summary TEXT
);
CREATE INDEX IF NOT EXISTS approvals_status ON approvals(status, requested_at);
"""
_ADDED_COLUMNS: Final = (("requested_by", "TEXT"), ("approvers", "TEXT"), ("decided_groups", "TEXT"))
"""Columns later versions added, in order; an older table gains them on open."""


class DecisionRefused(Exception):
    """Why a decision was not recorded, with the HTTP status that says so."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


Audit = Callable[[str, Mapping[str, Any]], None]
"""Appends one record of a kind ("approval") to the governance record."""


def may_decide(approval: Approval, claims: Claims) -> str | None:
    """None if the holder of `claims` may decide `approval`, else why not (DESIGN §6).

    Only people decide: an approver or admin token naming a person, who is not the person the
    call runs for; where the policy named groups, only their members (admins included).
    """
    if claims.role not in ("approver", "admin"):
        return f"a token of role '{claims.role}' cannot decide approvals; a person's approver token can"
    if not claims.person:
        return "this token names no person; mint one with `mesh token --person NAME --role approver`"
    if approval.requested_by and claims.person == approval.requested_by:
        return f"{claims.person} asked for this call and cannot approve it too"
    if approval.approvers and not set(approval.approvers) & set(claims.groups):
        mine = ", ".join(claims.groups) or "no group"
        return f"only members of {', '.join(approval.approvers)} may decide this; {claims.person} is in {mine}"
    return None


@final
class ApprovalQueue:
    """The approvals table, with an event per pending request for long-polls."""

    def __init__(self, path: str | Path, *, audit: Audit | None = None, clock: Callable[[], float] = time.time) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        present = {row[1] for row in self._db.execute("PRAGMA table_info(approvals)")}
        for column, kind in _ADDED_COLUMNS:
            if column not in present:
                self._db.execute(f"ALTER TABLE approvals ADD COLUMN {column} {kind}")
        self._lock = threading.Lock()
        self._waiters: dict[str, anyio.Event] = {}
        self._audit: Audit = audit or (lambda kind, record: None)
        self._clock = clock
        self._started = clock()
        self._polls: Counter[str] = Counter()
        self._last_poll: dict[str, float] = {}

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
            requested_by=request.requested_by,
            approvers=sorted(set(request.approvers)),
        )
        by = row.decided_by
        with self._lock:
            self._db.execute(
                f"INSERT INTO approvals ({_SELECT}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                (
                    row.id, row.agent, row.tool, row.caller, row.arguments_digest, row.requested_at,
                    row.expires_at, row.status, row.trace_id, by.person if by else None, row.decided_at,
                    row.reason, request.summary, row.requested_by, ",".join(row.approvers),
                    ",".join(by.groups) if by else None,
                ),
            )  # fmt: skip
        self._audit("approval", _record(row, "answered at the origin" if decided else "requested"))
        return row

    def get(self, approval_id: str, now: float) -> Approval | None:
        """One approval, closing it first if its time is up or its call stopped waiting."""
        self._expire(now)
        with self._lock:
            found = self._db.execute(f"SELECT {_SELECT} FROM approvals WHERE id = ?", (approval_id,)).fetchone()
        return _row(found) if found else None

    def list(self, now: float, *, status: str | None = None, limit: int = 100) -> list[Approval]:
        """Approvals, newest first, optionally of one status."""
        self._expire(now)
        query, args = f"SELECT {_SELECT} FROM approvals", []
        if status:
            query, args = query + " WHERE status = ?", [status]
        with self._lock:
            rows = self._db.execute(query + " ORDER BY requested_at DESC LIMIT ?", (*args, limit)).fetchall()
        return [_row(r) for r in rows]

    def decide(self, approval_id: str, decision: ApprovalDecision, claims: Claims, now: float) -> Approval:
        """Record a person's answer to a pending request; DecisionRefused says why it was not."""
        current = self.get(approval_id, now)
        if current is None:
            raise DecisionRefused(404, f"no approval {approval_id}")
        why = may_decide(current, claims)
        if why is not None:
            self._audit("approval", {**_record(current, "decision refused"), "by": claims.person, "why": why})
            raise DecisionRefused(403, why)
        if current.status != "pending":
            raise DecisionRefused(409, f"approval {approval_id} is already {current.status}")
        status = "approved" if decision.decision == "approve" else "denied"
        groups = sorted(set(claims.groups) & set(current.approvers)) if current.approvers else list(claims.groups)
        with self._lock:
            changed = self._db.execute(
                "UPDATE approvals SET status=?, decided_by=?, decided_groups=?, decided_at=?, reason=? "
                "WHERE id=? AND status='pending'",
                (status, claims.person, ",".join(groups), now, decision.reason, approval_id),
            ).rowcount
        decided = self.get(approval_id, now)
        if not changed or decided is None:
            raise DecisionRefused(409, f"approval {approval_id} is already {decided.status if decided else 'gone'}")
        self._wake(approval_id)
        self._audit("approval", _record(decided, status))
        return decided

    def cancel(self, approval_id: str, agent: str, reason: str, now: float) -> Approval:
        """Close `agent`'s own pending request whose call stopped waiting; DecisionRefused if it cannot."""
        current = self.get(approval_id, now)
        if current is None:
            raise DecisionRefused(404, f"no approval {approval_id}")
        if current.agent != agent:
            raise DecisionRefused(403, f"approval {approval_id} was filed by '{current.agent}', not '{agent}'")
        if current.status != "pending":
            return current
        self._close([approval_id], "cancelled", reason, now)
        return self.get(approval_id, now) or current

    async def wait(self, approval_id: str, timeout: float) -> Approval | None:
        """The approval once decided or expired, or as it stands after `timeout` seconds."""
        deadline = time.time() + timeout
        self._polls[approval_id] += 1
        try:
            while True:
                now = time.time()
                current = self.get(approval_id, now)
                if current is None or current.status != "pending" or now >= deadline:
                    return current
                event = self._waiters.setdefault(approval_id, anyio.Event())
                with anyio.move_on_after(min(deadline, current.expires_at) - now + 0.01):
                    await event.wait()
        finally:
            self._polls[approval_id] -= 1
            if self._polls[approval_id] <= 0:
                del self._polls[approval_id]
            self._last_poll[approval_id] = self._clock()

    def _wake(self, approval_id: str) -> None:
        event = self._waiters.pop(approval_id, None)
        if event is not None:
            event.set()

    def _expire(self, now: float) -> None:
        with self._lock:
            pending = self._db.execute(
                "SELECT id, requested_at, expires_at FROM approvals WHERE status='pending'"
            ).fetchall()
        expired = [approval_id for approval_id, _, expires in pending if expires < now]
        if expired:
            self._close(expired, "expired", "nobody decided before expiry", now)
        abandoned = [
            approval_id
            for approval_id, requested, expires in pending
            if expires >= now and self._abandoned(approval_id, requested)
        ]
        if abandoned:
            self._close(abandoned, "cancelled", "its call stopped waiting (refused, out of time, or gone)", now)

    def _abandoned(self, approval_id: str, requested_at: float) -> bool:
        """True when nobody has waited on a pending request here for ABANDONED_AFTER seconds."""
        if self._polls.get(approval_id):
            return False
        seen = max(self._last_poll.get(approval_id, 0.0), requested_at, self._started)
        return self._clock() - seen > ABANDONED_AFTER

    def _close(self, ids: list[str], status: str, reason: str, now: float) -> None:
        marks = ",".join("?" * len(ids))
        with self._lock:
            self._db.execute(
                f"UPDATE approvals SET status=?, decided_at=?, reason=? WHERE status='pending' AND id IN ({marks})",
                (status, now, reason, *ids),
            )
            rows = self._db.execute(f"SELECT {_SELECT} FROM approvals WHERE id IN ({marks})", ids).fetchall()
        for row in rows:
            self._wake(row[0])
            self._last_poll.pop(row[0], None)
            self._audit("approval", _record(_row(row), status))


def install_approvals(server: MCPServer, queue: ApprovalQueue, keys: MeshKeys) -> None:
    """Add the `/api/approvals` routes and the `list_approvals` MCP tool to the registry's server."""

    def claims_of(request: Request) -> Claims:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise IdentityError("no mesh token: send 'Authorization: Bearer <token>' (see `mesh token`)")
        return keys.verify(token.strip(), audience="registry")

    @server.custom_route("/api/approvals", methods=["GET", "POST"])
    async def approvals(request: Request) -> Response:
        now = time.time()
        if request.method == "GET":
            status = request.query_params.get("status") or None
            return _ok([a.model_dump(mode="json") for a in queue.list(now, status=status)])
        try:
            claims = claims_of(request)
            filed = ApprovalRequest.model_validate_json(await request.body())
        except IdentityError as exc:
            return _error(401, str(exc))
        except ValidationError as exc:
            return _error(422, _invalid(exc))
        if claims.role != "agent" or claims.caller != filed.agent:
            return _error(403, f"only agent '{filed.agent}' itself may file its approvals, not '{claims.caller}'")
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
            claims = claims_of(request)
            decision = ApprovalDecision.model_validate_json(await request.body())
            return _ok(queue.decide(approval_id, decision, claims, time.time()).model_dump(mode="json"))
        except IdentityError as exc:
            return _error(401, str(exc))
        except ValidationError as exc:
            return _error(422, _invalid(exc))
        except DecisionRefused as refused:
            return _error(refused.status, str(refused))

    @server.custom_route("/api/approvals/{approval_id}/cancel", methods=["POST"])
    async def cancel(request: Request) -> Response:
        approval_id = request.path_params["approval_id"]
        try:
            claims = claims_of(request)
            if claims.role != "agent":
                return _error(403, "only the agent that filed an approval may cancel it")
            reason = " ".join((await request.body())[:300].decode("utf-8", "replace").split()) or "cancelled"
            return _ok(queue.cancel(approval_id, claims.caller, reason, time.time()).model_dump(mode="json"))
        except IdentityError as exc:
            return _error(401, str(exc))
        except DecisionRefused as refused:
            return _error(refused.status, str(refused))

    async def list_approvals(status: str | None = "pending") -> list[dict[str, Any]]:
        return [a.model_dump(mode="json") for a in queue.list(time.time(), status=status)]

    server.add_tool(
        list_approvals,
        name="list_approvals",
        description="Human approvals of risky calls: who asked to run which tool, and what was decided.",
        annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True),
    )


_COLUMNS: Final = (
    "id", "agent", "tool", "caller", "arguments_digest", "requested_at", "expires_at", "status", "trace_id",
    "decided_by", "decided_at", "reason", "summary", "requested_by", "approvers", "decided_groups",
)  # fmt: skip
_SELECT: Final = ", ".join(_COLUMNS)


def _row(row: tuple[Any, ...]) -> Approval:
    fields = dict(zip(_COLUMNS, row, strict=True))
    person, groups = fields.pop("decided_by"), fields.pop("decided_groups")
    fields["decided_by"] = Decider(person=person, groups=groups.split(",") if groups else []) if person else None
    fields["approvers"] = fields["approvers"].split(",") if fields["approvers"] else []
    return Approval.model_validate(fields)


def _record(approval: Approval, event: str) -> dict[str, Any]:
    """An approval's entry in the governance record."""
    return {
        "event": event,
        **approval.model_dump(mode="json", exclude={"requested_at", "expires_at"}),
    }


def _invalid(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def _ok(body: Any, status: int = 200) -> Response:
    return JSONResponse(body, status_code=status)


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)
