"""`Gateway`: the whole mesh as one MCP server on stdio — what Claude Desktop launches (DESIGN §2).

Owns the SDK's low-level `Server` that lists the catalog and routes each `tools/call` peer to
peer through `node.pool` (or to the registry's own `/mcp`), relaying the progress and log messages
sent down the chain back to the client (`mesh.peers.notices`), and telling the client when the
listing changes: `notifications/tools/list_changed` on the connection for handshake-era
(2025-11-25) clients, a `ToolsListChanged` event on `subscriptions/listen` streams for
2026-07-28 ones; the same for the resource and prompt listings (`mesh.gateway.offering_watch`).
The trace root is the SDK's own SERVER span (its OpenTelemetryMiddleware parents it on a `_meta`
traceparent when one came, else starts the trace); the gateway names it after the mesh call, and
`node.pool`'s CLIENT span nests under it. Discovery is the node's.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import AsyncGenerator, Mapping
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final, Literal, Self, final

import anyio
import httpx2
from anyio import AsyncContextManagerMixin
from mcp.server import CacheHint, NotificationOptions, Server, ServerRequestContext
from mcp.server.context import CallNext, HandlerResult
from mcp.server.session import ServerSession
from mcp.server.stdio import stdio_server
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ResourcesListChanged,
    ToolsListChanged,
)
from mcp_types import (
    CallToolRequestParams,
    CallToolResult,
    InputRequiredResult,
    ListToolsResult,
    PaginatedRequestParams,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from opentelemetry import propagate, trace
from pydantic import ValidationError

from mesh.config import mesh_paths
from mesh.credentials import acting_credential
from mesh.errors import MeshError
from mesh.gateway.catalog import REGISTRY_AGENT, Catalog, Listing, build_catalog, split_name, tool_info
from mesh.gateway.offering_watch import OfferingWatch
from mesh.gateway.questions import relayed_call
from mesh.gateway.resources import install_resources
from mesh.gateway.results import failure, tool_result
from mesh.identity import Credential, MeshKeys
from mesh.peers.hop import HopClient
from mesh.peers.notices import sink_var
from mesh.runtime.node import MeshNode
from mesh.runtime.notices import LogLevels, RequestNotices, answer_set_level
from mesh.tracing.telemetry import ProcessTelemetry

__all__ = ["GATEWAY_NAME", "Gateway", "serve_gateway"]

log = logging.getLogger(__name__)

GATEWAY_NAME: Final = "gateway"
"""The gateway's name in the mesh: its tokens' caller, its spans' agent."""

_MDNS_WINDOW: Final = 1.5  # seconds to listen before the first listing: answers take up to ~1.2 s
_RECHECK: Final = 2.0  # seconds between re-reads of the listing: health also lapses without events
_REGISTRY_REFRESH: Final = 30.0  # seconds between re-listings of the registry's tools
_REGISTRY_RETRY: Final = 3.0  # seconds before asking a registry that did not answer again
_INSTRUCTIONS: Final = (
    "Every tool of the agentplex mesh, named AGENT__TOOL; each description starts with the agent "
    "and its governance facts [agent · owner · jurisdiction · data class]. registry__* tools answer "
    "which agents exist and why a call chain did what it did."
)


@final
class Gateway(AsyncContextManagerMixin):
    """Serves the mesh `node` sees as one MCP server, following it live. Single use."""

    def __init__(self, node: MeshNode, *, call_timeout: float | None = None, settle_timeout: float = 5.0) -> None:
        self.node = node
        self.call_timeout = call_timeout
        self.settle_timeout = settle_timeout
        self._bus = InMemorySubscriptionBus()
        self._link = _ClientLink()
        self._levels = LogLevels()
        self.server: Server[Any] = Server(
            "agentplex",
            version=_version(),
            title=f"agentplex mesh {node.mesh}",
            instructions=_INSTRUCTIONS,
            cache_hints={"tools/list": CacheHint(ttl_ms=0)},  # the listing is live: never serve it stale
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_subscriptions_listen=ListenHandler(self._bus),
        )
        answer_set_level(self.server, self._levels)  # for 2025-11-25 clients; later ones ask per call
        self.server.middleware.append(self._link)
        # Every agent's resources and prompts (mesh.gateway.resources), and telling the client of changes.
        self._offering_watch = OfferingWatch(install_resources(self))
        self._registry_tools: tuple[Mapping[str, Any], ...] = ()
        self._registry_hop: HopClient | None = None
        self._http: httpx2.AsyncClient | None = None
        self._ready = anyio.Event()
        self._registry_tried = anyio.Event()
        self._announced = ""
        self._used = False

    def catalog(self) -> Catalog:
        """What the gateway lists right now."""
        return build_catalog(self.node.directory.all(), self._registry_tools)

    async def serve_stdio(self) -> None:
        """Serve the client on this process's stdin/stdout (either protocol generation) until it hangs up."""
        changes = NotificationOptions(tools_changed=True, resources_changed=True, prompts_changed=True)
        options = self.server.create_initialization_options(changes)
        async with stdio_server() as (read_stream, write_stream):
            await self.server.run(read_stream, write_stream, options)

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        if self._used:
            raise RuntimeError("a Gateway is single-use: create a new one to serve again")
        self._used = True
        async with httpx2.AsyncClient(timeout=httpx2.Timeout(30.0)) as http, anyio.create_task_group() as tg:
            self._http = http
            tg.start_soon(self._follow_mesh)
            tg.start_soon(self._follow_registry)
            tg.start_soon(self._offering_watch.follow, self._offerings_changed)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()
                self._http = None

    # -- MCP handlers ------------------------------------------------------------------------

    async def _list_tools(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        del ctx, params  # one page: the whole mesh
        with anyio.move_on_after(self.settle_timeout):
            await self._ready.wait()  # the first listing waits for a first picture of the mesh
        return ListToolsResult(tools=list(self.catalog().tools))

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: CallToolRequestParams
    ) -> CallToolResult | InputRequiredResult:
        target = split_name(params.name)
        if target is None:
            return failure(f"unknown tool {params.name!r}: gateway tools are named AGENT__TOOL (see tools/list)")
        agent, tool = target
        span = trace.get_current_span()  # the SDK's SERVER span for this request
        span.update_name(f"tools/call {agent}.{tool}")
        span.set_attributes({"mesh.gateway.agent": agent, "mesh.gateway.tool": tool})
        arguments = params.arguments or {}
        if agent == REGISTRY_AGENT and self._registry_hop is not None:
            return await self._call_registry(tool, arguments)
        if agent == REGISTRY_AGENT and not self.node.directory.instances(agent):
            return failure("no registry answers this gateway: start one with `mesh registry` or pass --registry")
        missing = self._missing_tool(agent, tool)
        if missing is not None:
            return failure(missing)
        # Progress and log messages from anywhere down the chain come back to this client, if it asked.
        notices = sink_var.set(RequestNotices(ctx, self._levels))
        try:
            value = await relayed_call(
                ctx,
                params,
                self.node.keys,
                lambda: self.node.pool.call(agent, tool, arguments, timeout=self.call_timeout),
            )
        except MeshError as exc:
            return failure(str(exc))
        finally:
            sink_var.reset(notices)
        if isinstance(value, InputRequiredResult):
            return value
        info = tool_info(self.node.directory.instances(agent), agent, tool) or {}
        return tool_result(value, info.get("outputSchema"))

    async def _call_registry(self, tool: str, arguments: Mapping[str, Any]) -> CallToolResult:
        hop = self._registry_hop
        assert hop is not None
        meta: dict[str, Any] = {}
        propagate.inject(meta)
        try:
            result = await hop.call_tool(tool, arguments, meta=meta, timeout=self.call_timeout or 30.0)
            return CallToolResult.model_validate(result.raw, by_name=False)
        except MeshError as exc:
            return failure(str(exc))
        except ValidationError:
            return failure(f"the registry answered {tool!r} with something that is not a tool result")

    def _missing_tool(self, agent: str, tool: str) -> str | None:
        """Why `agent` cannot serve `tool`, when its instances say so (unknown agents are the pool's call)."""
        instances = self.node.directory.instances(agent)
        offered = sorted({t for i in instances for t in i.tools})
        if offered and tool not in offered:
            return f"agent {agent!r} has no tool {tool!r} (its tools: {', '.join(offered)})"
        return None

    # -- following the mesh ------------------------------------------------------------------

    async def _follow_mesh(self) -> None:
        changes = self.node.directory.watch()
        with changes:
            await self.node.settle(browse=_MDNS_WINDOW)
            with anyio.move_on_after(self.settle_timeout):
                await self._registry_tried.wait()
            self._announced = self.catalog().fingerprint
            self._ready.set()
            while True:
                with anyio.move_on_after(_RECHECK):
                    await changes.receive()
                    while True:  # a burst of changes is one re-read
                        try:
                            changes.receive_nowait()
                        except anyio.WouldBlock:
                            break
                try:
                    await self._announce_if_changed()
                except Exception:  # a task root: one bad listing must not stop the following
                    log.exception("could not re-read the tool listing")

    async def _follow_registry(self) -> None:
        while True:
            url = self.node.registry_url
            answered = False
            if url is not None:
                try:
                    answered = await self._load_registry_tools(url)
                except Exception:  # a task root: a registry answering nonsense must not stop the gateway
                    log.exception("could not list the tools of registry %s", url)
            self._registry_tried.set()
            with anyio.move_on_after(_REGISTRY_REFRESH if answered or url is None else _REGISTRY_RETRY):
                await self.node.registry_moved()

    async def _load_registry_tools(self, url: str) -> bool:
        hop = self._registry_hop
        if hop is None or hop.url != f"{url}/mcp":
            assert self._http is not None
            keys = self.node.keys
            hop = HopClient(
                f"{url}/mcp",
                http=self._http,
                token=lambda: keys.mint(GATEWAY_NAME, REGISTRY_AGENT, ttl=60),
                agent=REGISTRY_AGENT,
                client_name=GATEWAY_NAME,
            )
        try:
            tools = await hop.list_tools(timeout=5.0)
        except MeshError as exc:
            if self._registry_tools or self._registry_hop is None:
                log.warning("registry %s does not answer (%s): its tools are hidden until it does", url, exc)
            self._registry_hop, self._registry_tools = None, ()
            await self._announce_if_changed()
            return False
        self._registry_hop, self._registry_tools = hop, tuple(tools)
        await self._announce_if_changed()
        return True

    async def _announce_if_changed(self) -> None:
        if not self._ready.is_set():
            return  # the first listing is still to come: nothing to correct yet
        catalog = self.catalog()
        if catalog.fingerprint == self._announced:
            return
        self._announced = catalog.fingerprint
        if catalog.skipped:
            log.warning(
                "not exposed (client tool names allow [A-Za-z0-9_-], 64 at most): %s", ", ".join(catalog.skipped)
            )
        log.info("tool listing changed: %d tools", len(catalog.tools))
        await self._bus.publish(ToolsListChanged())
        await self._link.changed("tools")

    async def _offerings_changed(self, listing: Listing) -> None:
        await self._bus.publish(ResourcesListChanged() if listing == "resources" else PromptsListChanged())
        await self._link.changed(listing)


async def serve_gateway(
    *, mesh: str | None = None, registry: str | None = None, call_timeout: float | None = None
) -> None:
    """Join mesh `mesh` and serve it on this process's stdin/stdout until the client hangs up."""
    async with (
        MeshNode(GATEWAY_NAME, mesh=mesh, registry=registry, credential=_credential(mesh)) as node,
        Gateway(node, call_timeout=call_timeout) as gateway,
    ):
        tracing = ProcessTelemetry(
            service=GATEWAY_NAME,
            instance=uuid.uuid4().hex[:8],
            mesh=node.mesh,
            spool_dir=mesh_paths(node.mesh).ensure().spool_dir,
            tracer_base=lambda: node.tracer_url or node.registry_url,
            credentials=node.keys,
        )
        print(f"mesh: gateway for mesh {node.mesh} serving MCP on stdio", file=sys.stderr, flush=True)
        try:
            await gateway.serve_stdio()
        finally:
            tracing.shutdown()  # the trace roots start here: flush them before the client's next launch


# -- private helpers ---------------------------------------------------------------------------


@final
class _ClientLink:
    """Middleware that keeps the handshake-era client's session, to tell it a listing changed."""

    def __init__(self) -> None:
        self._session: ServerSession | None = None

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        # 2026-07-28 clients hear of changes on their subscriptions/listen streams instead.
        if ctx.method != "initialize" and ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            self._session = ctx.session
        return result

    async def changed(self, listing: Literal["tools"] | Listing) -> None:
        """Send `notifications/{listing}/list_changed` to the handshake-era client, if one is connected."""
        session = self._session
        if session is None:
            return
        send = {
            "tools": session.send_tool_list_changed,
            "resources": session.send_resource_list_changed,
            "prompts": session.send_prompt_list_changed,
        }[listing]
        try:
            await send()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._session = None  # the client hung up


def _version() -> str:
    try:
        return version("agentplex")
    except PackageNotFoundError:
        return "0.0.0"


def _credential(mesh: str | None) -> Credential:
    """The gateway acts for the person in `MESH_TOKEN` or `mesh login`, else for the local operator."""
    return acting_credential(MeshKeys.load(mesh), GATEWAY_NAME)
