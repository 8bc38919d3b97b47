"""The inventory's HTTP API and MCP tools, installed on the registry's MCPServer.

Owns the `/api/agents` routes, `/openapi.json` (the document is `registry.openapi`'s) and the
`list_agents`/`find_agents` MCP tools. Store calls, and building a listing from what they return,
run off the event loop (`StoreCalls`). Writes need a mesh token for audience "registry" whose caller
is the agent itself; reads need none, because the registry binds to loopback by default (on a LAN,
anyone who reaches the port can read the inventory). It does not serve /healthz or guard /mcp: the
registry app composes those.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any, Final

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from mesh.errors import IdentityError
from mesh.identity import Claims, MeshKeys
from mesh.naming import is_name
from mesh.runtime.auth import bearer_token
from mesh.wire import LEASE_FLOOR_HEADER, AgentRecord, ErrorBody, Governance, Registration
from registry.inventory_rows import Listing
from registry.openapi import openapi_document
from registry.store_calls import StoreCalls
from registry.stores import InventoryStore

__all__ = [
    "install_inventory",
    "AgentListing",
    "AgentSummary",
    "ToolSummary",
    "MAX_BODY_BYTES",
    "MAX_LEASE_SECONDS",
    "REGISTRY_AUDIENCE",
]

MAX_BODY_BYTES: Final = 1024 * 1024
"""Largest registration body accepted (413 beyond)."""

MAX_LEASE_SECONDS: Final = 3600.0
"""Longest lease an agent may ask for; a dead agent lingers at most this long."""

REGISTRY_AUDIENCE: Final = "registry"
"""The audience a write token must name (or "*", any agent of the mesh)."""

_INSTANCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_TRUE, _FALSE = {"1", "true", "yes"}, {"", "0", "false", "no"}

Handler = Callable[[Request], Awaitable[Response]]


class ToolSummary(BaseModel):
    """One tool of an agent, without its schemas: what an LLM needs to choose an agent."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str | None = None
    annotations: dict[str, Any] = Field(default_factory=dict)
    approval: bool = False


class AgentSummary(BaseModel):
    """One live agent instance as the MCP tools show it: where it is, its tools, its governance facts."""

    model_config = ConfigDict(frozen=True)

    name: str
    instance: str
    url: str
    version: str
    metadata: Governance
    tools: list[ToolSummary]
    first_seen: float
    last_seen: float
    expires_at: float


class AgentListing(BaseModel):
    """The result of `list_agents` and `find_agents`."""

    model_config = ConfigDict(frozen=True)

    agents: list[AgentSummary]
    count: int


_FIND_DESCRIPTION: Final = """\
Find the live agents of this mesh whose registration matches every filter given.
Governance filters compare case-insensitively and exactly with what each agent declared.
Examples: "which agents may handle confidential EU data?" -> jurisdiction="eu", data_class="confidential";
"who serves the tool lookup?" -> tool="lookup"; "what does the support team run?" -> owner="support-team".
Omit a filter to not constrain it; with no filters this lists every live agent."""


def install_inventory(
    server: MCPServer[Any],
    inventory: InventoryStore,
    keys: MeshKeys,
    *,
    clock: Callable[[], float] = time.time,
    calls: StoreCalls | None = None,
    extra_paths: Mapping[str, Any] | None = None,
    extra_models: Sequence[type[BaseModel]] = (),
) -> None:
    """Add the `/api/agents` routes, `/openapi.json` and the inventory MCP tools to `server`.

    `calls` makes the store's calls (default: threads of its own); `extra_paths` and `extra_models`
    go into the OpenAPI document (other routes of the registry).
    """
    call = calls or StoreCalls()
    document = TypeAdapter(dict[str, Any]).dump_json(openapi_document(extra_paths, extra_models))

    def verified(request: Request) -> Claims:
        try:
            return keys.verify(_bearer(request), audience=REGISTRY_AUDIENCE, now=clock())
        except IdentityError as exc:
            raise _Refusal(401, str(exc)) from exc

    def caller_of(request: Request, agent: str) -> None:
        _check_caller(verified(request), agent)

    @server.custom_route("/api/agents", methods=["POST"])
    @_refusals
    async def register(request: Request) -> Response:
        claims = verified(request)  # refuse the unauthenticated before reading their body
        reg = _registration(await _body(request))
        _check_caller(claims, reg.name)
        return _json(200, (await call.write(inventory.upsert, reg, clock())).model_dump_json().encode())

    @server.custom_route("/api/agents/{name}/{instance}/lease", methods=["PUT"])
    @_refusals
    async def renew(request: Request) -> Response:
        name, instance = request.path_params["name"], request.path_params["instance"]
        caller_of(request, name)
        record = await call.write(inventory.renew, name, instance, clock())
        if record is None:
            raise _Refusal(404, "unknown registration; register again")
        return _json(200, record.model_dump_json().encode())

    @server.custom_route("/api/agents/{name}/{instance}", methods=["DELETE"])
    @_refusals
    async def deregister(request: Request) -> Response:
        name, instance = request.path_params["name"], request.path_params["instance"]
        caller_of(request, name)
        if not await call.write(inventory.remove, name, instance):
            raise _Refusal(404, "unknown registration")
        return Response(status_code=204)

    @server.custom_route("/api/agents", methods=["GET"])
    @_refusals
    async def agents(request: Request) -> Response:
        query = request.query_params
        now = None if _flag(query.get("all", "")) else clock()

        def listing() -> bytes:
            return inventory.find_json(
                now,
                tool=query.get("tool"),
                owner=query.get("owner"),
                jurisdiction=query.get("jurisdiction"),
                data_class=query.get("data_class"),
                name=query.get("name"),
            )

        body = await call.read(listing)
        if now is None or not isinstance(body, Listing):
            return _json(200, body)  # lapsed records too: their times are their news, so no tag
        headers = {"ETag": body.tag}
        if body.lease_floor is not None:
            headers[LEASE_FLOOR_HEADER] = repr(body.lease_floor)
        if _matches(request.headers.get("if-none-match"), body.tag):
            return Response(status_code=304, headers=headers)
        return Response(body, status_code=200, media_type="application/json", headers=headers)

    @server.custom_route("/openapi.json", methods=["GET"])
    async def openapi(request: Request) -> Response:
        return _json(200, document)

    async def list_agents() -> AgentListing:
        now = clock()
        return await call.read(lambda: _listing(inventory.alive(now)))

    async def find_agents(
        tool: Annotated[str | None, Field(description="a tool name the agent serves, e.g. lookup")] = None,
        owner: Annotated[str | None, Field(description="the owning team, e.g. support-team")] = None,
        jurisdiction: Annotated[str | None, Field(description="where data may be processed, e.g. eu")] = None,
        data_class: Annotated[
            str | None,
            Field(description="the data classification the agent is cleared for, e.g. confidential"),
        ] = None,
    ) -> AgentListing:
        now = clock()
        return await call.read(
            lambda: _listing(
                inventory.find(now, tool=tool, owner=owner, jurisdiction=jurisdiction, data_class=data_class)
            )
        )

    read_only = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)
    server.add_tool(
        list_agents,
        name="list_agents",
        description="List the live agents of this mesh with their tools, owner, jurisdiction and data class.",
        annotations=read_only,
    )
    server.add_tool(find_agents, name="find_agents", description=_FIND_DESCRIPTION, annotations=read_only)


class _Refusal(Exception):
    """A request the API answers with an error status and a one-line JSON `{"error": ...}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _refusals(handler: Handler) -> Handler:
    """The one place a `_Refusal` becomes an HTTP error response."""

    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except _Refusal as refusal:
            body = ErrorBody(error=" ".join(str(refusal).split())).model_dump_json().encode()
            headers = {"WWW-Authenticate": "Bearer"} if refusal.status == 401 else None
            return Response(body, status_code=refusal.status, media_type="application/json", headers=headers)

    return guarded


def _json(status: int, body: bytes) -> Response:
    return Response(body, status_code=status, media_type="application/json")


def _check_caller(claims: Claims, agent: str) -> None:
    if claims.role != "agent":
        raise _Refusal(403, f"a {claims.role} token may not register or renew agents; only an agent's own token may")
    if claims.caller != agent:
        raise _Refusal(401, f"a token of '{claims.caller}' may not act for agent '{agent}'")


def _bearer(request: Request) -> str:
    try:
        token = bearer_token(request.scope)
    except IdentityError:  # another scheme: to this API no bearer token at all
        token = None
    if token is None:
        raise _Refusal(401, "missing bearer token: send Authorization: Bearer <token> (see `mesh token`)")
    return token


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _Refusal(413, f"request body over {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _Refusal(413, f"request body over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _registration(body: bytes) -> Registration:
    try:
        reg = Registration.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if any(error["type"] == "json_invalid" for error in errors):
            raise _Refusal(400, f"malformed JSON body: {errors[0]['msg']}") from exc
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors[:5])
        raise _Refusal(422, f"invalid registration: {details}") from exc
    if not is_name(reg.name):
        raise _Refusal(422, f"invalid registration: name {reg.name!r} is not a DNS label")
    if not _INSTANCE.match(reg.instance):
        raise _Refusal(422, f"invalid registration: instance {reg.instance!r} must be 1-128 of [A-Za-z0-9._:-]")
    if not (math.isfinite(reg.lease_seconds) and 0 < reg.lease_seconds <= MAX_LEASE_SECONDS):
        raise _Refusal(422, f"invalid registration: lease_seconds must be in (0, {MAX_LEASE_SECONDS:g}]")
    return reg


def _matches(if_none_match: str | None, tag: str) -> bool:
    """True when an If-None-Match header names `tag` (or is "*"): the client holds this listing."""
    if if_none_match is None:
        return False
    tags = {part.strip().removeprefix("W/") for part in if_none_match.split(",")}
    return tag in tags or "*" in tags


def _flag(value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise _Refusal(400, f"invalid value {value!r} for 'all': use 1 or 0")


def _listing(records: list[AgentRecord]) -> AgentListing:
    summaries = [AgentSummary.model_validate(record, from_attributes=True) for record in records]
    return AgentListing(agents=summaries, count=len(summaries))
