"""The approvals queue: human decisions on calls that no interactive client can answer.

Owns the queue's rules over an `ApprovalStore` (SQLite, or PostgreSQL shared by replicas) and its
routes: agents file requests and wait on them (long-poll), people list and decide them (`mesh
approvals`, the web page). A request that nobody decides before its expiry is expired, one nobody
waits on any more is cancelled. Filing and cancelling need the filing agent's own token; deciding
needs a person who may (`may_decide`); reads need none on loopback, but only an approver's or an
admin's token sees a call's arguments. Every change is appended to the governance record. Store
calls (the governance record's appends included) run off the event loop, through `StoreCalls`.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, Self, final

import anyio
from anyio import AsyncContextManagerMixin
from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mesh.errors import IdentityError
from mesh.identity import Claims, MeshKeys
from mesh.wire import Approval, ApprovalDecision, ApprovalRequest, ApprovalStatus, Decider
from registry.access import bearer_or_session
from registry.store_calls import StoreCalls
from registry.stores import ApprovalStore, Pending

__all__ = [
    "ABANDONED_AFTER",
    "ApprovalQueue",
    "DecisionRefused",
    "install_approvals",
    "may_decide",
    "shown_to",
]

MAX_WAIT: Final = 30.0
"""Longest a long-poll holds a request open (seconds)."""

ABANDONED_AFTER: Final = 10.0
"""Seconds a pending approval may go without its agent waiting on it before it is cancelled."""

MAX_BODY_BYTES: Final = 1024 * 1024
"""Largest approval request accepted (413 beyond): its arguments are stored for the approver."""

SEES_ARGUMENTS: Final = frozenset({"approver", "admin"})
"""Roles whose tokens see a call's arguments; everyone else reads `"arguments": null`."""


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


def shown_to(approval: Approval, claims: Claims | None) -> Approval:
    """`approval` as the holder of `claims` may see it: the call's arguments for approvers and admins only."""
    if approval.arguments is None or (claims is not None and claims.role in SEES_ARGUMENTS):
        return approval
    return approval.model_copy(update={"arguments": None})


@final
class ApprovalQueue(AsyncContextManagerMixin):
    """The queue's rules over an `ApprovalStore`, with an event per pending request for long-polls.

    Usable as it is in one process; entered (`async with`), it also listens for approvals that
    other replicas decide or close, so a call waiting here is released at once. The store and
    `audit` are called through `calls` (default: threads of its own); the queue's own state is
    touched on the event loop only.
    """

    def __init__(
        self,
        store: ApprovalStore,
        *,
        audit: Audit | None = None,
        clock: Callable[[], float] = time.time,
        touch_every: float = ABANDONED_AFTER / 3,
        calls: StoreCalls | None = None,
    ) -> None:
        self._store = store
        self._call = calls or StoreCalls()
        self._waiters: dict[str, anyio.Event] = {}
        self._audit: Audit = audit or (lambda kind, record: None)
        self._clock = clock
        self._touch_every = touch_every
        self._started = clock()
        self._polls: Counter[str] = Counter()
        self._last_poll: dict[str, float] = {}
        self._entered = False

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        if self._entered:
            raise RuntimeError("an ApprovalQueue listens once: it is already entered")
        self._entered = True
        async with anyio.create_task_group() as tg:
            await tg.start(self._store.watch, self._wake_from_elsewhere)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()

    def close(self) -> None:
        """Close the store."""
        self._store.close()

    async def file(self, request: ApprovalRequest, now: float) -> Approval:
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
            arguments=request.arguments,
        )
        await self._call.write(self._store.insert, row, request.summary)
        await self._audited(_record(row, "answered at the origin" if decided else "requested"))
        return row

    async def get(self, approval_id: str, now: float) -> Approval | None:
        """One approval, closing it first if its time is up or its call stopped waiting."""
        await self._expire(now)
        return await self._call.read(self._store.get, approval_id)

    async def list(self, now: float, *, status: str | None = None, limit: int = 100) -> list[Approval]:
        """Approvals, newest first, optionally of one status."""
        await self._expire(now)
        return await self._call.read(lambda: self._store.list(status=status, limit=limit))

    async def decide(self, approval_id: str, decision: ApprovalDecision, claims: Claims, now: float) -> Approval:
        """Record a person's answer to a pending request; DecisionRefused says why it was not."""
        current = await self.get(approval_id, now)
        if current is None:
            raise DecisionRefused(404, f"no approval {approval_id}")
        why = may_decide(current, claims)
        if why is not None:
            await self._audited({**_record(current, "decision refused"), "by": claims.person, "why": why})
            raise DecisionRefused(403, why)
        if current.status != "pending":
            raise DecisionRefused(409, f"approval {approval_id} is already {current.status}")
        status: ApprovalStatus = "approved" if decision.decision == "approve" else "denied"
        groups = sorted(set(claims.groups) & set(current.approvers)) if current.approvers else list(claims.groups)
        by = Decider(person=claims.person or "", groups=groups)
        changed = await self._call.write(self._store.decide, approval_id, status, by, decision.reason, now)
        decided = await self._call.read(self._store.get, approval_id)
        if not changed or decided is None:
            raise DecisionRefused(409, f"approval {approval_id} is already {decided.status if decided else 'gone'}")
        self._wake(approval_id)
        await self._audited(_record(decided, status))
        return decided

    async def cancel(self, approval_id: str, agent: str, reason: str, now: float) -> Approval:
        """Close `agent`'s own pending request whose call stopped waiting; DecisionRefused if it cannot."""
        current = await self.get(approval_id, now)
        if current is None:
            raise DecisionRefused(404, f"no approval {approval_id}")
        if current.agent != agent:
            raise DecisionRefused(403, f"approval {approval_id} was filed by '{current.agent}', not '{agent}'")
        if current.status != "pending":
            return current
        await self._close([approval_id], "cancelled", reason, now)
        return await self._call.read(self._store.get, approval_id) or current

    async def wait(self, approval_id: str, timeout: float) -> Approval | None:
        """The approval once decided or expired, or as it stands after `timeout` seconds."""
        deadline = time.time() + timeout
        self._polls[approval_id] += 1
        try:
            while True:
                # Waiting before reading: a decision made while the store is read wakes this round.
                event = self._waiters.setdefault(approval_id, anyio.Event())
                now = time.time()
                current = await self.get(approval_id, now)
                if current is None or current.status != "pending" or now >= deadline:
                    return current
                # Tell every replica a call still waits, so none cancels it as abandoned.
                await self._call.write(self._store.touch, approval_id, self._clock())
                with anyio.move_on_after(min(deadline, current.expires_at, now + self._touch_every) - now + 0.01):
                    await event.wait()
        finally:
            self._polls[approval_id] -= 1
            if self._polls[approval_id] <= 0:
                del self._polls[approval_id]
                self._waiters.pop(approval_id, None)  # nobody else waits on it
            self._last_poll[approval_id] = self._clock()

    def _wake(self, approval_id: str) -> None:
        event = self._waiters.pop(approval_id, None)
        if event is not None:
            event.set()

    def _wake_from_elsewhere(self, approval_id: str | None) -> None:
        """A replica changed `approval_id` (None: perhaps any): the calls waiting on it here read it again."""
        if approval_id is not None:
            self._wake(approval_id)
            return
        for waiting in list(self._waiters):
            self._wake(waiting)

    async def _expire(self, now: float) -> None:
        pending = await self._call.read(self._store.pending)
        expired = [p.id for p in pending if p.expires_at < now]
        if expired:
            await self._close(expired, "expired", "nobody decided before expiry", now)
        abandoned = [p.id for p in pending if p.expires_at >= now and self._abandoned(p)]
        if abandoned:
            await self._close(abandoned, "cancelled", "its call stopped waiting (refused, out of time, or gone)", now)

    def _abandoned(self, pending: Pending) -> bool:
        """True when no call has waited on a pending request, here or on any replica, for ABANDONED_AFTER seconds."""
        if self._polls.get(pending.id):
            return False
        seen = max(self._last_poll.get(pending.id, 0.0), pending.polled_at or 0.0, pending.requested_at, self._started)
        return self._clock() - seen > ABANDONED_AFTER

    async def _close(self, ids: list[str], status: ApprovalStatus, reason: str, now: float) -> None:
        closed = await self._call.write(self._store.close_pending, ids, status, reason, now)
        for approval in closed:
            self._wake(approval.id)
            self._last_poll.pop(approval.id, None)
        await self._audited(*(_record(approval, status) for approval in closed))

    async def _audited(self, *records: dict[str, Any]) -> None:
        """Append approval `records` to the governance record, in order, in one worker thread."""
        if not records:
            return

        def append() -> None:
            for record in records:
                self._audit("approval", record)

        await self._call.write(append)


def install_approvals(server: MCPServer, queue: ApprovalQueue, keys: MeshKeys) -> None:
    """Add the `/api/approvals` routes and the `list_approvals` MCP tool to the registry's server."""

    def claims_of(request: Request) -> Claims:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise IdentityError("no mesh token: send 'Authorization: Bearer <token>' (see `mesh token`)")
        return keys.verify(token.strip(), audience="registry")

    def reader(request: Request) -> Claims | None:
        """Who reads, if their token (or signed-in session) says so: reads need none on loopback."""
        try:
            return keys.verify(bearer_or_session(request.scope), audience="registry")
        except IdentityError:
            return None

    @server.custom_route("/api/approvals", methods=["GET", "POST"])
    async def approvals(request: Request) -> Response:
        now = time.time()
        if request.method == "GET":
            status = request.query_params.get("status") or None
            who = reader(request)
            return _ok([_shown(a, who) for a in await queue.list(now, status=status)])
        try:
            claims = claims_of(request)
            body = await _body(request)
            if body is None:
                return _error(413, f"an approval request is at most {MAX_BODY_BYTES} bytes")
            filed = ApprovalRequest.model_validate_json(body)
        except IdentityError as exc:
            return _error(401, str(exc))
        except ValidationError as exc:
            return _error(422, _invalid(exc))
        if claims.role != "agent" or claims.caller != filed.agent:
            return _error(403, f"only agent '{filed.agent}' itself may file its approvals, not '{claims.caller}'")
        return _ok(_shown(await queue.file(filed, now), claims), status=201)

    @server.custom_route("/api/approvals/{approval_id}", methods=["GET"])
    async def one(request: Request) -> Response:
        approval_id = request.path_params["approval_id"]
        try:
            wait = min(float(request.query_params.get("wait", "0")), MAX_WAIT)
        except ValueError:
            return _error(400, "wait must be a number of seconds")
        found = await queue.wait(approval_id, wait) if wait > 0 else await queue.get(approval_id, time.time())
        return _ok(_shown(found, reader(request))) if found else _error(404, f"no approval {approval_id}")

    @server.custom_route("/api/approvals/{approval_id}/decision", methods=["POST"])
    async def decide(request: Request) -> Response:
        approval_id = request.path_params["approval_id"]
        try:
            claims = claims_of(request)
            decision = ApprovalDecision.model_validate_json(await request.body())
            return _ok(_shown(await queue.decide(approval_id, decision, claims, time.time()), claims))
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
            return _ok(_shown(await queue.cancel(approval_id, claims.caller, reason, time.time()), claims))
        except IdentityError as exc:
            return _error(401, str(exc))
        except DecisionRefused as refused:
            return _error(refused.status, str(refused))

    async def list_approvals(status: str | None = "pending") -> list[dict[str, Any]]:
        # The MCP tool names no person: it never shows a call's arguments.
        return [_shown(a, None) for a in await queue.list(time.time(), status=status)]

    server.add_tool(
        list_approvals,
        name="list_approvals",
        description="Human approvals of risky calls: who asked to run which tool, and what was decided.",
        annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True),
    )


def _record(approval: Approval, event: str) -> dict[str, Any]:
    """An approval's entry in the governance record: the call is bound by its digest; its arguments stay out."""
    return {
        "event": event,
        **approval.model_dump(mode="json", exclude={"requested_at", "expires_at", "arguments"}),
    }


def _shown(approval: Approval, claims: Claims | None) -> dict[str, Any]:
    return shown_to(approval, claims).model_dump(mode="json")


async def _body(request: Request) -> bytes | None:
    """The request's body, or None when it is over MAX_BODY_BYTES."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _invalid(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def _ok(body: Any, status: int = 200) -> Response:
    return JSONResponse(body, status_code=status)


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)
