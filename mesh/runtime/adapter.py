"""`mesh run --command` / `--url`: any MCP server on the mesh, unchanged, behind the mesh's own layers.

Owns `AdoptedServer`, an `MCPServer` that lists the adopted server's tools as that server lists
them (names, descriptions, schemas, annotations) and forwards each `tools/call` through one
`Upstream` session, inside a CLIENT span; what the server asks the client meanwhile (elicitation,
sampling) reaches the call's caller (`mesh.runtime.adopted_questions`). Auth, the `CallGuard` (policy,
approvals), SERVER spans, registration and mDNS are the same as a native agent's
(`mesh.runtime.process.serve_on_mesh`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Any, final

import anyio
from anyio.abc import TaskStatus
from mcp.server.context import ServerMiddleware, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp_types import CallToolResult, TextContent, Tool
from opentelemetry import trace

from mesh.agent import Agent
from mesh.errors import PeerError
from mesh.peers.notices import NoticeSink
from mesh.peers.rounds import InputNeeded
from mesh.protocols import PeerCaller
from mesh.runtime.adopted_questions import QuestionRelay
from mesh.runtime.adopted_resources import AdoptedOfferings
from mesh.runtime.guard import CallGuard
from mesh.runtime.notices import LogLevels, answer_set_level, notices_of
from mesh.runtime.process import RunOptions, Served, serve_on_mesh
from mesh.runtime.tools import GovernanceListing, verified_caller
from mesh.runtime.upstream import CallerQuestions, Upstream, UpstreamSpec
from mesh.tracing.server_spans import SCOPE, in_place_of_sdk_spans
from mesh.wire import ERROR_META_KEY

__all__ = ["UNGOVERNED_KEY", "AdoptedServer", "adopted_agent", "serve_adopted"]

log = logging.getLogger("mesh.adapter")

UNGOVERNED_KEY = "ungoverned"
"""Metadata key set to "true" on an adopted server that nobody owns (no `--meta owner=...`)."""


def adopted_agent(name: str, meta: Mapping[str, str]) -> Agent:
    """The governance facts of an adopted server: its `--meta`, flagged ungoverned when it names no owner."""
    agent = Agent(name).with_overrides(meta=meta)
    if agent.owner is None:
        agent = agent.with_overrides(meta={UNGOVERNED_KEY: "true"})
    return agent


async def serve_adopted(
    name: str,
    spec: UpstreamSpec,
    options: RunOptions,
    *,
    meta: Mapping[str, str] | None = None,
    task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Start (or reach) the server `spec` names and serve it to the mesh as agent `name` until cancelled."""
    agent = adopted_agent(name, meta or {})
    print(f"mesh: adopting the {spec.transport} MCP server {spec.describe()} as {name}", file=sys.stderr, flush=True)
    async with Upstream(spec) as upstream, QuestionRelay(name) as questions:
        if agent.description is None and upstream.server_name:
            agent = agent.with_overrides(meta={"description": f"MCP server {upstream.server_name}, adopted"})
        if agent.owner is None:
            log.warning("%s has no owner (--meta owner=...): it is listed as ungoverned", name)

        def build(guard: CallGuard, peers: PeerCaller) -> MCPServer:
            del peers  # an adopted server calls no peers
            return AdoptedServer(agent, upstream, questions=questions, middleware=[guard])

        served = Served(
            name=agent.name,
            governance=agent.governance,
            build=build,
            version=agent.version,
            relisted=upstream.relisted,
        )
        await serve_on_mesh(served, options, task_status=task_status)


@final
class AdoptedServer(MCPServer[Any]):
    """Lists `upstream`'s tools as its own and forwards their calls; a lost server is an error result."""

    def __init__(
        self,
        agent: Agent,
        upstream: Upstream,
        *,
        questions: QuestionRelay,
        middleware: Sequence[ServerMiddleware[Any]] = (),
    ) -> None:
        bus = InMemorySubscriptionBus()  # `subscriptions/listen`: the server's list changes reach listeners
        super().__init__(
            agent.name,
            description=agent.description,
            version=agent.version,
            middleware=[
                *middleware,
                GovernanceListing(agent.governance.model_dump(exclude_none=True)),
                AdoptedOfferings(upstream, bus),  # its resources and prompts, passed through (inside the guard)
            ],
            log_level="WARNING",
            subscriptions=bus,
        )
        in_place_of_sdk_spans(self.middleware)  # the mesh's SERVER spans, as a native agent's server has
        self._upstream = upstream
        self._questions = questions
        self._levels = LogLevels()
        answer_set_level(self, self._levels)

    async def list_tools(self) -> list[Tool]:
        """The adopted server's tools, exactly as it last listed them."""
        return list(self._upstream.tools)

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult:
        """Forward `name` to the adopted server inside a CLIENT span; its answer comes back unchanged.

        The server's progress and log messages for the call go to the caller, when it asked for them,
        and its elicitation and sampling requests too (raising `InputNeeded` to ask up the chain).
        """
        notices = notices_of(context, self._levels)
        request = _request_of(context)
        if name not in {tool.name for tool in self._upstream.tools}:
            raise ToolError(f"Unknown tool: {name}")
        spec = self._upstream.spec
        attributes = {
            "mcp.method.name": "tools/call",
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "mesh.adopted.transport": spec.transport,
            "mesh.adopted.server": self._upstream.server_name or spec.transport,
        }
        # The process's tracer, looked up at each call (one taken at import would be a ProxyTracer).
        tracer = trace.get_tracer_provider().get_tracer(SCOPE)
        upstream = self._upstream

        async def forward(asks: CallerQuestions, sink: NoticeSink | None) -> CallToolResult:
            return await upstream.call(name, arguments, notices=sink, asks=asks)

        asking: InputNeeded | None = None
        with tracer.start_as_current_span(
            f"tools/call {name}", kind=trace.SpanKind.CLIENT, attributes=attributes
        ) as span:
            try:
                caller = verified_caller(request.request) if request is not None else None
                result = await self._questions.run(name, forward, request=request, caller=caller, notices=notices)
            except InputNeeded as need:  # not a failure: the server asked, and the call waits for the answer
                asked = [str(r.get("method")) for r in need.input_requests.values() if isinstance(r, dict)]
                span.set_attribute("mesh.adopted.asks", asked)
                asking = need
            except PeerError as exc:
                kind = type(exc).__name__
                span.set_status(trace.StatusCode.ERROR, f"{kind}: {exc}")
                return CallToolResult(
                    content=[TextContent(type="text", text=f"{kind}: {exc}")],
                    is_error=True,
                    _meta={ERROR_META_KEY: kind},  # pyright: ignore[reportCallIssue]
                )
            else:
                if result.is_error:
                    span.set_status(trace.StatusCode.ERROR, "the adopted server answered with an error")
                return result
        assert asking is not None
        raise asking


def _request_of(context: Context[Any, Any] | None) -> ServerRequestContext[Any, Any] | None:
    """The request behind the SDK's tool `Context`, when there is one."""
    if context is None:
        return None
    try:
        return context.request_context
    except ValueError:  # a Context built outside a request
        return None
