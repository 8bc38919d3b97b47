"""The callee's side of every `tools/call`: the deadline it was given, and policy (DESIGN §6, §7).

A `ServerMiddleware` inside the SDK's OpenTelemetry middleware, so its decisions land on
the server span. A spent budget or a policy deny answers with an error result naming why;
the tool never runs. Identity was already proven by the ASGI layer (`BearerAuth`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, final

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp_types import CallToolResult, TextContent
from opentelemetry import baggage, propagate, trace

from mesh.decisions import record_decision
from mesh.peers.budget import budget_from_meta, current_deadline, deadline_var
from mesh.peers.pool import CALLER_META_KEY, DATA_CLASS_BAGGAGE, ERROR_META_KEY, stricter
from mesh.policy import CallFacts, Policy
from mesh.runtime.tools import CALLER_STATE_KEY

__all__ = ["CallGuard"]


@final
class CallGuard:
    """Refuses calls whose budget is spent or that policy denies, before the tool runs."""

    def __init__(
        self,
        *,
        agent: str,
        metadata: Mapping[str, Any],
        policy: Policy,
        caller_metadata: Callable[[str], Mapping[str, Any] | None],
    ) -> None:
        self.agent = agent
        self.metadata = dict(metadata)
        self.policy = policy
        self._caller_metadata = caller_metadata

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call" or not ctx.params:
            return await call_next(ctx)
        tool = str(ctx.params.get("name"))
        meta: Mapping[str, Any] = ctx.meta or {}
        caller = _caller(ctx) or "anonymous"
        span = trace.get_current_span()
        span.set_attribute("mesh.caller", caller)
        budget = budget_from_meta(meta)
        if budget is not None and budget <= 0:
            record_decision("deadline", choice="refuse", reason="the caller's time budget was already spent")
            return _refusal(
                "DeadlineExceeded", f"{self.agent}.{tool}: the call's time budget was spent before it started"
            )
        known = self._caller_metadata(caller)
        sent = meta.get(CALLER_META_KEY)
        caller_meta: Mapping[str, Any] = known if known is not None else (sent if isinstance(sent, dict) else {})  # pyright: ignore[reportUnknownVariableType]
        data_class = stricter(_travelling_class(meta), caller_meta.get("data_class"))
        decision = self.policy.evaluate(CallFacts.of(caller, caller_meta, self.agent, self.metadata, tool, data_class))
        record_decision(
            "policy",
            choice=decision.verdict,
            reason=decision.reason,
            alternatives=("allow", "deny", "approval"),
            attributes={"mesh.policy.side": "callee", "mesh.policy.ids": list(decision.policies)},
        )
        if decision.verdict == "deny":
            span.set_status(trace.StatusCode.ERROR, decision.reason)
            return _refusal("PolicyDenied", f"{caller} may not call {self.agent}.{tool}: {decision.reason}")
        if budget is None:
            return await call_next(ctx)
        deadline = current_deadline(budget, budget)
        token = deadline_var.set(deadline)
        result: HandlerResult = None
        try:
            with anyio.move_on_after(budget) as scope:
                result = await call_next(ctx)
        finally:
            deadline_var.reset(token)
        if scope.cancelled_caught:
            span.set_status(trace.StatusCode.ERROR, "deadline exceeded")
            return _refusal("DeadlineExceeded", f"{self.agent}.{tool} ran out of its {budget:.3f}s budget")
        return result


def _caller(ctx: ServerRequestContext[Any, Any]) -> str | None:
    scope: dict[str, Any] | None = getattr(ctx.request, "scope", None)
    state: dict[str, Any] = (scope or {}).get("state") or {}
    caller = state.get(CALLER_STATE_KEY)
    return caller if isinstance(caller, str) else None


def _travelling_class(meta: Mapping[str, Any]) -> str | None:
    carried = propagate.extract(dict(meta))
    value = baggage.get_baggage(DATA_CLASS_BAGGAGE, carried)
    return str(value) if value else None


def _refusal(kind: str, message: str) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=f"{kind}: {message}")],
        is_error=True,
        _meta={ERROR_META_KEY: kind},  # pyright: ignore[reportCallIssue]
    )
