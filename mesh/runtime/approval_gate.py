"""The approval gate: a call that needs a person waits for one, by elicitation or by the queue.

Where the chain's origin can answer (an interactive client on the 2026-07-28 protocol), the
gate answers `input_required` with an elicitation and checks the signed ticket that comes back;
otherwise it files the request in the registry's approvals queue and waits for a decision or
the expiry. Every question and answer is a decision in the trace and a row in the audit record.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, final

import anyio
from mcp_types import ElicitRequest, ElicitRequestFormParams, InputRequiredResult
from opentelemetry import trace

from mesh.approvals import APPROVAL_INPUT_KEY, RoundState, Ticket, approval_prompt, approval_schema, arguments_digest
from mesh.decisions import record_decision
from mesh.errors import MeshError
from mesh.identity import MeshKeys
from mesh.registry_client import RegistryClient
from mesh.wire import Approval, ApprovalRequest

__all__ = ["APPROVAL_TTL", "ApprovalGate", "Verdict"]

log = logging.getLogger(__name__)

APPROVAL_TTL = float(os.environ.get("MESH_APPROVAL_TTL", "120"))
"""Seconds a person has to answer (never more than the call's own time budget)."""

Verdict = tuple[bool, str]
"""(may run, why): the gate's answer when it does not need another round."""


@final
class ApprovalGate:
    """Decides, for one call that needs a person, whether it may run now."""

    def __init__(self, *, agent: str, keys: MeshKeys, registry_url: Callable[[], str | None]) -> None:
        self.agent = agent
        self.keys = keys
        self._registry_url = registry_url
        self.key = f"{APPROVAL_INPUT_KEY}/{agent}"

    def ticket(self, tool: str, arguments: Mapping[str, Any] | None, caller: str, budget: float | None) -> Ticket:
        """The ticket for this exact call, expiring with the approval TTL or the call's budget."""
        ttl = APPROVAL_TTL if budget is None else min(APPROVAL_TTL, budget)
        return Ticket(self.agent, tool, arguments_digest(arguments), caller, time.time() + ttl)

    def already_approved(self, ticket: Ticket, state: RoundState | None) -> bool:
        """True when an earlier round of this same call was approved."""
        if state is None or state.approved is None:
            return False
        given = Ticket.decode(state.approved, self.keys)
        return given is not None and given.matches(ticket) is None

    def answer(self, ticket: Ticket, state: RoundState | None, responses: Mapping[str, Any]) -> Verdict | None:
        """The person's answer from this round, if they gave one to the question asked last round."""
        reply = responses.get(self.key)
        if state is None or state.asked is None or not isinstance(reply, dict):
            return None
        asked = Ticket.decode(state.asked, self.keys)
        why = "the approval ticket is not valid" if asked is None else asked.matches(ticket)
        if why is not None:
            return (False, why)
        content: Mapping[str, Any] = reply.get("content") or {}  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        if reply.get("action") == "accept" and content.get("approve") is True:  # pyright: ignore[reportUnknownMemberType]
            return (True, f"approved by a person at the origin of {ticket.caller}'s call")
        return (False, f"a person {'declined' if reply.get('action') != 'cancel' else 'cancelled'} the call")  # pyright: ignore[reportUnknownMemberType]

    def ask(self, ticket: Ticket, arguments: Mapping[str, Any] | None, reason: str) -> InputRequiredResult:
        """An input-required round asking the person at the origin."""
        record_decision("approval", choice="asked", reason=f"elicitation relayed to the origin: {reason}")
        question = ElicitRequest(
            params=ElicitRequestFormParams(
                message=approval_prompt(ticket, arguments, reason), requested_schema=approval_schema()
            )
        )
        state = RoundState(asked=ticket.encode(self.keys)).encode(self.keys)
        return InputRequiredResult(input_requests={self.key: question}, request_state=state)

    async def queue(self, ticket: Ticket, arguments: Mapping[str, Any] | None, reason: str) -> Verdict:
        """File the call in the registry's approvals queue and wait for a decision (or the expiry)."""
        url = self._registry_url()
        if url is None:
            return (False, "needs a person's approval, but no interactive client and no registry queue is reachable")
        span = trace.get_current_span().get_span_context()
        request = ApprovalRequest(
            agent=self.agent,
            tool=ticket.tool,
            caller=ticket.caller,
            arguments_digest=ticket.digest,
            expires_at=ticket.expires_at,
            trace_id=f"{span.trace_id:032x}" if span.is_valid else None,
            summary=approval_prompt(ticket, arguments, reason),
        )
        try:
            async with self._client(url) as client:
                filed = await client.file_approval(request)
                record_decision("approval", choice="queued", reason=f"approval {filed.id} waits in the registry queue")
                decided = await self._wait(client, filed)
        except MeshError as exc:
            return (False, f"the approvals queue failed: {exc}")
        return _verdict(decided)

    async def audit(self, ticket: Ticket, approved: bool, why: str) -> None:
        """Record an answer given by elicitation in the registry's audit record (best effort, bounded)."""
        record_decision("approval", choice="approved" if approved else "denied", reason=why)
        url = self._registry_url()
        if url is None:
            return
        request = ApprovalRequest(
            agent=self.agent,
            tool=ticket.tool,
            caller=ticket.caller,
            arguments_digest=ticket.digest,
            expires_at=ticket.expires_at,
            status="approved" if approved else "denied",
            decided_by=f"elicitation via {ticket.caller}",
            reason=why,
        )
        with anyio.move_on_after(1.0):
            try:
                async with self._client(url) as client:
                    await client.file_approval(request)
            except MeshError as exc:
                log.warning("could not record the approval in the registry: %s", exc)

    async def _wait(self, client: RegistryClient, filed: Approval) -> Approval:
        current = filed
        while current.status == "pending":
            left = current.expires_at - time.time()
            current = await client.approval(filed.id, wait=max(0.1, min(left + 0.5, 25.0)))
        return current

    def _client(self, url: str) -> RegistryClient:
        return RegistryClient(url, token_factory=lambda: self.keys.mint(self.agent, "registry", ttl=60))


def _verdict(decided: Approval) -> Verdict:
    who = decided.decided_by or "nobody"
    if decided.status == "approved":
        record_decision("approval", choice="approved", reason=f"approved by {who} (approval {decided.id})")
        return (True, f"approved by {who}")
    why = decided.reason or decided.status
    record_decision("approval", choice=decided.status, reason=f"{decided.status} by {who}: {why}")
    return (False, f"approval {decided.id} was {decided.status} ({why})")
