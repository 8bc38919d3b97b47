"""The approval gate: a call that needs a person waits for one, by elicitation or by the queue.

Where the chain's origin can answer (an interactive client on the 2026-07-28 protocol) and the
policy names no group, the gate answers `input_required` with an elicitation and checks the signed
ticket that comes back; otherwise it files the request in the registry's approvals queue, where
only a person who may (DESIGN §6) decides, and waits for that or the expiry. Every answer runs its
call at most once: a round's state is honoured once, by the instance that issued it, and a queued
request whose call stops waiting is cancelled. Every question and answer is a decision in the trace.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, final

import anyio
from mcp_types import ElicitRequest, ElicitRequestFormParams, InputRequiredResult
from opentelemetry import trace

from mesh.approvals import RoundState, Ticket, approval_prompt, approval_schema, arguments_digest
from mesh.decisions import record_decision
from mesh.errors import MeshError
from mesh.identity import MeshKeys
from mesh.masking import mask_arguments
from mesh.peers.person import Person
from mesh.registry_client import RegistryClient
from mesh.wire import APPROVAL_INPUT_KEY, Approval, ApprovalRequest, Decider

__all__ = ["APPROVAL_TTL", "ApprovalGate", "Need", "Verdict"]

log = logging.getLogger(__name__)

APPROVAL_TTL = float(os.environ.get("MESH_APPROVAL_TTL", "300"))
"""Seconds a person has to answer, unless the tool sets its own (never more than the call's own time budget)."""

_ALL_SECRET: Mapping[str, Any] = {"additionalProperties": {"writeOnly": True}}
"""The schema assumed for a tool whose own is unknown: every value is masked."""

Verdict = tuple[bool, str]
"""(may run, why): the gate's answer when it does not need another round."""


@dataclass(frozen=True, slots=True)
class Need:
    """One call that needs a person: its ticket, why, which groups may decide, and whom it runs for."""

    ticket: Ticket
    why: str
    approvers: tuple[str, ...] = ()
    person: Person | None = None


@final
class ApprovalGate:
    """Decides, for one call that needs a person, whether it may run now."""

    def __init__(
        self,
        *,
        agent: str,
        keys: MeshKeys,
        registry_url: Callable[[], str | None],
        instance: str = "",
        input_schema: Callable[[str], Mapping[str, Any] | None] = lambda tool: None,
    ) -> None:
        self.agent = agent
        self._input_schema = input_schema
        self.instance = instance
        self.keys = keys
        self._registry_url = registry_url
        self.key = f"{APPROVAL_INPUT_KEY}/{agent}"
        self._used: dict[str, float] = {}
        self._longest_ttl = APPROVAL_TTL

    def ticket(
        self,
        tool: str,
        arguments: Mapping[str, Any] | None,
        caller: str,
        budget: float | None,
        ttl: float | None = None,
    ) -> Ticket:
        """The ticket for this exact call, expiring with the tool's approval TTL (or the default) or its budget."""
        limit = ttl or APPROVAL_TTL
        self._longest_ttl = max(self._longest_ttl, limit)
        ttl = limit if budget is None else min(limit, budget)
        return Ticket(self.agent, tool, arguments_digest(arguments), caller, time.time() + ttl)

    def round(self, **fields: str | None) -> RoundState:
        """A fresh round state issued by this instance (with its own nonce)."""
        return RoundState(instance=self.instance, **fields)  # pyright: ignore[reportArgumentType]

    def consume(self, state: RoundState, *, now: float | None = None) -> str | None:
        """Mark `state` used; None the first time this instance sees it, else why it may not be used."""
        at = time.time() if now is None else now
        if state.instance != self.instance:
            return f"this answer was given to another instance of {self.agent}; ask again"
        for nonce in [n for n, until in self._used.items() if until < at]:
            del self._used[nonce]
        if state.nonce in self._used:
            return "this approval was already used: an answer runs its call once; ask again"
        # Kept as long as any ticket it carries could still be honoured.
        self._used[state.nonce] = at + self._longest_ttl + 60
        return None

    def already_approved(self, ticket: Ticket, state: RoundState | None) -> bool:
        """True when an earlier round of this same call was approved."""
        if state is None or state.approved is None:
            return False
        given = Ticket.decode(state.approved, self.keys)
        return given is not None and given.matches(ticket) is None

    def answer(self, need: Need, state: RoundState | None, responses: Mapping[str, Any]) -> Verdict | None:
        """The person's answer from this round, if they gave one to the question asked last round."""
        reply = responses.get(self.key)
        if state is None or state.asked is None or not isinstance(reply, dict):
            return None
        asked = Ticket.decode(state.asked, self.keys)
        why = "the approval ticket is not valid" if asked is None else asked.matches(need.ticket)
        if why is not None:
            return (False, why)
        content: Mapping[str, Any] = reply.get("content") or {}  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        if reply.get("action") == "accept" and content.get("approve") is True:  # pyright: ignore[reportUnknownMemberType]
            return (True, f"approved by {_origin(need)}")
        verb = "cancelled" if reply.get("action") == "cancel" else "declined"  # pyright: ignore[reportUnknownMemberType]
        return (False, f"{_origin(need)} {verb} the call")

    def ask(self, need: Need, arguments: Mapping[str, Any] | None) -> InputRequiredResult:
        """An input-required round asking the person at the origin."""
        record_decision("approval", choice="asked", reason=f"elicitation relayed to the origin: {need.why}")
        question = ElicitRequest(
            params=ElicitRequestFormParams(
                message=approval_prompt(need.ticket, self.shown(need.ticket.tool, arguments), need.why),
                requested_schema=approval_schema(),
            )
        )
        state = self.round(asked=need.ticket.encode(self.keys)).encode(self.keys)
        return InputRequiredResult(input_requests={self.key: question}, request_state=state)

    async def queue(self, need: Need, arguments: Mapping[str, Any] | None) -> Verdict:
        """File the call in the registry's approvals queue and wait for a decision (or the expiry)."""
        url = self._registry_url()
        if url is None:
            return (False, "needs a person's approval, but no interactive client and no registry queue is reachable")
        span = trace.get_current_span().get_span_context()
        ticket = need.ticket
        shown = self.shown(ticket.tool, arguments)
        request = ApprovalRequest(
            agent=self.agent,
            tool=ticket.tool,
            caller=ticket.caller,
            arguments_digest=ticket.digest,
            expires_at=ticket.expires_at,
            trace_id=f"{span.trace_id:032x}" if span.is_valid else None,
            summary=approval_prompt(ticket, shown, need.why),
            requested_by=need.person.name if need.person else None,
            approvers=list(need.approvers),
            arguments=shown,
        )
        try:
            async with self._client(url) as client:
                filed = await client.file_approval(request)
                who = f"a member of {' or '.join(need.approvers)}" if need.approvers else "an approver"
                record_decision("approval", choice="queued", reason=f"approval {filed.id} waits for {who}")
                waited = False
                try:
                    decided = await self._wait(client, filed)
                    waited = True
                finally:
                    if not waited:
                        await _cancel(client, filed.id)
                return _verdict(decided)
        except MeshError as exc:
            return (False, f"the approvals queue failed: {exc}")

    async def audit(self, need: Need, approved: bool, why: str) -> None:
        """Record an answer given by elicitation in the registry's audit record (best effort, bounded)."""
        record_decision("approval", choice="approved" if approved else "denied", reason=why)
        url = self._registry_url()
        if url is None:
            return
        ticket = need.ticket
        request = ApprovalRequest(
            agent=self.agent,
            tool=ticket.tool,
            caller=ticket.caller,
            arguments_digest=ticket.digest,
            expires_at=ticket.expires_at,
            status="approved" if approved else "denied",
            decided_by=Decider(person=_origin(need)),
            reason=why,
            requested_by=need.person.name if need.person else None,
        )
        with anyio.move_on_after(1.0):
            try:
                async with self._client(url) as client:
                    await client.file_approval(request)
            except MeshError as exc:
                log.warning("could not record the approval in the registry: %s", exc)

    def shown(self, tool: str, arguments: Mapping[str, Any] | None) -> dict[str, Any]:
        """`arguments` as a person may see them: secret fields masked (all values, if the tool's schema is unknown)."""
        schema = self._input_schema(tool)
        return mask_arguments(arguments, schema if schema is not None else _ALL_SECRET)

    async def _wait(self, client: RegistryClient, filed: Approval) -> Approval:
        current = filed
        while current.status == "pending":
            left = current.expires_at - time.time()
            current = await client.approval(filed.id, wait=max(0.1, min(left + 0.5, 25.0)))
        return current

    def _client(self, url: str) -> RegistryClient:
        return RegistryClient(url, token_factory=lambda: self.keys.mint(self.agent, "registry", ttl=60))


async def _cancel(client: RegistryClient, approval_id: str) -> None:
    """Close a request whose call stopped waiting, so nobody approves a call that will not run."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
        try:
            await client.cancel_approval(approval_id, "the call stopped waiting for a decision")
        except MeshError as exc:
            log.warning("could not cancel approval %s: %s", approval_id, exc)


def _origin(need: Need) -> str:
    """Who answers an elicitation: the person the call runs for, when the chain names one."""
    return need.person.name if need.person else f"the person at the origin of {need.ticket.caller}'s call"


def _verdict(decided: Approval) -> Verdict:
    who = str(decided.decided_by) if decided.decided_by else "nobody"
    if decided.status == "approved":
        record_decision("approval", choice="approved", reason=f"approved by {who} (approval {decided.id})")
        return (True, f"approved by {who}")
    if decided.status == "expired":
        record_decision("approval", choice="expired", reason=f"approval {decided.id} expired: nobody decided in time")
        return (False, f"approval expired: nobody decided approval {decided.id} in time")
    why = decided.reason or decided.status
    record_decision("approval", choice=decided.status, reason=f"{decided.status} by {who}: {why}")
    return (False, f"approval {decided.id} was {decided.status} by {who} ({why})")
