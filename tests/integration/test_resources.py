"""Resources and prompts on the mesh: on an agent, through the gateway, under policy, and from an adopted server."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp_types import ListResourcesResult

from mesh.testing import AgentProcess, MeshProcess, RegistryProcess
from tests.integration.helpers import mesh_cli, sdk_client, until

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
KB = str(ROOT / "agents" / "kb.py")
FIXTURES = Path(__file__).resolve().parent / "fixtures"
LIBRARY = f"{sys.executable} {FIXTURES / 'stdio_library.py'}"
POLICY = str(FIXTURES / "resources.cedar")


@asynccontextmanager
async def gateway(*args: str) -> AsyncGenerator[Client]:
    """`mesh gateway` over stdio, as Claude Desktop launches it."""
    params = StdioServerParameters(command=sys.executable, args=["-m", "mesh", "gateway", *args], env={**os.environ})
    async with Client(params) as client:
        yield client


async def resources_once(client: Client, check: Callable[[set[str]], bool]) -> ListResourcesResult:
    """List the gateway's resources (bounded polling) until the agents they come from have joined."""

    async def fetch() -> ListResourcesResult:
        return await client.list_resources()

    return await until(fetch, lambda listed: check({r.uri for r in listed.resources}), timeout=60)


def adopted_library(*args: str) -> MeshProcess:
    """The plain SDK server with resources and prompts, put on the mesh as `library` with no owner."""
    return MeshProcess(["run", "--command", LIBRARY, "--name", "library", "--port", "0", *args])


def text(contents: Any) -> str:
    return str(contents.model_dump()["text"])


async def test_kb_articles_are_resources_and_its_prompt_is_served_to_an_sdk_client_on_the_agent(
    mesh_env: dict[str, str],
) -> None:
    with anyio.fail_after(60):
        async with AgentProcess(KB, "--no-mdns") as kb, sdk_client(kb.url) as client:
            resources = (await client.list_resources()).resources
            templates = (await client.list_resource_templates()).resource_templates
            article = await client.read_resource("kb://articles/KB-101")
            prompts = (await client.list_prompts()).prompts
            rendered = await client.get_prompt("answer_ticket", {"ticket": "how do I reset my password?"})

    assert [r.uri for r in resources] == ["kb://articles"]
    assert [t.uri_template for t in templates] == ["kb://articles/{id}"]
    assert text(article.contents[0]).startswith("# KB-101: Understanding your invoice")
    assert [p.name for p in prompts] == ["answer_ticket"]
    assert "# KB-301: Resetting your password" in text(rendered.messages[0].content)


async def test_the_gateway_offers_every_agents_resources_under_mesh_uris_and_prompts_as_agent__prompt(
    mesh_env: dict[str, str],
) -> None:
    with anyio.fail_after(150):
        async with AgentProcess(KB), gateway() as client:
            listed = await resources_once(client, lambda uris: "mesh://kb/kb://articles" in uris)
            templates = (await client.list_resource_templates()).resource_templates
            index = await client.read_resource("mesh://kb/kb://articles")
            article = await client.read_resource("mesh://kb/kb://articles/KB-201")
            prompts = (await client.list_prompts()).prompts
            rendered = await client.get_prompt("kb__answer_ticket", {"ticket": "I want a refund for my annual plan"})
            with pytest.raises(MCPError, match="no article 'KB-999'") as missing:
                await client.read_resource("mesh://kb/kb://articles/KB-999")
            with pytest.raises(MCPError, match="gateway resources are named mesh://AGENT/URI"):
                await client.read_resource("kb://articles/KB-201")
            with pytest.raises(MCPError, match="no agent named 'nobody'"):
                await client.read_resource("mesh://nobody/x://y")
            with pytest.raises(MCPError, match="AGENT__PROMPT"):
                await client.get_prompt("answer_ticket", {"ticket": "x"})

    [kb_index] = [r for r in listed.resources if r.uri == "mesh://kb/kb://articles"]
    assert kb_index.name == "kb__articles"
    assert kb_index.description is not None
    assert kb_index.description.startswith("[kb · owner support-team · eu · public] ")
    assert [t.uri_template for t in templates] == ["mesh://kb/kb://articles/{id}"]
    assert "- KB-201 [refunds] Requesting a refund" in text(index.contents[0])
    [content] = article.contents
    assert content.uri == "mesh://kb/kb://articles/KB-201"
    assert text(content).startswith("# KB-201: Requesting a refund")
    assert [p.name for p in prompts] == ["kb__answer_ticket"]
    assert "# KB-201: Requesting a refund" in text(rendered.messages[0].content)
    assert "\n" not in missing.value.error.message


async def test_a_policy_that_forbids_one_caller_a_resource_is_enforced_by_the_agent_and_traced(
    mesh_env: dict[str, str],
) -> None:
    with anyio.fail_after(150):
        async with (
            RegistryProcess() as registry,
            AgentProcess(KB, "--registry", registry.base_url, "--no-mdns", "--policy", POLICY) as kb,
        ):
            async with sdk_client(kb.url, caller="intruder") as intruder:
                allowed = await intruder.read_resource("kb://articles/KB-101")
                with pytest.raises(MCPError, match="PolicyDenied: intruder may not read kb") as refused:
                    await intruder.read_resource("kb://articles/KB-201")
            async with sdk_client(kb.url, caller="support-desk") as desk:
                other = await desk.read_resource("kb://articles/KB-201")

            def denied_read(shown: dict[str, Any]) -> bool:
                return any(_denied_read(node) for node in _walk(shown["root"]))

            async def traces() -> list[dict[str, Any]]:
                listed = await anyio.to_thread.run_sync(
                    lambda: mesh_cli(
                        "traces", "ls", "--agent", "kb", "--status", "error", "--json", "--registry", registry.base_url
                    )
                )
                found: list[dict[str, Any]] = []
                for summary in json.loads(listed.stdout or "[]"):
                    shown = await anyio.to_thread.run_sync(
                        lambda tid=summary["trace_id"]: mesh_cli(
                            "traces", "show", tid, "--json", "--registry", registry.base_url
                        )
                    )
                    found.append(json.loads(shown.stdout))
                return found

            stored = await until(traces, lambda found: any(denied_read(t) for t in found), timeout=60)

    assert text(allowed.contents[0]).startswith("# KB-101")
    assert text(other.contents[0]).startswith("# KB-201")
    assert "no-refund-articles-for-intruders" in refused.value.error.message
    [node] = [n for t in stored for n in _walk(t["root"]) if _denied_read(n)]
    assert node["kind"] == "server"
    assert node["agent"] == "kb"
    assert node["attributes"]["mesh.caller"] == "intruder"
    assert node["status"] == "error"


async def test_an_adopted_servers_resources_and_prompts_are_visible_through_the_mesh(mesh_env: dict[str, str]) -> None:
    with anyio.fail_after(150):
        async with adopted_library() as library, gateway() as client:
            async with sdk_client(library.url) as direct:
                on_agent = (await direct.list_resources()).resources
            listed = await resources_once(client, lambda uris: "mesh://library/library://catalog" in uris)
            templates = (await client.list_resource_templates()).resource_templates
            catalog = await client.read_resource("mesh://library/library://catalog")
            book = await client.read_resource("mesh://library/library://books/9780131103627")
            prompts = (await client.list_prompts()).prompts
            rendered = await client.get_prompt("library__recommend", {"topic": "compilers"})
            with pytest.raises(MCPError, match="no book 42"):
                await client.read_resource("mesh://library/library://books/42")

    assert [r.uri for r in on_agent] == ["library://catalog"]
    [entry] = [r for r in listed.resources if r.uri == "mesh://library/library://catalog"]
    assert entry.name == "library__catalog"
    assert entry.description == "[library] Every book's ISBN and title."
    assert "mesh://library/library://books/{isbn}" in [t.uri_template for t in templates]
    assert "9780262033848 Introduction to Algorithms" in text(catalog.contents[0])
    assert text(book.contents[0]) == "The C Programming Language (ISBN 9780131103627)"
    assert "library__recommend" in [p.name for p in prompts]
    assert text(rendered.messages[0].content) == "Recommend one book from the library catalog about compilers."


async def test_mesh_ls_flags_a_server_nobody_owns_as_ungoverned(mesh_env: dict[str, str]) -> None:
    with anyio.fail_after(150):
        async with (
            RegistryProcess() as registry,
            adopted_library("--registry", registry.base_url, "--no-mdns"),
            AgentProcess(KB, "--registry", registry.base_url, "--no-mdns"),
        ):
            ls = ("ls", "--registry", registry.base_url, "--wait", "0")
            as_json = await until(
                lambda: anyio.to_thread.run_sync(lambda: mesh_cli(*ls, "--json")),
                lambda r: {row["name"] for row in json.loads(r.stdout or "[]")} >= {"library", "kb"},
                timeout=60,
            )
            shown = await anyio.to_thread.run_sync(lambda: mesh_cli(*ls))

    governed = {row["name"]: row["governed"] for row in json.loads(as_json.stdout)}
    assert governed["library"] is False
    assert governed["kb"] is True
    assert shown.returncode == 0, shown.stderr
    assert "library (ungoverned)" in shown.stdout
    assert "kb (ungoverned)" not in shown.stdout
    assert "ungoverned (no owner; give one with --meta owner=...): library" in " ".join(shown.stdout.split())


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node]
    for child in node.get("children", []):
        found.extend(_walk(child))
    return found


def _denied_read(node: dict[str, Any]) -> bool:
    return node["name"] == "resources/read" and any(
        d["kind"] == "policy" and d["choice"] == "deny" for d in node.get("decisions", [])
    )
