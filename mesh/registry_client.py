"""The agent's and the CLI's side of the registry's HTTP contract (`mesh.wire`).

Owns `RegistryClient`, the one place where httpx2 errors and refusals from the registry become
`RegistryError`, and `Registrar`, which keeps one agent registered: register, renew the lease,
register again after a registry restart, deregister on exit. It never fails the agent: while
the registry is down the agent carries on with mDNS alone. It does not find the registry.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final, Self, TypeVar, final
from urllib.parse import quote

import anyio
import httpx2
from anyio.abc import TaskStatus
from pydantic import TypeAdapter, ValidationError

from mesh.errors import MeshError, RegistryError
from mesh.text import one_line
from mesh.tls import client_context
from mesh.wire import (
    LEASE_FLOOR_HEADER,
    AgentRecord,
    Approval,
    ApprovalDecision,
    ApprovalRequest,
    AuditHead,
    AuditRecord,
    ErrorBody,
    Registration,
)

__all__ = ["LiveListing", "Registrar", "RegistryClient"]

logger = logging.getLogger(__name__)

_records_adapter: Final = TypeAdapter(list[AgentRecord])
_approvals_adapter: Final = TypeAdapter(list[Approval])
_head_adapter: Final = TypeAdapter(AuditHead | None)
_MAX_ERROR_CHARS: Final = 300

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class LiveListing:
    """The answer to a conditional listing of the live agents.

    `records` is None when the registry answered 304: the records are those of the listing tagged `tag`,
    unchanged but for their lease times, which `lease_floor` bounds from below.
    """

    records: list[AgentRecord] | None
    tag: str | None
    """The registry's tag of this listing (None: it sent none); send it back to ask "changed since?"."""
    lease_floor: float | None
    """Every record listed is leased at least until then (None: the registry did not say, or none listed)."""


@final
class RegistryClient(anyio.AsyncContextManagerMixin):
    """An HTTP client of one registry; every failure comes out as a one-line RegistryError."""

    def __init__(
        self,
        base_url: str,
        *,
        token_factory: Callable[[], str] | None = None,
        timeout: float = 2.0,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token_factory = token_factory
        self._timeout = timeout
        self._transport = transport
        self._http: httpx2.AsyncClient | None = None

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        # Plain http speaks no TLS: no context is built for it (building one parses the whole trust store).
        verify = client_context() if self.base_url.startswith("https:") else False
        async with httpx2.AsyncClient(
            base_url=self.base_url, timeout=self._timeout, transport=self._transport, verify=verify
        ) as http:
            self._http = http
            try:
                yield self
            finally:
                self._http = None

    async def register(self, reg: Registration) -> AgentRecord:
        """Register (or re-register) `reg`; the registry answers with the stored record."""
        response = await self._request("POST", "/api/agents", content=reg.model_dump_json())
        return self._parse(response, AgentRecord.model_validate_json)

    async def renew(self, name: str, instance: str) -> AgentRecord | None:
        """Renew the lease of (name, instance); None if the registry does not know it (register again)."""
        response = await self._request("PUT", f"{_agent_path(name, instance)}/lease", missing_ok=True)
        if response.status_code == 404:
            return None
        return self._parse(response, AgentRecord.model_validate_json)

    async def deregister(self, name: str, instance: str) -> None:
        """Remove (name, instance) from the registry; unknown ones are already gone."""
        await self._request("DELETE", _agent_path(name, instance), missing_ok=True)

    async def agents(
        self,
        *,
        tool: str | None = None,
        owner: str | None = None,
        jurisdiction: str | None = None,
        data_class: str | None = None,
        name: str | None = None,
        include_lapsed: bool = False,
    ) -> list[AgentRecord]:
        """Registrations matching every filter given: live ones, or all with `include_lapsed`."""
        filters = {
            "tool": tool,
            "owner": owner,
            "jurisdiction": jurisdiction,
            "data_class": data_class,
            "name": name,
        }
        params = {key: value for key, value in filters.items() if value is not None}
        if include_lapsed:
            params["all"] = "1"
        response = await self._request("GET", "/api/agents", params=params)
        return self._parse(response, _records_adapter.validate_json)

    async def live_agents(self, *, tag: str | None = None) -> LiveListing:
        """Every live registration, or (with the `tag` of a listing held) word that it still stands.

        An idle mesh's listings repeat themselves: a 304 spares the registry the body and this
        client the parsing, while its lease floor keeps the held records' leases current.
        """
        headers = {"if-none-match": tag} if tag is not None else None
        response = await self._request("GET", "/api/agents", headers=headers, not_modified_ok=tag is not None)
        floor = _lease_floor(response.headers.get(LEASE_FLOOR_HEADER))
        etag = response.headers.get("etag")
        if response.status_code == 304:
            return LiveListing(records=None, tag=etag or tag, lease_floor=floor)
        return LiveListing(records=self._parse(response, _records_adapter.validate_json), tag=etag, lease_floor=floor)

    async def file_approval(self, request: ApprovalRequest) -> Approval:
        """File a request for a human decision (or record one given elsewhere)."""
        response = await self._request("POST", "/api/approvals", content=request.model_dump_json())
        return self._parse(response, Approval.model_validate_json)

    async def approval(self, approval_id: str, *, wait: float = 0.0) -> Approval:
        """One approval; with `wait`, the registry holds the answer until it is decided (at most `wait` s)."""
        params = {"wait": f"{wait:g}"} if wait > 0 else None
        response = await self._request("GET", f"/api/approvals/{quote(approval_id)}", params=params, timeout=wait + 5)
        return self._parse(response, Approval.model_validate_json)

    async def approvals(self, *, status: str | None = None) -> list[Approval]:
        """Approvals, newest first (all, or those of one status)."""
        response = await self._request("GET", "/api/approvals", params={"status": status} if status else None)
        return self._parse(response, _approvals_adapter.validate_json)

    async def decide(self, approval_id: str, decision: ApprovalDecision) -> Approval:
        """Answer a pending approval as the token's caller."""
        path = f"/api/approvals/{quote(approval_id)}/decision"
        response = await self._request("POST", path, content=decision.model_dump_json())
        return self._parse(response, Approval.model_validate_json)

    async def cancel_approval(self, approval_id: str, reason: str) -> Approval:
        """Close this agent's own pending approval whose call stopped waiting."""
        path = f"/api/approvals/{quote(approval_id)}/cancel"
        response = await self._request("POST", path, content=reason)
        return self._parse(response, Approval.model_validate_json)

    async def audit(self, *, since: float | None = None, page: int = 1000) -> list[AuditRecord]:
        """The governance record (entries appended at or after `since`), oldest first, fetched whole, `page` at a time.

        Needs an admin's token.
        """
        entries: list[AuditRecord] = []
        while True:
            params = {"after": str(entries[-1].seq if entries else 0), "limit": str(page)}
            if since is not None:
                params["since"] = repr(since)
            response = await self._request("GET", "/api/audit", params=params)
            try:
                # The stdlib parser: floats come back bit for bit, as the entries' MACs need.
                batch = [AuditRecord.model_validate(json.loads(line)) for line in response.text.splitlines() if line]
            except ValueError as exc:  # JSONDecodeError and pydantic's ValidationError both are
                where = f"registry at {self.base_url}"
                raise RegistryError(f"{where} sent a bad audit line: {one_line(str(exc), limit=None)}") from exc
            entries.extend(batch)
            if len(batch) < page:
                return entries

    async def audit_head(self) -> AuditHead | None:
        """The registry's signed head of the governance record (None while it is empty); needs an admin's token."""
        response = await self._request("GET", "/api/audit/head")
        return self._parse(response, _head_adapter.validate_json)

    async def healthy(self) -> bool:
        """True when GET /healthz answers 2xx in time; never raises."""
        try:
            await self._request("GET", "/healthz")
        except RegistryError:
            return False
        return True

    async def _request(
        self,
        method: str,
        path: str,
        *,
        content: str | None = None,
        params: dict[str, str] | None = None,
        missing_ok: bool = False,
        not_modified_ok: bool = False,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx2.Response:
        if self._http is None:
            raise RuntimeError("RegistryClient is used outside `async with`")
        headers = dict(headers or {})
        if content is not None:
            headers["content-type"] = "application/json"
        # Every request carries the token when there is one: a registry on the LAN answers no read without it.
        if self._token_factory is not None:
            headers["authorization"] = f"Bearer {self._token_factory()}"
        where = f"registry at {self.base_url}"
        limit = timeout if timeout is not None else self._timeout * 2
        try:
            # httpx2's timeout bounds each phase; this bounds the whole exchange.
            with anyio.fail_after(limit):
                response = await self._http.request(
                    method, path, content=content, params=params, headers=headers, timeout=limit
                )
        except TimeoutError as exc:
            raise RegistryError(f"{where} did not answer {method} {path} in {limit:g}s") from exc
        except httpx2.TimeoutException as exc:
            raise RegistryError(f"{where} timed out on {method} {path}") from exc
        except httpx2.HTTPError as exc:
            raise RegistryError(one_line(f"{where} unreachable: {type(exc).__name__}: {exc}", limit=None)) from exc
        if (
            response.is_success
            or (missing_ok and response.status_code == 404)
            or (not_modified_ok and response.status_code == 304)
        ):
            return response
        raise RegistryError(
            one_line(f"{where} refused {method} {path}: {response.status_code} {_error_text(response)}", limit=None)
        )

    def _parse(self, response: httpx2.Response, parse: Callable[[bytes], _T]) -> _T:
        try:
            return parse(response.content)
        except ValidationError as exc:
            raise RegistryError(
                f"registry at {self.base_url} sent an unexpected answer: {exc.error_count()} bad fields"
            ) from exc


@final
class Registrar(anyio.AsyncContextManagerMixin):
    """Keeps one agent registered while entered: register, renew every lease/3, deregister on exit.

    Uses a RegistryClient the caller has entered. Entering waits for the first attempt only
    (bounded by the client's timeout); failures are logged once per outage and retried with
    backoff in the background, so the agent never fails because of the registry.
    """

    def __init__(
        self,
        client: RegistryClient,
        registration: Callable[[], Registration],
        *,
        lease: float = 10.0,
        heartbeat: float | None = None,
        deregister_timeout: float = 1.0,
    ) -> None:
        if not (math.isfinite(lease) and lease > 0):
            raise ValueError(f"a lease must be a positive number of seconds, not {lease}")
        self._client = client
        self._registration = registration
        self._lease = lease
        self._heartbeat = heartbeat if heartbeat is not None else lease / 3
        self._deregister_timeout = deregister_timeout
        self._current: Registration | None = None
        self._progress = anyio.Event()
        self.registered = False
        """True while the last exchange with the registry succeeded and the lease holds."""
        self.record: AgentRecord | None = None
        """The record the registry last returned."""
        self.registrations = 0
        """How many times the registry accepted a registration (1 + re-registrations)."""

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self._keep_registered)
                try:
                    yield self
                finally:
                    tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The background task never raises, so a group holds only the body's own error.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            await self._deregister()

    async def wait_registered(self, *, after: int = 0) -> AgentRecord:
        """Wait until the registry has accepted more than `after` registrations (bound it with fail_after)."""
        while self.registrations <= after:
            await self._progress.wait()
        assert self.record is not None  # set before registrations is counted
        return self.record

    async def _keep_registered(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        backoff = min(0.5, self._heartbeat)
        outage = False
        started = False
        while True:
            try:
                if self.registered and self._current is not None:
                    record = await self._client.renew(self._current.name, self._current.instance)
                    if record is None:
                        logger.info("registry at %s forgot this agent; registering again", self._client.base_url)
                        self.registered = False
                        continue
                    self.record = record
                else:
                    await self._register()
                    if outage:
                        logger.info("registry at %s is back; registered again", self._client.base_url)
                outage = False
                backoff = min(0.5, self._heartbeat)
                delay = self._heartbeat
            except MeshError as exc:
                self.registered = False
                if not outage:
                    logger.warning("registry unavailable (%s); carrying on with mDNS alone, retrying", exc)
                outage = True
                delay = backoff * random.uniform(0.8, 1.2)
                backoff = min(backoff * 2, self._heartbeat)
            except Exception:
                # Task root: a bug here (say, in the registration callable) must not fail the agent.
                if not outage:
                    logger.exception("registrar: unexpected error; retrying every %gs", self._heartbeat)
                outage = True
                self.registered = False
                delay = self._heartbeat
            if not started:
                started = True
                task_status.started()
            await anyio.sleep(delay)

    async def _register(self) -> None:
        reg = self._registration().model_copy(update={"lease_seconds": self._lease})
        # Before sending: a registration still in flight when the agent stops may yet be stored,
        # so it must be withdrawn too (a DELETE of an unknown one is harmless).
        self._current = reg
        record = await self._client.register(reg)
        self.record = record
        self.registered = True
        self.registrations += 1
        progress, self._progress = self._progress, anyio.Event()
        progress.set()

    async def _deregister(self) -> None:
        current, self._current = self._current, None
        self.registered = False
        if current is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._deregister_timeout):
            try:
                await self._client.deregister(current.name, current.instance)
            except RegistryError as exc:
                logger.debug("could not deregister from the registry: %s", exc)


def _agent_path(name: str, instance: str) -> str:
    return f"/api/agents/{quote(name, safe='')}/{quote(instance, safe='')}"


def _lease_floor(value: str | None) -> float | None:
    """The lease floor a registry sent; None when absent or not a finite number (then nothing is assumed)."""
    if value is None:
        return None
    try:
        floor = float(value)
    except ValueError:
        return None
    return floor if math.isfinite(floor) else None


def _error_text(response: httpx2.Response) -> str:
    try:
        return ErrorBody.model_validate_json(response.content).error[:_MAX_ERROR_CHARS]
    except ValidationError:
        return (response.text or response.reason_phrase)[:_MAX_ERROR_CHARS]
