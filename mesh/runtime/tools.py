"""Adapts an Agent's tools to the SDK's `MCPServer`: annotations, `mesh.Context` injection, errors.

Owns the wrapper around each tool function. It does not serve, authenticate or trace:
the middleware (`mesh.tracing.server_spans` in place of the SDK's own) and the runtime's ASGI
layers do that around it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, final

import anyio.to_thread
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.mcpserver import Context as SdkContext
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import ValidationError

from mesh.agent import Agent, ToolSpec
from mesh.context import Context
from mesh.errors import MeshError
from mesh.identity import Claims
from mesh.peers.notices import sink_var
from mesh.peers.questions import Questions
from mesh.peers.rounds import InputNeeded, relay_var
from mesh.protocols import PeerCaller
from mesh.runtime.notices import LogLevels, answer_set_level, notices_of
from mesh.runtime.resources import add_resources
from mesh.runtime.schema_tools import schema_tool
from mesh.tracing.server_spans import in_place_of_sdk_spans
from mesh.wire import APPROVAL_META_KEY, GOVERNANCE_META_KEY

__all__ = [
    "ArgumentCheck",
    "build_server",
    "caller_of",
    "describe_validation",
    "verified_caller",
    "verified_claims",
]

_SDK_CONTEXT_KWARG = "_mesh_sdk_context"
CALLER_STATE_KEY = "mesh.caller"
"""Where the auth layer leaves the verified caller's name in the ASGI scope's state."""
CLAIMS_STATE_KEY = "mesh.claims"
"""Where the auth layer leaves the verified token's `Claims` in the ASGI scope's state."""


def build_server(
    agent: Agent,
    *,
    peers: PeerCaller | None,
    middleware: Sequence[ServerMiddleware[Any]] = (),
) -> MCPServer:
    """An `MCPServer` serving `agent`'s tools, resources and prompts, each wrapped to get a `mesh.Context`."""
    levels = LogLevels()
    tools = [_sdk_tool(agent, spec, peers, levels) for spec in agent.tools.values()]
    server = MCPServer(
        agent.name,
        description=agent.description,
        version=agent.version,
        tools=tools,
        middleware=[
            *middleware,
            ArgumentCheck(tools),
            GovernanceListing(agent.governance.model_dump(exclude_none=True)),
        ],
        log_level="WARNING",
    )
    in_place_of_sdk_spans(server.middleware)  # the same SERVER spans as the SDK's own middleware, made directly
    add_resources(server, agent, peers=peers, caller_of=verified_caller)
    answer_set_level(server, levels)
    return server


@final
class ArgumentCheck:
    """Answers a `tools/call` with bad arguments with one line naming each bad argument."""

    def __init__(self, tools: Sequence[Tool]) -> None:
        self._models = {tool.name: tool.fn_metadata.arg_model for tool in tools}

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "tools/call" and ctx.params:
            model = self._models.get(str(ctx.params.get("name")))
            arguments = ctx.params.get("arguments") or {}
            if model is not None and isinstance(arguments, dict):
                try:
                    model.model_validate(arguments)
                except ValidationError as exc:
                    message = f"invalid arguments for {ctx.params['name']}: {describe_validation(exc)}"
                    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)
        return await call_next(ctx)


@final
class GovernanceListing:
    """States the agent's governance metadata in the `_meta` of `tools/list`, for mDNS-only peers."""

    def __init__(self, metadata: dict[str, Any]) -> None:
        self._metadata = metadata

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        if ctx.method == "tools/list" and isinstance(result, dict):
            # The SDK serialises inside the chain, so the listing arrives here as its wire dict.
            meta: dict[str, Any] = dict(result.get("_meta") or {})
            meta[GOVERNANCE_META_KEY] = self._metadata
            result["_meta"] = meta
        return result


def describe_validation(exc: ValidationError) -> str:
    """A pydantic error as one line: `'text': field required; 'n': input should be a valid integer`."""
    parts: list[str] = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "arguments"
        parts.append(f"{where!r}: {error['msg'][:1].lower()}{error['msg'][1:]}")
    return "; ".join(parts)


def caller_of(sdk_ctx: SdkContext[Any, Any] | None) -> str | None:
    """The verified caller of the request a tool serves."""
    return None if sdk_ctx is None else verified_caller(sdk_ctx.request_context.request)


def verified_caller(request: object) -> str | None:
    """The caller the auth layer verified and left in the request's ASGI scope, if any."""
    scope: dict[str, Any] = getattr(request, "scope", None) or {}
    state: dict[str, Any] = scope.get("state") or {}
    caller = state.get(CALLER_STATE_KEY)
    return caller if isinstance(caller, str) else None


def verified_claims(request: object) -> Claims | None:
    """The claims of the token the auth layer verified for this request, if any."""
    scope: dict[str, Any] = getattr(request, "scope", None) or {}
    state: dict[str, Any] = scope.get("state") or {}
    claims = state.get(CLAIMS_STATE_KEY)
    return claims if isinstance(claims, Claims) else None


def _sdk_tool(agent: Agent, spec: ToolSpec, peers: PeerCaller | None, levels: LogLevels) -> Tool:
    annotations = ToolAnnotations(
        title=spec.title,
        read_only_hint=spec.read_only,
        idempotent_hint=spec.idempotent,
        destructive_hint=spec.destructive if spec.destructive is not None else not spec.read_only,
        open_world_hint=spec.open_world,
    )
    if spec.input_schema is not None and spec.arguments_param is not None:
        return schema_tool(
            _wrap(agent, spec, peers, levels),
            spec.input_schema,
            spec.arguments_param,
            name=spec.name,
            title=spec.title,
            description=spec.description or "",
            context_kwarg=_SDK_CONTEXT_KWARG,
            annotations=annotations,
            meta={APPROVAL_META_KEY: True} if spec.approval else None,
        )
    return Tool.from_function(
        _wrap(agent, spec, peers, levels),
        name=spec.name,
        title=spec.title,
        description=spec.description or "",
        context_kwarg=_SDK_CONTEXT_KWARG,
        annotations=annotations,
        meta={APPROVAL_META_KEY: True} if spec.approval else None,
    )


def _wrap(agent: Agent, spec: ToolSpec, peers: PeerCaller | None, levels: LogLevels) -> Callable[..., Any]:
    fn = spec.fn
    agent_name = agent.name
    metadata = agent.governance.model_dump(exclude_none=True)
    is_async = inspect.iscoroutinefunction(fn)

    async def run(kwargs: dict[str, Any]) -> Any:
        try:
            if is_async:
                return await fn(**kwargs)
            return await anyio.to_thread.run_sync(lambda: fn(**kwargs))
        except InputNeeded:
            raise  # a question for a person travels up the chain (the guard relays it)
        except MeshError as exc:
            # A mesh failure inside a tool is the tool's answer, not a crash: keep its words.
            raise ToolError(f"{type(exc).__name__}: {exc}") from exc

    async def tool(**kwargs: Any) -> Any:
        sdk_ctx: SdkContext[Any, Any] | None = kwargs.pop(_SDK_CONTEXT_KWARG, None)
        if spec.context_param is None:
            return await run(kwargs)
        notices = notices_of(sdk_ctx, levels)
        # This tool's own questions answered in earlier rounds; what is left of the relay is for its callees.
        questions, relay = Questions.of_round(agent_name, spec.name, relay_var.get())
        kwargs[spec.context_param] = Context(
            agent=agent_name,
            tool=spec.name,
            caller=caller_of(sdk_ctx),
            peers=peers,
            metadata=metadata,
            request=sdk_ctx,
            notices=notices,
            questions=questions,
        )
        # The pool reads both for the hops this tool makes: notices go up to this call's caller.
        sink_token, relay_token = sink_var.set(notices), relay_var.set(relay)
        try:
            return await run(kwargs)
        except InputNeeded as need:
            raise questions.carry(need) from None  # keep this run's answers for the round after a callee's
        finally:
            relay_var.reset(relay_token)
            sink_var.reset(sink_token)

    full = inspect.signature(fn, eval_str=True)
    # The SDK builds the input schema from this signature: hide the mesh.Context parameter.
    params = [p for name, p in full.parameters.items() if name != spec.context_param]
    signature = full.replace(parameters=params)
    tool.__signature__ = signature  # type: ignore[attr-defined]
    tool.__name__ = spec.name
    tool.__doc__ = spec.description
    hints = {p.name: p.annotation for p in params if p.annotation is not inspect.Parameter.empty}
    if signature.return_annotation is not inspect.Signature.empty:
        hints["return"] = signature.return_annotation
    tool.__annotations__ = hints
    return tool
