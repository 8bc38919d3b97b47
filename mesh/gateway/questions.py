"""Questions from the mesh, put to the gateway's MCP client: approvals, a tool's own, an adopted server's.

A handshake-era client (2025-11-25) is asked on its back-channel (`elicitation/create`, or
`sampling/createMessage` when an adopted server samples), and the call is repeated with the answer
(`with_answers`). A 2026-07-28 client gets an `input_required` round carrying the question and a
signed round state; its retry brings the answer, which travels down to the agent that asked. A client
is asked only what it declared it can answer: otherwise an approval goes to the registry's approvals
queue, and an adopted server's request is refused to it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from mcp.server.context import ServerRequestContext
from mcp.shared.message import ServerMessageMetadata
from mcp_types import (
    CallToolRequestParams,
    CreateMessageRequest,
    CreateMessageResult,
    CreateMessageResultWithTools,
    ElicitRequest,
    ElicitResult,
    InputRequiredResult,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ValidationError

from mesh.approvals import RoundState
from mesh.errors import ApprovalRequired
from mesh.identity import MeshKeys
from mesh.peers.questions import sampling_var
from mesh.peers.rounds import InputNeeded, Relay, interactive_var, relay_var, with_answers

__all__ = ["can_ask", "can_sample", "relayed_call"]

_T = TypeVar("_T")


def can_ask(ctx: ServerRequestContext[Any]) -> bool:
    """True when the client declared it can answer elicitations."""
    capabilities = ctx.session.client_capabilities
    return capabilities is not None and capabilities.elicitation is not None


def can_sample(ctx: ServerRequestContext[Any]) -> bool:
    """True when the client declared it can answer sampling requests."""
    capabilities = ctx.session.client_capabilities
    return capabilities is not None and capabilities.sampling is not None


async def relayed_call(
    ctx: ServerRequestContext[Any],
    params: CallToolRequestParams,
    keys: MeshKeys,
    call: Callable[[], Awaitable[_T]],
) -> _T | InputRequiredResult:
    """Run `call` so that any question in the chain reaches this client, when it can answer that kind."""
    elicits, samples = can_ask(ctx), can_sample(ctx)
    if not elicits and not samples:
        return await call()
    if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:

        async def ask(key: str, request: Mapping[str, Any]) -> dict[str, Any]:
            del key
            return await _ask_on_connection(ctx, request)

        async def flagged() -> _T:
            # What this client can answer, for the hops to say (`with_answers` assumes elicitation).
            tokens = (interactive_var.set(elicits), sampling_var.set(samples))
            try:
                return await call()
            finally:
                sampling_var.reset(tokens[1])
                interactive_var.reset(tokens[0])

        return await with_answers(flagged, ask)
    state = RoundState.decode(params.request_state, keys)
    relay = None
    if state is not None and state.relay_agent and state.relay_tool:
        answers = {
            key: value.model_dump(mode="json", by_alias=True, exclude_none=True)
            for key, value in (params.input_responses or {}).items()
        }
        relay = Relay(state.relay_agent, state.relay_tool, state.relay_state, answers, state.relay_instance)
    tokens = (interactive_var.set(elicits), relay_var.set(relay), sampling_var.set(samples))
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
        sampling_var.reset(tokens[2])
        relay_var.reset(tokens[1])
        interactive_var.reset(tokens[0])


async def _ask_on_connection(ctx: ServerRequestContext[Any], request: Mapping[str, Any]) -> dict[str, Any]:
    """Put one question from down the chain to a handshake-era client on its back-channel; its answer."""
    related = ServerMessageMetadata(related_request_id=ctx.request_id)
    result: type[BaseModel]
    try:
        if request.get("method") == "sampling/createMessage":
            typed: ElicitRequest | CreateMessageRequest = CreateMessageRequest.model_validate(request)
            tools = typed.params.tools or typed.params.tool_choice
            result = CreateMessageResultWithTools if tools else CreateMessageResult
        else:
            typed = ElicitRequest.model_validate(request)
            result = ElicitResult
    except ValidationError:
        raise ApprovalRequired(f"a question from down the call chain is malformed ({request.get('method')})") from None
    answer = await ctx.session.send_request(typed, result, metadata=related)
    return answer.model_dump(mode="json", by_alias=True, exclude_none=True)
