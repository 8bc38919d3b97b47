"""`mesh gateway` driven over stdio by the SDK `Client`, exactly as Claude Desktop drives it."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.session import IncomingMessage
from mcp_types import CallToolResult, TextContent, ToolListChangedNotification

from mesh.testing import AgentProcess, RegistryProcess

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
ECHO = str(ROOT / "agents" / "echo.py")
MODES = ["legacy", "auto"]  # the 2025-11-25 handshake, and 2026-07-28 when the server offers it

# Runs in its own interpreter: the tracer provider is process-global and set once.
TRACED_CALLS = """
import json
import anyio
from mcp import Client
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from mesh.gateway import GATEWAY_NAME, Gateway
from mesh.runtime.node import MeshNode

spans = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(provider)

async def main():
    async with MeshNode(GATEWAY_NAME) as node, Gateway(node) as gateway:
        async with Client(gateway.server) as client:  # in process at 2026-07-28: _meta carries no traceparent
            await client.call_tool("echo__echo", {"text": "untraced"})
        async with Client(gateway.server, mode="legacy") as client:  # the SDK client sends its span along
            with trace.get_tracer("claude").start_as_current_span("claude turn"):
                await client.call_tool("echo__echo", {"text": "traced"})
    print(json.dumps([
        {"name": s.name, "kind": s.kind.name, "trace": s.context.trace_id, "id": s.context.span_id,
         "parent": s.parent.span_id if s.parent else None}
        for s in spans.get_finished_spans()
    ]))

anyio.run(main)
"""


class Inbox:
    """The Client's `message_handler`: counts `notifications/tools/list_changed`, keeps any fault."""

    def __init__(self) -> None:
        self.changes = 0
        self.faults: list[Exception] = []
        self._arrived = anyio.Event()

    async def __call__(self, message: IncomingMessage) -> None:
        if isinstance(message, Exception):
            self.faults.append(message)
        elif isinstance(message, ToolListChangedNotification):
            self.changes += 1
        self._arrived.set()
        self._arrived = anyio.Event()

    async def change_after(self, seen: int) -> None:
        """Return once more than `seen` list_changed notifications have arrived."""
        while self.changes <= seen:
            await self._arrived.wait()


@asynccontextmanager
async def gateway(mode: str, *args: str, inbox: Inbox | None = None) -> AsyncGenerator[Client]:
    """`mesh gateway` as Claude Desktop launches it; 2026-07-28 clients subscribe to tool changes."""
    params = StdioServerParameters(command=sys.executable, args=["-m", "mesh", "gateway", *args], env={**os.environ})
    async with Client(params, mode=mode, message_handler=inbox) as client:
        if client.protocol_version == "2026-07-28":
            async with client.listen(tools_list_changed=True):
                yield client
        else:
            yield client


async def tool_names(client: Client) -> set[str]:
    return {tool.name for tool in (await client.list_tools()).tools}


async def listed_after_changes(client: Client, inbox: Inbox, *, echo: bool) -> set[str]:
    """Re-list on each list_changed until `echo__echo` is (or is no longer) listed: no polling."""
    while True:
        seen = inbox.changes
        names = await tool_names(client)
        if ("echo__echo" in names) == echo:
            return names
        await inbox.change_after(seen)


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


@pytest.mark.parametrize("mode", MODES)
async def test_each_agent_tool_is_listed_as_agent__tool_with_schema_annotations_and_governance(
    mesh_env: dict[str, str], mode: str
) -> None:
    inbox = Inbox()
    with anyio.fail_after(40):
        async with AgentProcess(ECHO), gateway(mode, inbox=inbox) as client:
            await listed_after_changes(client, inbox, echo=True)
            listing = await client.list_tools()
            version, capabilities = client.protocol_version, client.server_capabilities

    assert version == {"legacy": "2025-11-25", "auto": "2026-07-28"}[mode]
    assert capabilities.tools is not None
    assert capabilities.tools.list_changed is True
    [tool] = [t for t in listing.tools if t.name == "echo__echo"]
    assert tool.input_schema["properties"]["text"]["type"] == "string"
    assert tool.input_schema["required"] == ["text"]
    assert tool.output_schema is not None
    assert tool.output_schema["properties"]["result"]["type"] == "string"
    assert tool.annotations is not None
    assert tool.annotations.read_only_hint is True
    assert tool.annotations.idempotent_hint is True
    assert tool.description == "[echo · owner platform-team · eu · public] Return `text` unchanged."


@pytest.mark.parametrize("mode", MODES)
async def test_a_call_is_routed_to_the_agent_and_returns_its_answer(mesh_env: dict[str, str], mode: str) -> None:
    inbox = Inbox()
    with anyio.fail_after(40):
        async with AgentProcess(ECHO), gateway(mode, inbox=inbox) as client:
            await listed_after_changes(client, inbox, echo=True)
            result = await client.call_tool("echo__echo", {"text": "hello through the gateway"})

    assert result.is_error is False
    assert result.structured_content == {"result": "hello through the gateway"}
    assert text_of(result) == "hello through the gateway"
    assert inbox.faults == []  # stdout carried nothing but protocol


@pytest.mark.parametrize("mode", MODES)
async def test_an_agent_that_joins_is_announced_with_list_changed_and_one_that_leaves_disappears(
    mesh_env: dict[str, str], mode: str
) -> None:
    inbox = Inbox()
    with anyio.fail_after(60):
        async with gateway(mode, inbox=inbox) as client:
            before = await tool_names(client)
            async with AgentProcess(ECHO):
                during = await listed_after_changes(client, inbox, echo=True)
            after = await listed_after_changes(client, inbox, echo=False)

    assert "echo__echo" not in before
    assert "echo__echo" in during
    assert "echo__echo" not in after
    assert inbox.faults == []


@pytest.mark.parametrize("mode", MODES)
async def test_unknown_tools_and_bad_arguments_get_a_clean_error_result(mesh_env: dict[str, str], mode: str) -> None:
    inbox = Inbox()
    with anyio.fail_after(40):
        async with AgentProcess(ECHO), gateway(mode, inbox=inbox) as client:
            await listed_after_changes(client, inbox, echo=True)
            no_separator = await client.call_tool("echo", {"text": "x"})
            no_such_tool = await client.call_tool("echo__shout", {"text": "x"})
            no_such_agent = await client.call_tool("nobody__echo", {"text": "x"})
            missing_argument = await client.call_tool("echo__echo", {})
            wrong_type = await client.call_tool("echo__echo", {"text": 5})

    assert no_separator.is_error
    assert "AGENT__TOOL" in text_of(no_separator)
    assert no_such_tool.is_error
    assert "has no tool 'shout'" in text_of(no_such_tool)
    assert no_such_agent.is_error
    assert "nobody" in text_of(no_such_agent)
    assert missing_argument.is_error
    assert "'text': field required" in text_of(missing_argument)
    assert wrong_type.is_error
    assert "'text'" in text_of(wrong_type)
    for result in (no_separator, no_such_tool, no_such_agent, missing_argument, wrong_type):
        assert "\n" not in text_of(result)


@pytest.mark.parametrize("mode", MODES)
async def test_the_registry_tools_are_exposed_and_answer_through_the_gateway(
    mesh_env: dict[str, str], mode: str
) -> None:
    with anyio.fail_after(60):
        async with RegistryProcess("--no-mdns") as registry:
            url = registry.base_url
            async with AgentProcess(ECHO, "--registry", url), gateway(mode, "--registry", url) as client:
                names = await tool_names(client)
                agents = await client.call_tool("registry__list_agents", {})

    assert {"registry__list_agents", "registry__find_agents", "echo__echo"} <= names
    assert agents.is_error is False
    assert "echo" in json.dumps(agents.structured_content)


async def test_the_gateway_span_starts_the_trace_or_joins_the_callers_and_the_peer_call_nests_under_it(
    mesh_env: dict[str, str],
) -> None:
    with anyio.fail_after(60):
        async with AgentProcess(ECHO):
            run = await anyio.run_process([sys.executable, "-c", TRACED_CALLS], check=False)
    assert run.returncode == 0, run.stderr.decode()
    spans = json.loads(run.stdout)

    servers = [s for s in spans if s["name"] == "tools/call echo.echo" and s["kind"] == "SERVER"]
    clients = [s for s in spans if s["name"] == "tools/call echo.echo" and s["kind"] == "CLIENT"]
    [turn] = [s for s in spans if s["name"] == "claude turn"]
    [untraced, traced] = servers  # one SERVER span per call: the SDK's, named by the gateway
    assert untraced["parent"] is None
    assert traced["trace"] == turn["trace"]
    assert traced["parent"] is not None
    assert sorted((c["trace"], c["parent"]) for c in clients) == sorted((s["trace"], s["id"]) for s in servers)
