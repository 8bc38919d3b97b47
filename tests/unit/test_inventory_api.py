"""The inventory's HTTP routes and MCP tools, on a real MCPServer driven in-process."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer
from pydantic import TypeAdapter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mesh.identity import MeshKeys
from mesh.wire import AgentRecord, Governance, Registration, ToolInfo
from registry.inventory_api import MAX_BODY_BYTES, install_inventory
from registry.openapi import openapi_document
from registry.stores import InventoryStore
from tests.unit.store_backends import BACKENDS, opened

pytestmark = pytest.mark.anyio

KEYS = MeshKeys(b"test secret", "acme")
NOW = 1_700_000_000.0


@dataclass
class Clock:
    """A clock the test moves by hand."""

    now: float = NOW

    def __call__(self) -> float:
        return self.now


@dataclass
class Registry:
    """An in-process registry: its server, its store, its clock, and an HTTP client of its app."""

    server: MCPServer[Any]
    inventory: InventoryStore
    clock: Clock
    app: Starlette
    http: httpx2.AsyncClient = field(init=False)


@asynccontextmanager
async def running_registry(inventory: InventoryStore, keys: MeshKeys = KEYS) -> AsyncGenerator[Registry]:
    """A registry app on `inventory` (with the /healthz the real one composes) running, reached through ASGI."""
    clock = Clock()
    server = MCPServer("registry")
    install_inventory(server, inventory, keys, clock=clock)

    @server.custom_route("/healthz", methods=["GET"])
    async def healthz(request: Request) -> Response:  # pyright: ignore[reportUnusedFunction]
        return JSONResponse({"status": "ok"})

    app = server.streamable_http_app()
    async with app.router.lifespan_context(app):
        registry = Registry(server, inventory, clock, app)
        async with httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app), base_url="http://127.0.0.1:7420"
        ) as registry.http:
            yield registry


@pytest.fixture(params=BACKENDS)
async def registry(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Registry]:
    with opened(request, tmp_path) as backend:
        async with running_registry(backend.inventory()) as running:
            yield running


def registration(name: str = "crm", instance: str = "a1", **metadata: str) -> Registration:
    return Registration(
        name=name,
        instance=instance,
        url=f"http://127.0.0.1:9000/{name}/mcp",
        version="1.2.0",
        tools=[ToolInfo(name="lookup", description="Find an account", annotations={"readOnlyHint": True})],
        metadata=Governance.model_validate(metadata),
    )


def auth(caller: str, audience: str = "registry", keys: MeshKeys = KEYS) -> dict[str, str]:
    return {"authorization": f"Bearer {keys.mint(caller, audience, now=NOW)}"}


async def post(registry: Registry, reg: Registration, headers: dict[str, str] | None = None) -> httpx2.Response:
    return await registry.http.post("/api/agents", content=reg.model_dump_json(), headers=headers)


def error_of(response: httpx2.Response) -> str:
    body = response.json()
    assert set(body) == {"error"}
    assert "\n" not in body["error"]
    return body["error"]


# --- writes ---


async def test_an_agent_registers_itself_with_a_token_of_its_own(registry: Registry) -> None:
    response = await post(registry, registration(owner="sales"), auth("crm"))

    assert response.status_code == 200
    record = AgentRecord.model_validate_json(response.content)
    assert (record.name, record.instance, record.metadata.owner) == ("crm", "a1", "sales")
    assert (record.first_seen, record.expires_at) == (NOW, NOW + 10.0)
    assert registry.inventory.all() == [record]


async def test_a_token_for_any_agent_of_the_mesh_may_register_too(registry: Registry) -> None:
    response = await post(registry, registration(), auth("crm", audience="*"))

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({}, "missing bearer token"),
        ({"authorization": "Basic Y3JtOg=="}, "missing bearer token"),
        (auth("crm", keys=MeshKeys(b"another secret", "acme")), "signature"),
        (auth("crm", keys=MeshKeys(b"test secret", "other-mesh")), "mesh"),
        (auth("mesh-cli"), "'mesh-cli' may not act for agent 'crm'"),
        (auth("kb"), "'kb' may not act for agent 'crm'"),
        (auth("crm", audience="kb"), "'kb'"),
        ({"authorization": "Bearer not-a-token"}, "malformed token"),
    ],
    ids=["none", "basic", "forged", "other-mesh", "cli", "other-agent", "other-audience", "garbage"],
)
async def test_a_registration_without_the_agents_own_valid_token_is_refused_with_401(
    registry: Registry, headers: dict[str, str], says: str
) -> None:
    response = await post(registry, registration(), headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert says in error_of(response)
    assert registry.inventory.all() == []


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{not json", 400, "malformed JSON"),
        (b'{"name": "crm"}', 422, "instance: Field required"),
        (b'{"name": "Not A Label", "instance": "a1", "url": "u"}', 422, "DNS label"),
        (b'{"name": "crm", "instance": "a/1", "url": "u"}', 422, "instance"),
        (b'{"name": "crm", "instance": "a1", "url": "u", "lease_seconds": -1}', 422, "lease_seconds"),
        (b'{"name": "crm", "instance": "a1", "url": "u", "lease_seconds": "Infinity"}', 422, "lease_seconds"),
        (b'{"name": "crm", "instance": "a1", "url": "u", "tools": "lookup"}', 422, "tools"),
    ],
    ids=[
        "not-json",
        "missing-fields",
        "bad-name",
        "bad-instance",
        "negative-lease",
        "endless-lease",
        "bad-tools",
    ],
)
async def test_a_malformed_registration_is_refused_with_a_one_line_error(
    registry: Registry, body: bytes, status: int, says: str
) -> None:
    response = await registry.http.post("/api/agents", content=body, headers=auth("crm"))

    assert response.status_code == status
    assert says in error_of(response)
    assert registry.inventory.all() == []


async def test_a_body_over_one_mebibyte_is_refused_with_413(registry: Registry) -> None:
    big = registration().model_copy(update={"version": "x" * MAX_BODY_BYTES})

    response = await post(registry, big, auth("crm"))

    assert response.status_code == 413
    assert "bytes" in error_of(response)


async def test_a_body_over_one_mebibyte_without_a_length_is_refused_with_413(registry: Registry) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b" " * (MAX_BODY_BYTES // 4)

    response = await registry.http.post("/api/agents", content=chunks(), headers=auth("crm"))

    assert response.status_code == 413


async def test_a_heartbeat_extends_the_lease_and_keeps_first_seen(registry: Registry) -> None:
    await post(registry, registration(), auth("crm"))
    registry.clock.now = NOW + 5

    response = await registry.http.put("/api/agents/crm/a1/lease", headers=auth("crm"))

    assert response.status_code == 200
    record = AgentRecord.model_validate_json(response.content)
    assert (record.first_seen, record.last_seen, record.expires_at) == (NOW, NOW + 5, NOW + 15)


async def test_a_heartbeat_for_an_unknown_registration_answers_404_register_again(registry: Registry) -> None:
    response = await registry.http.put("/api/agents/crm/a1/lease", headers=auth("crm"))

    assert response.status_code == 404
    assert error_of(response) == "unknown registration; register again"


async def test_an_agent_cannot_renew_or_remove_another_agents_registration(registry: Registry) -> None:
    await post(registry, registration(), auth("crm"))

    renew = await registry.http.put("/api/agents/crm/a1/lease", headers=auth("kb"))
    remove = await registry.http.delete("/api/agents/crm/a1", headers=auth("kb"))

    assert (renew.status_code, remove.status_code) == (401, 401)
    assert len(registry.inventory.all()) == 1


async def test_deregistering_answers_204_then_404(registry: Registry) -> None:
    await post(registry, registration(), auth("crm"))

    first = await registry.http.delete("/api/agents/crm/a1", headers=auth("crm"))
    second = await registry.http.delete("/api/agents/crm/a1", headers=auth("crm"))

    assert (first.status_code, second.status_code) == (204, 404)
    assert registry.inventory.all() == []


# --- reads ---


async def test_listing_needs_no_token_and_filters_by_jurisdiction_and_data_class(registry: Registry) -> None:
    await post(registry, registration("crm", jurisdiction="eu", data_class="confidential"), auth("crm"))
    await post(registry, registration("kb", jurisdiction="eu", data_class="public"), auth("kb"))
    await post(registry, registration("ledger", jurisdiction="us", data_class="confidential"), auth("ledger"))

    response = await registry.http.get("/api/agents", params={"jurisdiction": "EU", "data_class": "confidential"})
    everyone = await registry.http.get("/api/agents")

    assert response.status_code == 200
    assert [r["name"] for r in response.json()] == ["crm"]
    assert [r["name"] for r in everyone.json()] == ["crm", "kb", "ledger"]


async def test_lapsed_registrations_are_listed_only_with_all_1(registry: Registry) -> None:
    await post(registry, registration(), auth("crm"))
    registry.clock.now = NOW + 60

    alive = await registry.http.get("/api/agents")
    everything = await registry.http.get("/api/agents", params={"all": "1", "tool": "lookup"})
    bad = await registry.http.get("/api/agents", params={"all": "maybe"})

    assert alive.json() == []
    assert [(r["name"], r["last_seen"]) for r in everything.json()] == [("crm", NOW)]
    assert bad.status_code == 400
    assert "'all'" in error_of(bad)


# --- OpenAPI ---


async def test_the_openapi_document_describes_the_routes_with_the_wire_models(registry: Registry) -> None:
    response = await registry.http.get("/openapi.json")

    document = json.loads(response.content)
    assert document["openapi"].startswith("3.1")
    assert {"/api/agents", "/api/agents/{name}/{instance}/lease", "/api/agents/{name}/{instance}"} <= set(
        document["paths"]
    )
    schemas = document["components"]["schemas"]
    assert {"Registration", "AgentRecord", "ErrorBody", "ToolInfo", "Governance"} <= set(schemas)
    assert "first_seen" in schemas["AgentRecord"]["properties"]
    refs = _refs(document)
    assert refs
    assert all(ref.removeprefix("#/components/schemas/") in schemas for ref in refs)


async def test_openapi_json_serves_the_document_registry_openapi_builds(registry: Registry) -> None:
    response = await registry.http.get("/openapi.json")

    assert response.headers["content-type"] == "application/json"
    assert response.content == TypeAdapter(dict[str, Any]).dump_json(openapi_document())


def test_the_openapi_document_takes_extra_paths_and_models() -> None:
    document = openapi_document({"/v1/traces": {"post": {"responses": {}}}}, [ToolInfo])

    assert "/v1/traces" in document["paths"]
    assert "/api/agents" in document["paths"]


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [value for key, value in node.items() if key == "$ref" and isinstance(value, str)]
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


# --- MCP tools ---


async def test_an_mcp_client_finds_who_may_handle_confidential_eu_data(registry: Registry) -> None:
    registry.inventory.upsert(registration("crm", jurisdiction="eu", data_class="confidential"), NOW)
    registry.inventory.upsert(registration("kb", jurisdiction="eu", data_class="public"), NOW)

    async with Client(registry.server) as client:
        result = await client.call_tool("find_agents", {"jurisdiction": "eu", "data_class": "confidential"})

    assert not result.is_error
    assert result.structured_content is not None
    agents = result.structured_content["agents"]
    assert [agent["name"] for agent in agents] == ["crm"]
    assert agents[0]["metadata"]["jurisdiction"] == "eu"
    assert agents[0]["tools"] == [
        {
            "name": "lookup",
            "description": "Find an account",
            "annotations": {"readOnlyHint": True},
            "approval": False,
        }
    ]


async def test_list_agents_shows_live_agents_only(registry: Registry) -> None:
    registry.inventory.upsert(registration("crm"), NOW)
    registry.inventory.upsert(registration("old"), NOW - 60)

    async with Client(registry.server) as client:
        result = await client.call_tool("list_agents", {})

    assert result.structured_content is not None
    assert result.structured_content["count"] == 1
    assert [agent["name"] for agent in result.structured_content["agents"]] == ["crm"]


async def test_the_inventory_tools_are_read_only_and_explain_how_to_ask(registry: Registry) -> None:
    async with Client(registry.server) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}

    assert set(tools) >= {"list_agents", "find_agents"}
    for tool in (tools["list_agents"], tools["find_agents"]):
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is True
    find = tools["find_agents"]
    assert find.description is not None
    assert 'jurisdiction="eu", data_class="confidential"' in find.description
    assert set(find.input_schema["properties"]) == {"tool", "owner", "jurisdiction", "data_class"}
