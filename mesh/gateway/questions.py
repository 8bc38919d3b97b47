"""Approval questions from the mesh, put to the person behind the gateway's MCP client.

A handshake-era client (2025-11-25) is asked with `elicitation/create` on its back-channel,
and the call is repeated with the answer (`with_answers`). A 2026-07-28 client gets an
`input_required` round carrying the question and a signed round state; its retry brings the
answer, which travels down to the agent that asked. A client that cannot elicit is never
asked: the mesh then uses the registry's approvals queue.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from mcp.server.context import ServerRequestContext
from mcp_types import CallToolRequestParams, InputRequiredResult
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from mesh.approvals import RoundState
from mesh.identity import MeshKeys
from mesh.peers.rounds import InputNeeded, Relay, interactive_var, relay_var, with_answers

__all__ = ["can_ask", "relayed_call"]

_T = TypeVar("_T")


def can_ask(ctx: ServerRequestContext[Any]) -> bool:
    """True when the client declared it can answer elicitations."""
    capabilities = ctx.session.client_capabilities
    return capabilities is not None and capabilities.elicitation is not None


async def relayed_call(
    ctx: ServerRequestContext[Any],
    params: CallToolRequestParams,
    keys: MeshKeys,
    call: Callable[[], Awaitable[_T]],
) -> _T | InputRequiredResult:
    """Run `call` so that any approval question in the chain reaches this client's person."""
    if not can_ask(ctx):
        return await call()
    if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:

        async def ask(key: str, request: Mapping[str, Any]) -> dict[str, Any]:
            del key
            form: Mapping[str, Any] = request.get("params") or {}
            answer = await ctx.session.elicit_form(
                str(form.get("message") or "Approve this call?"),
                form.get("requestedSchema") or {"type": "object", "properties": {}},
                related_request_id=ctx.request_id,
            )
            return answer.model_dump(mode="json", by_alias=True, exclude_none=True)

        return await with_answers(call, ask)
    state = RoundState.decode(params.request_state, keys)
    relay = None
    if state is not None and state.relay_agent and state.relay_tool:
        answers = {
            key: value.model_dump(mode="json", by_alias=True, exclude_none=True)
            for key, value in (params.input_responses or {}).items()
        }
        relay = Relay(state.relay_agent, state.relay_tool, state.relay_state, answers, state.relay_instance)
    tokens = (interactive_var.set(True), relay_var.set(relay))
    try:
        return await call()
    except InputNeeded as need:
        round_state = RoundState(
            relay_agent=need.agent,
            relay_tool=need.tool,
            relay_state=need.request_state,
            relay_instance=need.instance,
        )
        return InputRequiredResult.model_validate(
            {"inputRequests": need.input_requests, "requestState": round_state.encode(keys)}
        )
    finally:
        relay_var.reset(tokens[1])
        interactive_var.reset(tokens[0])
