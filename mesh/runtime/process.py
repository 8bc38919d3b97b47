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
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskStatus
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp

from mesh.agent import Agent
from mesh.config import mesh_name
from mesh.errors import ConfigError
from mesh.identity import MeshKeys
from mesh.runtime.auth import BearerAuth
from mesh.runtime.http import bind, serve
from mesh.runtime.tools import build_server

__all__ = ["RunOptions", "run_stdio", "serve_agent"]

log = logging.getLogger("mesh")


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
    keys = MeshKeys.load(options.mesh)
    started = time.time()
    sock = bind(options.host, options.port)
    port = sock.getsockname()[1]
    url = f"http://{_url_host(options.host)}:{port}/mcp"
    server = build_server(agent, peers=None)
    _add_health(server, agent, options, started)
    app: ASGIApp = server.streamable_http_app(
        json_response=True,
        transport_security=_transport_security(options.host, options.public),
        host=options.host,
    )
    if options.auth:
        app = BearerAuth(app, keys=keys, audience=agent.name)
    else:
        log.warning(
            "agent %s serves WITHOUT authentication (--no-auth): loopback only, never in production",
            agent.name,
        )
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        stack.callback(sock.close)
        tg.start_soon(serve, app, sock)
        print(
            f"mesh: agent {agent.name} ({options.instance}) listening on {url}", file=sys.stderr, flush=True
        )
        task_status.started(url)
        await anyio.sleep_forever()


async def run_stdio(agent: Agent, options: RunOptions) -> None:
    """Serve `agent` over stdio (what Claude Desktop launches): stdout carries only protocol."""
    server = build_server(agent, peers=None)
    del options
    await server.run_stdio_async()


def _add_health(server: MCPServer, agent: Agent, options: RunOptions, started: float) -> None:
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
        names.update(_local_addresses())
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=sorted(f"{n}:*" for n in names),
        allowed_origins=sorted(f"http://{n}:*" for n in names),
    )


def _local_addresses() -> set[str]:
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        return set()
    return {str(info[4][0]) for info in infos}


def _is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
