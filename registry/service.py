"""The registry process: inventory, trace registry and approvals behind one MCP server.

Owns composition and lifecycle: which pieces are installed on the registry's `MCPServer`,
the auth layer in front of `/mcp`, binding, and the mDNS announcement that lets agents
find it. Each piece lives in its own module.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus
from mcp.server.mcpserver import MCPServer
from starlette.requests import Request
from starlette.responses import JSONResponse

from mesh.config import mesh_name, mesh_paths
from mesh.discovery.mdns import MdnsAnnouncer
from mesh.discovery.txt import Announcement, Kind, signed
from mesh.identity import MeshKeys
from mesh.runtime.auth import BearerAuth
from mesh.runtime.http import bind, serve
from registry.approvals import ApprovalQueue, install_approvals
from registry.inventory import Inventory
from registry.inventory_api import REGISTRY_AUDIENCE, install_inventory

__all__ = ["announce_service", "serve_registry"]

log = logging.getLogger(__name__)


async def serve_registry(
    *,
    mesh: str | None = None,
    host: str = "127.0.0.1",
    port: int,
    db: str | None = None,
    mdns: bool = True,
    lan: bool = False,
    task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the registry until cancelled; reports its base URL once bound."""
    name = mesh_name(mesh)
    keys = MeshKeys.load(name)
    path = Path(db) if db else mesh_paths(name).ensure().registry_db
    started = time.time()
    queue = ApprovalQueue(path)
    with Inventory(path) as inventory:
        server = MCPServer(
            "registry",
            description="agentplex registry: agent inventory, decision traces, approvals",
            instructions=(
                "Ask which agents exist and what they may handle (list_agents, find_agents), "
                "and why a call chain did what it did (search_traces, get_trace, explain_decision)."
            ),
            log_level="WARNING",
        )
        install_inventory(server, inventory, keys)
        install_approvals(server, queue, keys)

        async def healthz(request: Request) -> JSONResponse:
            del request
            body: dict[str, Any] = {"status": "ok", "name": "registry", "mesh": name, "db": str(path)}
            body["uptime_s"] = round(time.time() - started, 3)
            body["agents"] = len(inventory.alive(time.time()))
            return JSONResponse(body)

        server.custom_route("/healthz", methods=["GET"])(healthz)
        app = BearerAuth(
            server.streamable_http_app(json_response=True, host=host), keys=keys, audience=REGISTRY_AUDIENCE
        )
        sock = bind(host, port)
        bound: int = sock.getsockname()[1]
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{bound}"
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(serve, app, sock)
                async with announce_service("registry", name, host, bound, keys, enabled=mdns, lan=lan):
                    print(f"mesh: registry listening on {url} (db {path})", file=sys.stderr, flush=True)
                    task_status.started(url)
                    await anyio.sleep_forever()
        finally:
            sock.close()
            queue.close()


@asynccontextmanager
async def announce_service(
    kind: Kind, mesh: str, host: str, port: int, keys: MeshKeys, *, enabled: bool = True, lan: bool = False
) -> AsyncGenerator[None]:
    """Announce a registry or tracer on mDNS (signed) while inside the block."""
    if not enabled:
        yield
        return
    instance = uuid.uuid4().hex[:8]

    def announcement() -> Announcement:
        plain = Announcement(
            kind=kind,
            mesh=mesh,
            name=kind,
            instance=instance,
            host=host if host != "localhost" else "127.0.0.1",
            port=port,
            path="/",
            expires=int(time.time()) + 300,
            auth=True,
            fingerprint=keys.fingerprint,
        )
        return signed(plain, keys.sign)

    async with MdnsAnnouncer(announcement, lan=lan):
        yield
