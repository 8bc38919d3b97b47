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
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

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
from mesh.errors import ConfigError
from mesh.identity import MeshKeys
from mesh.policy import policy_from_env
from mesh.registry_client import Registrar, RegistryClient
from mesh.runtime.auth import BearerAuth
from mesh.runtime.guard import CallGuard
from mesh.runtime.http import bind, serve
from mesh.runtime.node import MeshNode
from mesh.runtime.tools import build_server
from mesh.tracing.provider import Tracing
from mesh.wire import Registration, ToolInfo

__all__ = ["RunOptions", "run_stdio", "serve_agent"]

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
        if not self.auth and (self.lan or not _is_loopback(self.host)):
            raise ConfigError("--no-auth is for local development only: it cannot be used with --lan")

    @property
    def public(self) -> bool:
        """True when the agent listens beyond loopback."""
        return self.lan or not _is_loopback(self.host)


async def serve_agent(
    agent: Agent,
    options: RunOptions,
    *,
    task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `agent` until cancelled; reports its `/mcp` URL through `task_status` once bound."""
    started = time.time()
    policy = policy_from_env(options.policy)
    if policy.broken:
        log.error("policy %s is broken, so every call is denied: %s", options.policy, policy.broken)
    metadata = agent.governance.model_dump(exclude_none=True)
    node = MeshNode(
        agent.name,
        mesh=options.mesh,
        metadata=metadata,
        policy=policy,
        registry=options.registry,
        mdns=options.mdns,
        lan=options.lan,
    )
    tracing = Tracing(
        service=agent.name,
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
        agent=agent.name,
        metadata=metadata,
        policy=policy,
        caller_metadata=node.directory.metadata_of,
        keys=node.keys,
        instance=options.instance,
        approval_tools=frozenset(name for name, spec in agent.tools.items() if spec.approval),
        registry_url=lambda: node.registry_url,
    )
    server = build_server(agent, peers=node.pool, middleware=[guard])
    _add_health(server, agent, options, started, tracing)
    app: ASGIApp = server.streamable_http_app(
        json_response=True,
        transport_security=_transport_security(options.host, options.public),
        host=options.host,
    )
    if options.auth:
        app = BearerAuth(app, keys=node.keys, audience=agent.name)
    else:
        log.warning("agent %s serves WITHOUT authentication (--no-auth): loopback only", agent.name)
    tools = [_tool_info(t, agent) for t in await server.list_tools()]
    announce = partial(_announcement, agent.name, options, port, node.keys)
    registration = partial(_registration, agent, options, url, tools)
    try:
        async with node, anyio.create_task_group() as tg:
            tg.start_soon(serve, app, sock)
            async with MdnsAnnouncer(announce, lan=options.lan) if options.mdns else _nothing():
                tg.start_soon(_stay_registered, node, agent.name, registration)
                print(f"mesh: agent {agent.name} ({options.instance}) listening on {url}", file=sys.stderr, flush=True)
                task_status.started(url)
                await anyio.sleep_forever()
    finally:
        sock.close()
        tracing.shutdown()  # uvicorn skips exit hooks: flush explicitly or spans are lost


@asynccontextmanager
async def _nothing() -> AsyncGenerator[None]:
    yield


async def _stay_registered(node: MeshNode, name: str, registration: Callable[[], Registration]) -> None:
    """Keep a registration at whichever registry the node knows, following it if it moves."""
    while True:
        url = node.registry_url
        if url is None:
            await node.registry_moved()
            continue
        client = RegistryClient(url, token_factory=lambda: node.keys.mint(name, "registry", ttl=60))
        async with client, Registrar(client, registration, lease=LEASE_SECONDS):
            await node.registry_moved()


def _registration(agent: Agent, options: RunOptions, url: str, tools: list[ToolInfo]) -> Registration:
    return Registration(
        name=agent.name,
        instance=options.instance,
        url=url,
        version=agent.version,
        tools=tools,
        metadata=agent.governance,
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


def _tool_info(tool: Tool, agent: Agent) -> ToolInfo:
    spec = agent.tools.get(tool.name)
    return ToolInfo(
        name=tool.name,
        description=tool.description,
        input_schema=tool.input_schema,
        output_schema=tool.output_schema,
        annotations=tool.annotations.model_dump(by_alias=True, exclude_none=True) if tool.annotations else {},
        approval=bool(spec and spec.approval),
    )


async def run_stdio(agent: Agent, options: RunOptions) -> None:
    """Serve `agent` over stdio (what Claude Desktop launches): stdout carries only protocol."""
    metadata = agent.governance.model_dump(exclude_none=True)
    policy = policy_from_env(options.policy)
    async with MeshNode(
        agent.name, mesh=options.mesh, metadata=metadata, policy=policy, registry=options.registry, mdns=options.mdns
    ) as node:
        await build_server(agent, peers=node.pool).run_stdio_async()


def _add_health(server: MCPServer, agent: Agent, options: RunOptions, started: float, tracing: Tracing) -> None:
    async def healthz(request: Request) -> JSONResponse:
        del request
        body: dict[str, Any] = {
            "status": "ok",
            "name": agent.name,
            "instance": options.instance,
            "mesh": options.mesh,
            "tools": sorted(agent.tools),
            "metadata": agent.governance.model_dump(exclude_none=True),
            "uptime_s": round(time.time() - started, 3),
            "auth": options.auth,
            "spans": tracing.stats(),
        }
        return JSONResponse(body)

    server.custom_route("/healthz", methods=["GET"])(healthz)


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


def _is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):  # the address a peer elsewhere on the LAN dials (a registry records it)
        return next(iter(machine_addresses()), "127.0.0.1")
    return f"[{host}]" if ":" in host else host
