"""The registry and tracer processes: their pieces behind one MCP server each.

Owns composition and lifecycle: which pieces are installed on the service's `MCPServer`, the
auth layer in front of `/mcp`, the 503 a lost database answers, binding, and the mDNS
announcement that lets agents find it.
The registry is inventory + trace registry + approvals; the sidecar tracer is the trace
registry alone (optionally forwarding). Each piece lives in its own module.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus
from mcp.server.mcpserver import MCPServer
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mesh.config import mesh_name, mesh_paths
from mesh.discovery.mdns import MdnsAnnouncer
from mesh.discovery.proof import bound, is_challenge
from mesh.discovery.txt import Announcement, Kind, signed
from mesh.identity import MeshKeys
from mesh.runtime.auth import BearerAuth
from mesh.runtime.http import bind, serve
from registry.access import TokenGate
from registry.approvals import ApprovalQueue, install_approvals
from registry.audit import install_audit
from registry.inventory_api import REGISTRY_AUDIENCE, install_inventory
from registry.mesh_map import install_mesh_map
from registry.span_intake import SpanIntake, install_span_intake
from registry.storage import is_postgres, open_stores
from registry.stores import StoreUnavailable
from registry.trace_stores import open_trace_store
from registry.web import install_web

__all__ = ["announce_service", "serve_registry", "serve_tracer"]

log = logging.getLogger(__name__)


async def serve_registry(
    *,
    mesh: str | None = None,
    host: str = "127.0.0.1",
    port: int,
    db: str | None = None,
    mdns: bool = True,
    lan: bool = False,
    retain: float | None = None,
    task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the registry (inventory, traces, approvals, web page) until cancelled.

    `db` is a PostgreSQL URL (shared by every replica of the mesh) or a SQLite file (default: under
    MESH_HOME). A database that cannot be reached, or one from a newer agentplex, is a one-line error.
    """
    name = mesh_name(mesh)
    keys = MeshKeys.load(name)
    default = mesh_paths(name).ensure().registry_db
    stores = open_stores(db, mesh=name, keys=keys, default_path=default)
    async with AsyncExitStack() as stack:
        stack.callback(stores.close)
        beside = stores.sqlite_path or default
        traces_at = beside.with_name(f"{beside.stem}-traces.sqlite3")
        store = open_trace_store(db if is_postgres(db) else None, traces_at, retain=retain)
        stack.callback(store.close)
        inventory = stores.inventory
        queue = await stack.enter_async_context(
            ApprovalQueue(stores.approvals, audit=stores.audit.append, calls=stores.calls)
        )
        holder: list[SpanIntake] = []
        server = MCPServer(
            "registry",
            description="agentplex registry: agent inventory, decision traces, approvals",
            instructions=(
                "Ask which agents exist and what they may handle (list_agents, find_agents), why a call "
                "chain did what it did (search_traces, get_trace, explain_decision), and what waits for a "
                "person (list_approvals)."
            ),
            lifespan=_entering(holder),
            log_level="WARNING",
        )
        install_inventory(server, inventory, keys, calls=stores.calls)
        install_approvals(server, queue, keys)
        install_audit(server, stores.audit, keys)
        on_governance = partial(stores.audit.append_many, kind="policy")
        holder.append(install_span_intake(server, store, keys=keys, on_governance=on_governance))
        install_web(server, queue=queue, keys=keys, lan=lan)
        install_mesh_map(server, inventory, store)

        async def registry_health() -> dict[str, Any]:
            return {"db": stores.where, "agents": await stores.calls.read(inventory.count, time.time())}

        _health(server, "registry", keys, registry_health)
        await _serve(server, keys, "registry", name, host, port, mdns, lan, f"(db {stores.where})", task_status)


async def serve_tracer(
    *,
    mesh: str | None = None,
    host: str = "127.0.0.1",
    port: int,
    db: str | None = None,
    forward: str | None = None,
    mdns: bool = True,
    lan: bool = False,
    retain: float | None = None,
    task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the sidecar tracer (OTLP receiver, trace queries, forwarding) until cancelled."""
    name = mesh_name(mesh)
    keys = MeshKeys.load(name)
    path = mesh_paths(name).ensure().tracer_db
    store = open_trace_store(db, path, retain=retain)
    where = _shown_db(db, path)
    try:
        holder: list[SpanIntake] = []
        server = MCPServer("tracer", description="agentplex sidecar tracer", lifespan=_entering(holder))
        holder.append(install_span_intake(server, store, keys=keys, forward_url=forward))

        async def tracer_health() -> dict[str, Any]:
            return {"db": where, "forward": forward, **asdict(holder[0].stats)}

        _health(server, "tracer", keys, tracer_health)
        await _serve(server, keys, "tracer", name, host, port, mdns, lan, f"(db {where})", task_status)
    finally:
        store.close()


def _shown_db(db: str | None, default: Path) -> str:
    """Where a service keeps its data, as its log line and /healthz say it (a URL without its password)."""
    if is_postgres(db):
        assert db is not None
        from registry.pg import redacted

        return redacted(db)
    return db or str(default)


def _entering(holder: list[SpanIntake]) -> Callable[[MCPServer], Any]:
    """A lifespan that runs the span intake's background tasks while the server runs."""

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncGenerator[None]:
        async with holder[0]:
            yield

    return lifespan


def _health(server: MCPServer, kind: str, keys: MeshKeys, extra: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    """`GET /healthz`: status, and with `?challenge=` the proof that this service holds the mesh secret."""
    started = time.time()

    async def healthz(request: Request) -> JSONResponse:
        challenge = request.query_params.get("challenge")
        if challenge is not None and not is_challenge(challenge):
            return JSONResponse({"error": "challenge must be 16 to 128 characters of A-Z a-z 0-9 _ -"}, 400)
        body: dict[str, Any] = {
            "status": "ok",
            "name": kind,
            "mesh": keys.mesh,
            "uptime_s": round(time.time() - started, 3),
        }
        if challenge is not None:
            server_address = request.scope.get("server") or ("", 0)
            body["proof"] = keys.prove(bound(challenge, int(server_address[1] or 0)), kind)
        return JSONResponse({**body, **(await extra())})

    server.custom_route("/healthz", methods=["GET"])(healthz)


async def _serve(
    server: MCPServer,
    keys: MeshKeys,
    kind: Kind,
    mesh: str,
    host: str,
    port: int,
    mdns: bool,
    lan: bool,
    note: str,
    task_status: TaskStatus[str],
) -> None:
    routes = server.streamable_http_app(json_response=True, host=host)
    routes.add_exception_handler(StoreUnavailable, _unavailable)
    app = BearerAuth(routes, keys=keys, audience=REGISTRY_AUDIENCE)
    if lan:  # on the LAN every read needs a token too (DESIGN §6); loopback reads stay open
        app = TokenGate(app, keys=keys, audience=REGISTRY_AUDIENCE)
    sock = bind(host, port)
    bound: int = sock.getsockname()[1]
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{bound}"
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve, app, sock)
            async with announce_service(kind, mesh, host, bound, keys, enabled=mdns, lan=lan):
                page = f"; web page: {url}/" if kind == "registry" else ""
                print(f"mesh: {kind} listening on {url} {note}{page}", file=sys.stderr, flush=True)
                task_status.started(url)
                await anyio.sleep_forever()
    finally:
        sock.close()


async def _unavailable(request: Request, exc: Exception) -> Response:
    """The one place a lost database becomes an answer: 503 and a one-line JSON error, never a guess."""
    return JSONResponse({"error": " ".join(str(exc).split())}, 503, headers={"Retry-After": "1"})


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
