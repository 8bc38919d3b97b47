"""One agent process: serve the Agent over Streamable HTTP (or stdio) and join the mesh.

Owns the order of start-up and shutdown: bind, serve, announce and register (after the
port is bound); on the way out deregister, say goodbye and flush spans. What each of
those does lives in its own module.
"""

from __future__ import annotations

import logging
import socket
import sys
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, final

import anyio
from anyio.abc import TaskStatus
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import Tool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp

from mesh.agent import Agent
from mesh.config import mesh_name, mesh_paths
from mesh.discovery.mdns import MdnsAnnouncer, machine_addresses
from mesh.discovery.txt import Announcement, signed
from mesh.errors import ConfigError, MeshError
from mesh.hosts import is_loopback
from mesh.identity import MeshKeys
from mesh.policy import policy_from_env
from mesh.protocols import PeerCaller
from mesh.registry_client import Registrar, RegistryClient
from mesh.runtime.auth import BearerAuth
from mesh.runtime.guard import CallGuard
from mesh.runtime.http import bind, serve
from mesh.runtime.node import MeshNode
from mesh.runtime.streaming import AnswerSwitch
from mesh.runtime.tools import build_server
from mesh.tracing.telemetry import ProcessTelemetry
from mesh.wire import Governance, Registration, ToolInfo

__all__ = ["RunOptions", "Served", "run_stdio", "serve_agent", "serve_on_mesh"]

log = logging.getLogger("mesh")

LEASE_SECONDS = 10.0
"""How long a registration lives without a heartbeat (renewed every third of it)."""
ANNOUNCE_TTL = 300
"""Seconds an mDNS announcement's signature vouches for; re-signed well before."""


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How `mesh run` serves one agent."""

    mesh: str = field(default_factory=mesh_name)
    host: str = "127.0.0.1"
    port: int = 0
    lan: bool = False
    registry: str | None = None
    policy: str | None = None
    mdns: bool = True
    auth: bool = True
    instance: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def __post_init__(self) -> None:
        if not self.auth and (self.lan or not is_loopback(self.host)):
            raise ConfigError("--no-auth is for local development only: it cannot be used with --lan")

    @property
    def public(self) -> bool:
        """True when the agent listens beyond loopback."""
        return self.lan or not is_loopback(self.host)


@dataclass(frozen=True, slots=True)
class Served:
    """One MCP server to put on the mesh: its name, governance facts, and how to build it.

    `build` gets the callee's `CallGuard` (to put first in the server's middleware) and the node's
    peer pool; `relisted`, when given, returns each time the server's tool list changed, and the
    registration follows it.
    """

    name: str
    governance: Governance
    build: Callable[[CallGuard, PeerCaller], MCPServer]
    version: str = ""
    approval_tools: frozenset[str] = frozenset()
    approval_ttls: Mapping[str, float] = field(default_factory=dict[str, float])
    relisted: Callable[[], Awaitable[None]] | None = None


async def serve_agent(
    agent: Agent,
    options: RunOptions,
    *,
    task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `agent` until cancelled; reports its `/mcp` URL through `task_status` once bound."""
    served = Served(
        name=agent.name,
        governance=agent.governance,
        build=lambda guard, peers: build_server(agent, peers=peers, middleware=[guard]),
        version=agent.version,
        approval_tools=frozenset(name for name, spec in agent.tools.items() if spec.approval),
        approval_ttls={name: spec.approval_ttl for name, spec in agent.tools.items() if spec.approval_ttl},
    )
    await serve_on_mesh(served, options, task_status=task_status)


async def serve_on_mesh(
    served: Served,
    options: RunOptions,
    *,
    task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `served` behind the mesh's auth, policy and tracing until cancelled; reports its `/mcp` URL."""
    started = time.time()
    policy = policy_from_env(options.policy)
    if policy.broken:
        log.error("policy %s is broken, so every call is denied: %s", options.policy, policy.broken)
    metadata = served.governance.model_dump(exclude_none=True)
    node = MeshNode(
        served.name,
        mesh=options.mesh,
        metadata=metadata,
        policy=policy,
        registry=options.registry,
        mdns=options.mdns,
        lan=options.lan,
    )
    tracing = ProcessTelemetry(
        service=served.name,
        instance=options.instance,
        mesh=options.mesh,
        spool_dir=mesh_paths(options.mesh).ensure().spool_dir,
        tracer_base=lambda: node.tracer_url or node.registry_url,
        credentials=node.keys,
    )
    sock = bind(options.host, options.port)
    port: int = sock.getsockname()[1]
    url = f"http://{_url_host(options.host)}:{port}/mcp"
    guard = CallGuard(
        agent=served.name,
        metadata=metadata,
        policy=policy,
        caller_metadata=node.directory.metadata_of,
        keys=node.keys,
        instance=options.instance,
        approval_tools=served.approval_tools,
        approval_ttls=served.approval_ttls,
        registry_url=lambda: node.registry_url,
        # What an approver may see of a call's arguments depends on its tool's schema (mesh.masking).
        input_schema=lambda tool: next((t.input_schema for t in listing.tools if t.name == tool), None),
    )
    server = served.build(guard, node.pool)
    listing = _Listing([_tool_info(t, served.approval_tools) for t in await server.list_tools()])
    _add_health(server, served, options, started, tracing, lambda: [t.name for t in listing.tools])
    app: ASGIApp = _answering_app(server, _transport_security(options.host, options.public), options.host)
    if options.auth:
        app = BearerAuth(app, keys=node.keys, audience=served.name)
    else:
        log.warning("agent %s serves WITHOUT authentication (--no-auth): loopback only", served.name)
    announce = partial(_announcement, served.name, options, port, node.keys)

    def registration() -> Registration:
        return _registration(served, options, url, listing.tools)

    try:
        async with node, anyio.create_task_group() as tg:
            tg.start_soon(serve, app, sock)
            async with MdnsAnnouncer(announce, lan=options.lan) if options.mdns else _nothing():
                if served.relisted is not None:
                    tg.start_soon(listing.follow, server, served.relisted, served.approval_tools)
                tg.start_soon(_stay_registered, node, served.name, registration, listing.changed)
                print(f"mesh: agent {served.name} ({options.instance}) listening on {url}", file=sys.stderr, flush=True)
                task_status.started(url)
                await anyio.sleep_forever()
    finally:
        sock.close()
        tracing.shutdown()  # uvicorn skips exit hooks: flush explicitly or spans are lost


@asynccontextmanager
async def _nothing() -> AsyncGenerator[None]:
    yield


@final
class _Listing:
    """The served tools as last listed, and a wait for their next change."""

    def __init__(self, tools: list[ToolInfo]) -> None:
        self.tools = tools
        self._changed = anyio.Event()

    async def follow(
        self, server: MCPServer, relisted: Callable[[], Awaitable[None]], approval: frozenset[str]
    ) -> None:
        """List `server`'s tools again each time `relisted` returns."""
        while True:
            await relisted()
            self.tools = [_tool_info(t, approval) for t in await server.list_tools()]
            changed, self._changed = self._changed, anyio.Event()
            changed.set()

    async def changed(self) -> None:
        """Return at the next change of the tool list."""
        await self._changed.wait()


async def _stay_registered(
    node: MeshNode,
    name: str,
    registration: Callable[[], Registration],
    tools_changed: Callable[[], Awaitable[None]],
) -> None:
    """Keep a registration at whichever registry the node knows, following it if it moves, and the tool list."""
    while True:
        url = node.registry_url
        if url is None:
            await node.registry_moved()
            continue
        client = RegistryClient(url, token_factory=lambda: node.keys.mint(name, "registry", ttl=60))
        async with client, Registrar(client, registration, lease=LEASE_SECONDS), anyio.create_task_group() as tg:
            tg.start_soon(_register_changes, client, registration, tools_changed)
            await node.registry_moved()
            tg.cancel_scope.cancel()


async def _register_changes(
    client: RegistryClient, registration: Callable[[], Registration], tools_changed: Callable[[], Awaitable[None]]
) -> None:
    """Register again (same instance: the record is replaced) each time the tool list changes."""
    while True:
        await tools_changed()
        try:
            await client.register(registration().model_copy(update={"lease_seconds": LEASE_SECONDS}))
        except MeshError as exc:  # the Registrar's renewals carry on; the next change tries again
            log.warning("could not register the new tool list: %s", exc)


def _registration(served: Served, options: RunOptions, url: str, tools: list[ToolInfo]) -> Registration:
    return Registration(
        name=served.name,
        instance=options.instance,
        url=url,
        version=served.version,
        tools=list(tools),
        metadata=served.governance,
        lease_seconds=LEASE_SECONDS,
        authenticated=options.auth,
    )


def _announcement(name: str, options: RunOptions, port: int, keys: MeshKeys) -> Announcement:
    plain = Announcement(
        kind="agent",
        mesh=options.mesh,
        name=name,
        instance=options.instance,
        host=options.host if options.host != "localhost" else "127.0.0.1",
        port=port,
        path="/mcp",
        expires=int(time.time()) + ANNOUNCE_TTL,
        auth=options.auth,
        fingerprint=keys.fingerprint,
    )
    return signed(plain, keys.sign)


def _tool_info(tool: Tool, approval_tools: frozenset[str]) -> ToolInfo:
    return ToolInfo(
        name=tool.name,
        description=tool.description,
        input_schema=tool.input_schema,
        output_schema=tool.output_schema,
        annotations=tool.annotations.model_dump(by_alias=True, exclude_none=True) if tool.annotations else {},
        approval=tool.name in approval_tools,
    )


async def run_stdio(agent: Agent, options: RunOptions) -> None:
    """Serve `agent` over stdio (what Claude Desktop launches): stdout carries only protocol."""
    metadata = agent.governance.model_dump(exclude_none=True)
    policy = policy_from_env(options.policy)
    async with MeshNode(
        agent.name, mesh=options.mesh, metadata=metadata, policy=policy, registry=options.registry, mdns=options.mdns
    ) as node:
        await build_server(agent, peers=node.pool).run_stdio_async()


def _add_health(
    server: MCPServer,
    served: Served,
    options: RunOptions,
    started: float,
    tracing: ProcessTelemetry,
    tool_names: Callable[[], list[str]],
) -> None:
    async def healthz(request: Request) -> JSONResponse:
        del request
        body: dict[str, Any] = {
            "status": "ok",
            "name": served.name,
            "instance": options.instance,
            "mesh": options.mesh,
            "tools": sorted(tool_names()),
            "metadata": served.governance.model_dump(exclude_none=True),
            "uptime_s": round(time.time() - started, 3),
            "auth": options.auth,
            "spans": tracing.stats(),
        }
        return JSONResponse(body)

    server.custom_route("/healthz", methods=["GET"])(healthz)


def _answering_app(server: MCPServer, security: TransportSecuritySettings | None, host: str) -> ASGIApp:
    """The server's MCP endpoint: a lean JSON answer, or an event stream when the call may need one."""
    server.streamable_http_app(json_response=True, transport_security=security, host=host)
    lean = server.session_manager  # the app around it is not needed: the switch calls the manager itself
    app = server.streamable_http_app(json_response=False, transport_security=security, host=host)
    return AnswerSwitch(lean=lean, streams=server.session_manager, app=app)


def _transport_security(host: str, public: bool) -> TransportSecuritySettings | None:
    """Host/Origin checks: the SDK's loopback defaults, widened to this machine's names on the LAN."""
    if not public:
        return None
    names = {"127.0.0.1", "localhost", "[::1]", socket.gethostname(), f"{socket.gethostname()}.local"}
    if host not in ("0.0.0.0", "::"):
        names.add(host)
    else:
        names.update(machine_addresses())  # every interface's address: what a peer on the LAN dials
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=sorted(f"{n}:*" for n in names),
        allowed_origins=sorted(f"http://{n}:*" for n in names),
    )


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):  # the address a peer elsewhere on the LAN dials (a registry records it)
        return next(iter(machine_addresses()), "127.0.0.1")
    return f"[{host}]" if ":" in host else host
