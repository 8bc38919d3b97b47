"""The callee's side of every governed request: its time budget, policy, and human approval (DESIGN §6, §7).

A `ServerMiddleware` inside the SDK's OpenTelemetry middleware, so its decisions land on the server
span. It governs `tools/call`, `resources/read` and `prompts/get` alike (the Cedar actions in
`ACTIONS`), and `resources/subscribe` as a read: who may not read a resource may not hear of its
changes. A spent budget, a policy deny, a refused approval or a replayed answer answers with an
error naming why (a JSON-RPC error for a read or a prompt, whose results carry no error flag), and
the agent's code never runs. A read or a prompt that needs a person waits in the registry's approvals
queue: relaying a question to the origin is built for tool calls. Identity was already proven by the
ASGI layer; policy facts about the caller come only from its verified token and signed record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import Token
from dataclasses import replace
from typing import Any, Final, final

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import CLIENT_CAPABILITIES_META_KEY, INVALID_REQUEST, CallToolResult, InputRequiredResult, TextContent
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from opentelemetry import baggage, propagate, trace
from opentelemetry.trace import Span

from mesh.approvals import RoundState
from mesh.decisions import record_decision
from mesh.identity import Claims, MeshKeys
from mesh.peers.budget import budget_from_meta, current_deadline, deadline_var
from mesh.peers.person import Person, person_of, person_var
from mesh.peers.pool import stricter
from mesh.peers.questions import sampling_var
from mesh.peers.rounds import InputNeeded, Relay, interactive_var, relay_var
from mesh.policy import CallFacts, Policy, PolicyDecision
from mesh.runtime.approval_gate import ApprovalGate, Need
from mesh.runtime.tools import verified_claims
from mesh.wire import BAGGAGE_META_KEY, DATA_CLASS_BAGGAGE, ERROR_META_KEY, INTERACTIVE_META_KEY, SAMPLING_META_KEY

__all__ = ["ACTIONS", "CallGuard"]

ACTIONS: Final = {
    "tools/call": "call",
    "resources/read": "read_resource",
    "resources/subscribe": "read_resource",
    "prompts/get": "get_prompt",
}
"""The methods the guard governs, and the Cedar action each is (docs/policy.md)."""


@final
class CallGuard:
    """Refuses calls whose budget is spent, that policy denies, or that a person did not approve."""

    def __init__(
        self,
        *,
        agent: str,
        metadata: Mapping[str, Any],
        policy: Policy,
        caller_metadata: Callable[[str], Mapping[str, Any] | None],
        keys: MeshKeys,
        instance: str = "",
        approval_tools: frozenset[str] = frozenset(),
        approval_ttls: Mapping[str, float] | None = None,
        registry_url: Callable[[], str | None] = lambda: None,
        input_schema: Callable[[str], Mapping[str, Any] | None] = lambda tool: None,
    ) -> None:
        self.agent = agent
        self.metadata = dict(metadata)
        self.policy = policy
        self.keys = keys
        self.approval_tools = approval_tools
        self.approval_ttls = dict(approval_ttls or {})
        self._caller_metadata = caller_metadata
        self._gate = ApprovalGate(
            agent=agent, instance=instance, keys=keys, registry_url=registry_url, input_schema=input_schema
        )

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        action = ACTIONS.get(ctx.method)
        if action is None or not ctx.params:
            return await call_next(ctx)
        if action != "call":
            return await self._guard_read(ctx, call_next, action)
        params = ctx.params
        tool = str(params.get("name"))
        arguments: Mapping[str, Any] | None = params.get("arguments")
        meta: Mapping[str, Any] = ctx.meta or {}
        claims, caller, person, span = _who(ctx, meta)
        budget = budget_from_meta(meta)
        if budget is not None and budget <= 0:
            record_decision("deadline", choice="refuse", reason="the caller's time budget was already spent")
            return _refusal(
                "DeadlineExceeded", f"{self.agent}.{tool}: the call's time budget was spent before it started"
            )

        verdict = self._policy(caller, claims, person, meta, tool)
        if verdict.verdict == "deny":
            span.set_status(trace.StatusCode.ERROR, verdict.reason)
            return _refusal("PolicyDenied", f"{caller} may not call {self.agent}.{tool}: {verdict.reason}")

        modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
        interactive = (bool(meta.get(INTERACTIVE_META_KEY)) or _declares(meta, "elicitation")) and modern
        samples = (bool(meta.get(SAMPLING_META_KEY)) or _declares(meta, "sampling")) and modern
        state = RoundState.decode(params.get("requestState"), self.keys)
        if state is not None:
            used = self._gate.consume(state)
            if used is not None:
                record_decision("approval", choice="refused", reason=used)
                span.set_status(trace.StatusCode.ERROR, used)
                return _refusal("ApprovalDenied", f"{self.agent}.{tool}: {used}")
        responses: Mapping[str, Any] = params.get("inputResponses") or {}
        approved: str | None = None
        if verdict.verdict == "approval" or tool in self.approval_tools:
            why_needed = verdict.reason if verdict.verdict == "approval" else f"{tool} is marked as needing approval."
            ticket = self._gate.ticket(tool, arguments, caller, budget, self.approval_ttls.get(tool))
            need = Need(ticket=ticket, why=why_needed, approvers=verdict.approvers, person=person)
            if self._gate.already_approved(need.ticket, state):
                approved = state.approved if state else None
            else:
                # Only a plain approval may be answered by the person at the origin; a named group's waits in the queue.
                answer = None if need.approvers else self._gate.answer(need, state, responses)
                if answer is None and interactive and not need.approvers:
                    return self._gate.ask(need, arguments)
                if answer is None:
                    with anyio.move_on_after(budget if budget is not None else float("inf")):
                        answer = await self._gate.queue(need, arguments)
                    answer = answer or (False, "approval expired: the call's time budget ran out while waiting")
                else:
                    await self._gate.audit(need, *answer)
                    approved = state.asked if state and answer[0] else None
                if not answer[0]:
                    span.set_status(trace.StatusCode.ERROR, answer[1])
                    return _refusal("ApprovalDenied", f"{self.agent}.{tool}: {answer[1]}")

        relay = None
        if state is not None and state.relay_agent and state.relay_tool:
            relay = Relay(state.relay_agent, state.relay_tool, state.relay_state, dict(responses), state.relay_instance)
        tokens: list[Token[Any]] = [
            interactive_var.set(interactive),
            sampling_var.set(samples),
            relay_var.set(relay),
            person_var.set(person),
        ]
        try:
            result = await self._run(ctx, call_next, budget)
        except InputNeeded as need:
            if not interactive and not samples:
                return _refusal("ApprovalRequired", f"{need.agent}.{need.tool} needs a person, and none can be asked")
            record_decision("approval", choice="relayed", reason=f"{need.agent}.{need.tool} asks the origin")
            round_state = self._gate.round(
                approved=approved,
                relay_agent=need.agent,
                relay_tool=need.tool,
                relay_state=need.request_state,
                relay_instance=need.instance,
            )
            return InputRequiredResult.model_validate(
                {"inputRequests": need.input_requests, "requestState": round_state.encode(self.keys)}
            )
        finally:
            for token in reversed(tokens):
                token.var.reset(token)
        return result

    async def _guard_read(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext, action: str) -> HandlerResult:
        """A resource read, subscribe or prompt get: the same budget, policy and approval as a tool call."""
        params = ctx.params or {}
        target = str(params.get("uri") if action == "read_resource" else params.get("name"))
        arguments: Mapping[str, Any] | None = params.get("arguments")
        meta: Mapping[str, Any] = ctx.meta or {}
        claims, caller, person, span = _who(ctx, meta)
        if action == "read_resource":
            span.set_attribute("mcp.resource.uri", target)
        what = f"{self.agent} {target}"
        budget = budget_from_meta(meta)
        if budget is not None and budget <= 0:
            record_decision("deadline", choice="refuse", reason="the caller's time budget was already spent")
            raise _read_refusal("DeadlineExceeded", f"{what}: the time budget was spent before it started")
        verdict = self._policy(caller, claims, person, meta, target, action)
        if verdict.verdict == "deny":
            span.set_status(trace.StatusCode.ERROR, verdict.reason)
            verb = _VERBS.get(ctx.method, "read")
            raise _read_refusal("PolicyDenied", f"{caller} may not {verb} {what}: {verdict.reason}")
        # A subscription shows only that the resource changed; each read it leads to waits for its person.
        if verdict.verdict == "approval" and ctx.method != "resources/subscribe":
            ticket = self._gate.ticket(f"{ctx.method} {target}", arguments, caller, budget)
            need = Need(ticket=ticket, why=verdict.reason, approvers=verdict.approvers, person=person)
            answer = None
            with anyio.move_on_after(budget if budget is not None else float("inf")):
                answer = await self._gate.queue(need, arguments)
            answer = answer or (False, "approval expired: the call's time budget ran out while waiting")
            if not answer[0]:
                span.set_status(trace.StatusCode.ERROR, answer[1])
                raise _read_refusal("ApprovalDenied", f"{what}: {answer[1]}")
        tokens: list[Token[Any]] = [person_var.set(person)]
        if budget is not None:
            tokens.append(deadline_var.set(current_deadline(budget, budget)))
        try:
            with anyio.move_on_after(budget if budget is not None else float("inf")):
                return await call_next(ctx)
        finally:
            for token in reversed(tokens):
                token.var.reset(token)
        span.set_status(trace.StatusCode.ERROR, "deadline exceeded")
        raise _read_refusal("DeadlineExceeded", f"{what} ran out of its {budget:.3f}s budget")

    def _policy(
        self,
        caller: str,
        claims: Claims | None,
        person: Person | None,
        meta: Mapping[str, Any],
        tool: str,
        action: str = "call",
    ) -> PolicyDecision:
        # Facts about the caller come from whoever can vouch for them: its signed record, and only for an
        # agent's token (no other role stands in for an agent). Never from what the caller sends.
        known = self._caller_metadata(caller) if claims is not None and claims.role == "agent" else None
        caller_meta: Mapping[str, Any] = known or {}
        data_class = stricter(_travelling_class(meta), caller_meta.get("data_class"))
        facts = CallFacts.of(
            caller,
            caller_meta,
            self.agent,
            self.metadata,
            tool,
            data_class,
            person=person.name if person else None,
            groups=person.groups if person else (),
            action=action,
        )
        decision = self.policy.evaluate(facts)
        if known is None:
            role = claims.role if claims is not None else "no"
            note = f" (caller '{caller}' has a {role} token and no record here: its attributes are empty)"
            decision = replace(decision, reason=decision.reason + note)
        record_decision(
            "policy",
            choice=decision.verdict,
            reason=decision.reason,
            alternatives=("allow", "deny", "approval"),
            attributes={"mesh.policy.side": "callee", "mesh.policy.ids": decision.policies},
        )
        return decision

    async def _run(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext, budget: float | None
    ) -> HandlerResult:
        if budget is None:
            return await call_next(ctx)
        token = deadline_var.set(current_deadline(budget, budget))
        result: HandlerResult = None
        try:
            with anyio.move_on_after(budget) as scope:
                result = await call_next(ctx)
        finally:
            deadline_var.reset(token)
        if scope.cancelled_caught:
            trace.get_current_span().set_status(trace.StatusCode.ERROR, "deadline exceeded")
            return _refusal(
                "DeadlineExceeded",
                f"{self.agent}.{ctx.params and ctx.params.get('name')} ran out of its {budget:.3f}s budget",
            )
        return result


_VERBS: Final = {"resources/subscribe": "subscribe to", "prompts/get": "get the prompt"}


def _travelling_class(meta: Mapping[str, Any]) -> str | None:
    if BAGGAGE_META_KEY not in meta:  # most calls carry no data class
        return None
    carried = propagate.extract(dict(meta))
    value = baggage.get_baggage(DATA_CLASS_BAGGAGE, carried)
    return str(value) if value else None


def _read_refusal(kind: str, message: str) -> MCPError:
    """A refused read or prompt: a JSON-RPC error, its kind in `data` as a tool refusal's is in `_meta`."""
    return MCPError(code=INVALID_REQUEST, message=f"{kind}: {message}", data={ERROR_META_KEY: kind})


def _refusal(kind: str, message: str) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=f"{kind}: {message}")],
        is_error=True,
        _meta={ERROR_META_KEY: kind},  # pyright: ignore[reportCallIssue]
    )


def _declares(meta: Mapping[str, Any], capability: str) -> bool:
    """Whether a 2026-07-28 client declared `capability` (elicitation, sampling); mesh hops declare none."""
    caps = meta.get(CLIENT_CAPABILITIES_META_KEY)
    return isinstance(caps, dict) and isinstance(caps.get(capability), dict)  # pyright: ignore[reportUnknownMemberType]


def _who(
    ctx: ServerRequestContext[Any, Any], meta: Mapping[str, Any]
) -> tuple[Claims | None, str, Person | None, Span]:
    """Who calls (from the verified token), for whom, and the SERVER span that records both."""
    claims = verified_claims(ctx.request)
    caller = claims.caller if claims is not None else "anonymous"
    person = person_of(claims, meta)
    span = trace.get_current_span()
    span.set_attribute("mesh.caller", caller)
    if person is not None:
        span.set_attribute("mesh.person", person.name)
    return claims, caller, person, span
