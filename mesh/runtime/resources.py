"""An Agent's resources and prompts on the SDK's `MCPServer`, each function given its `mesh.Context`.

Owns the wrappers: the SDK registers, matches, validates and renders them (`MCPServer.resource`
and `.prompt`); the wrapper hides the `mesh.Context` parameter from the SDK and fills it in from
the request being served, which `RequestScope` keeps because the SDK hands a static resource no
context at all. Policy (`CallGuard`) and SERVER spans (`ServerSpans`) sit around these as around tools.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, Final, final

import anyio.to_thread
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context as SdkContext
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR

from mesh.agent import Agent
from mesh.context import Context, resource_updates_var
from mesh.errors import MeshError
from mesh.peers.rounds import InputNeeded
from mesh.protocols import PeerCaller
from mesh.runtime.subscriptions import ResourceSubscriptions

__all__ = ["GOVERNED_METHODS", "RequestScope", "add_resources"]

GOVERNED_METHODS: Final = ("resources/read", "prompts/get")
"""The methods besides `tools/call` that run an agent's own code, so policy and a context apply to them."""

_request_var: ContextVar[ServerRequestContext[Any, Any] | None] = ContextVar("mesh_resource_request", default=None)


def add_resources(
    server: MCPServer,
    agent: Agent,
    *,
    peers: PeerCaller | None,
    caller_of: Callable[[object], str | None],
) -> None:
    """Register `agent`'s resources and prompts on `server`; `caller_of` reads the verified caller off a request."""
    if not agent.resources and not agent.prompts:
        return
    server.middleware.append(RequestScope())
    if agent.resources:
        subscriptions = ResourceSubscriptions(tuple(agent.resources))
        subscriptions.install(server)
        resource_updates_var.set(subscriptions)  # inherited by the tasks that serve this agent's calls
    binder = _Binder(agent, server, peers, caller_of)
    for res in agent.resources.values():
        register = server.resource(
            res.uri, name=res.name, title=res.title, description=res.description, mime_type=res.mime_type
        )
        register(binder.bind(res.fn, res.context_param))
    for prompt in agent.prompts.values():
        register = server.prompt(name=prompt.name, title=prompt.title, description=prompt.description)
        register(binder.bind(prompt.fn, prompt.context_param))


@final
class RequestScope:
    """Middleware: keeps the request a resource read or prompt get serves, for the function's `mesh.Context`."""

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method not in GOVERNED_METHODS:
            return await call_next(ctx)
        token = _request_var.set(ctx)
        try:
            return await call_next(ctx)
        finally:
            _request_var.reset(token)


@final
class _Binder:
    """Wraps resource and prompt functions so that each gets a `mesh.Context` for the request it serves."""

    def __init__(
        self, agent: Agent, server: MCPServer, peers: PeerCaller | None, caller_of: Callable[[object], str | None]
    ) -> None:
        self._agent = agent.name
        self._metadata: Mapping[str, Any] = agent.governance.model_dump(exclude_none=True)
        self._server = server
        self._peers = peers
        self._caller_of = caller_of

    def bind(self, fn: Callable[..., Any], context_param: str | None) -> Callable[..., Any]:
        """`fn` as the SDK should see it: its own parameters without the context, always async."""
        is_async = inspect.iscoroutinefunction(fn)

        async def run(**kwargs: Any) -> Any:
            if context_param is not None:
                kwargs[context_param] = self._context()
            try:
                if is_async:
                    return await fn(**kwargs)
                return await anyio.to_thread.run_sync(lambda: fn(**kwargs))
            except InputNeeded:
                raise  # a question for a person travels up the chain (the guard relays it)
            except MeshError as exc:
                # A mesh failure inside the function is its answer, not a crash: keep its words.
                raise MCPError(code=INTERNAL_ERROR, message=f"{type(exc).__name__}: {exc}") from exc

        full = inspect.signature(fn, eval_str=True)
        params = [p for name, p in full.parameters.items() if name != context_param]
        signature = full.replace(parameters=params)
        run.__signature__ = signature  # type: ignore[attr-defined]
        run.__name__ = fn.__name__
        run.__doc__ = fn.__doc__
        hints = {p.name: p.annotation for p in params if p.annotation is not inspect.Parameter.empty}
        if signature.return_annotation is not inspect.Signature.empty:
            hints["return"] = signature.return_annotation
        run.__annotations__ = hints  # the SDK validates arguments with these (pydantic's validate_call)
        return run

    def _context(self) -> Context:
        request = _request_var.get()
        params: Mapping[str, Any] = (request.params if request is not None else None) or {}
        target = params.get("uri") or params.get("name") or ""
        return Context(
            agent=self._agent,
            tool=str(target),
            caller=self._caller_of(request.request) if request is not None else None,
            peers=self._peers,
            metadata=self._metadata,
            request=SdkContext(request_context=request, mcp_server=self._server) if request is not None else None,
        )
