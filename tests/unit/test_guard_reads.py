"""The `CallGuard` governs `resources/read` and `prompts/get` as it governs `tools/call` (in process)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from opentelemetry.sdk.resources import Resource

from mesh import Agent
from mesh.identity import MeshKeys
from mesh.policy import Policy
from mesh.runtime.guard import CallGuard
from mesh.runtime.tools import build_server
from mesh.testing import RecordingSink
from mesh.tracing.server_spans import ServerSpans
from mesh.tracing.spans import MeshTracerProvider

pytestmark = pytest.mark.anyio

POLICY = """
@id("calls-reads-and-prompts")
permit(principal, action in [Action::"call", Action::"read_resource", Action::"get_prompt"], resource);

@id("no-secret-notes")
forbid(principal, action == Action::"read_resource", resource) when { context.uri like "notes://secret/*" };

@id("no-confessions")
forbid(principal, action == Action::"get_prompt", resource) when { context.prompt == "confess" };

@id("drafts-need-a-human")
@approval
forbid(principal, action == Action::"read_resource", resource) when { context.uri == "notes://drafts" };
"""


def notes() -> Agent:
    agent = Agent("notes", owner="docs")

    @agent.resource("notes://public/{name}")
    async def public(name: str) -> str:  # pyright: ignore[reportUnusedFunction]
        return f"public {name}"

    @agent.resource("notes://secret/{name}")
    async def secret(name: str) -> str:  # pyright: ignore[reportUnusedFunction]
        raise AssertionError("policy must stop this read before it runs")

    @agent.resource("notes://drafts")
    async def drafts() -> str:  # pyright: ignore[reportUnusedFunction]
        raise AssertionError("nobody approved this read")

    @agent.prompt
    async def summarize(topic: str) -> str:  # pyright: ignore[reportUnusedFunction]
        return f"Summarize {topic}."

    @agent.prompt
    async def confess() -> str:  # pyright: ignore[reportUnusedFunction]
        raise AssertionError("policy must stop this prompt before it renders")

    return agent


@pytest.fixture
async def guarded(mesh_env: dict[str, str]) -> AsyncGenerator[tuple[Client, RecordingSink]]:
    del mesh_env  # the mesh secret lives in this test's MESH_HOME
    server, sink = guarded_server()
    async with Client(server) as client:
        yield client, sink


def guarded_server() -> tuple[MCPServer, RecordingSink]:
    """The notes agent behind a `CallGuard` with the policy above, its spans recorded in the sink."""
    agent = notes()
    guard = CallGuard(
        agent=agent.name,
        metadata=agent.governance.model_dump(exclude_none=True),
        policy=Policy.from_text(POLICY),
        caller_metadata=lambda name: None,
        keys=MeshKeys.load(),
    )
    server = build_server(agent, peers=None, middleware=[guard])
    sink = RecordingSink()
    provider = MeshTracerProvider(Resource.create({"service.name": "notes"}), sink)
    server.middleware[:] = [ServerSpans(provider) if isinstance(m, ServerSpans) else m for m in server.middleware]
    return server, sink


async def test_a_read_the_policy_allows_runs_and_its_verdict_is_on_the_server_span(
    guarded: tuple[Client, RecordingSink],
) -> None:
    client, sink = guarded
    result = await client.read_resource("notes://public/readme")
    assert result.contents[0].model_dump()["text"] == "public readme"
    [span] = [s for s in sink.spans if s.name == "resources/read"]
    assert span.attributes is not None
    assert span.attributes["mcp.resource.uri"] == "notes://public/readme"
    assert span.attributes["mesh.caller"] == "anonymous"
    assert ("resources/read", "policy", "allow") in sink.decisions()


async def test_a_read_the_policy_forbids_is_refused_before_the_function_runs(
    guarded: tuple[Client, RecordingSink],
) -> None:
    client, sink = guarded
    with pytest.raises(MCPError, match="PolicyDenied: anonymous may not read notes notes://secret/plans") as caught:
        await client.read_resource("notes://secret/plans")
    assert "no-secret-notes" in caught.value.error.message
    assert ("resources/read", "policy", "deny") in sink.decisions()
    [span] = [s for s in sink.spans if s.name == "resources/read"]
    assert span.status.status_code.name == "ERROR"


async def test_a_prompt_the_policy_forbids_is_refused_and_others_render(guarded: tuple[Client, RecordingSink]) -> None:
    client, sink = guarded
    rendered = await client.get_prompt("summarize", {"topic": "the meeting"})
    with pytest.raises(MCPError, match="PolicyDenied: anonymous may not get the prompt notes confess"):
        await client.get_prompt("confess")
    assert rendered.messages[0].content.model_dump()["text"] == "Summarize the meeting."
    verdicts = [(name, choice) for name, kind, choice in sink.decisions() if kind == "policy"]
    assert verdicts == [("prompts/get summarize", "allow"), ("prompts/get confess", "deny")]


async def test_a_read_that_needs_a_person_with_no_queue_in_reach_is_refused(
    guarded: tuple[Client, RecordingSink],
) -> None:
    client, sink = guarded
    with pytest.raises(MCPError, match="ApprovalDenied: notes notes://drafts: needs a person's approval") as caught:
        await client.read_resource("notes://drafts")
    assert "no interactive client and no registry queue" in caught.value.error.message
    assert ("resources/read", "policy", "approval") in sink.decisions()


async def test_a_spent_budget_refuses_the_read(guarded: tuple[Client, RecordingSink]) -> None:
    client, _ = guarded
    meta: dict[str, Any] = {"agentplex/budget_ms": 0}
    with pytest.raises(MCPError, match="DeadlineExceeded"):
        await client.session.read_resource("notes://public/readme", meta=meta)  # pyright: ignore[reportArgumentType]


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")  # a 2025-11-25 method
async def test_subscribing_is_governed_as_reading(mesh_env: dict[str, str]) -> None:
    del mesh_env
    server, sink = guarded_server()
    async with Client(server, mode="legacy") as client:
        await client.subscribe_resource("notes://public/readme")  # pyright: ignore[reportDeprecated]
        with pytest.raises(MCPError, match="PolicyDenied: anonymous may not subscribe to notes notes://secret/x"):
            await client.subscribe_resource("notes://secret/x")  # pyright: ignore[reportDeprecated]
        await client.subscribe_resource("notes://drafts")  # pyright: ignore[reportDeprecated] - its reads wait for a person
    verdicts = [(name, choice) for name, kind, choice in sink.decisions() if kind == "policy"]
    assert verdicts == [
        ("resources/subscribe", "allow"),
        ("resources/subscribe", "deny"),
        ("resources/subscribe", "approval"),
    ]


async def test_listings_are_not_governed_reads(guarded: tuple[Client, RecordingSink]) -> None:
    client, sink = guarded
    listed = await client.list_resource_templates()
    prompts = await client.list_prompts()
    assert {t.uri_template for t in listed.resource_templates} == {"notes://public/{name}", "notes://secret/{name}"}
    assert {p.name for p in prompts.prompts} == {"summarize", "confess"}
    assert sink.decisions() == []
