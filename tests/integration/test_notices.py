"""Progress, log messages and a tool's own questions travel hop by hop to the origin client (issue 26).

The chain: an SDK `Client` → `mesh gateway` (stdio) → agent `a` → agent `b` → `worker`, each a real
process; or a client with a mesh token straight to an agent. The worker reports progress, logs at
debug and info, and asks the person for their name (`fixtures/chatty.py`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types import (
    CallToolResult,
    ElicitRequestParams,
    ElicitResult,
    InputRequiredResult,
    InputResponse,
    LoggingLevel,
    LoggingMessageNotificationParams,
    TextContent,
)

from mesh.identity import MeshKeys
from mesh.testing import AgentProcess, MeshProcess, RegistryProcess
from mesh.wire import ASK_INPUT_KEY

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CHATTY = str(FIXTURES / "chatty.py")
STDIO_CHATTY = f"{sys.executable} {FIXTURES / 'stdio_chatty.py'}"
MODES = ["legacy", "auto"]  # the 2025-11-25 handshake, and 2026-07-28


class Heard:
    """What reached the client: progress reports and log messages, in order; and the questions it was asked."""

    def __init__(self, *answers: ElicitResult) -> None:
        self.progress: list[tuple[float, float | None, str | None]] = []
        self.logs: list[tuple[LoggingLevel, str | None, Any]] = []
        self.asked: list[str] = []
        self._answers = list(answers)

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.progress.append((progress, total, message))

    async def on_log(self, params: LoggingMessageNotificationParams) -> None:
        self.logs.append((params.level, params.logger, params.data))

    async def on_elicit(self, context: Any, params: ElicitRequestParams) -> ElicitResult:
        del context
        self.asked.append(params.message)
        return self._answers.pop(0)


@asynccontextmanager
async def three_agents(registry: RegistryProcess) -> AsyncGenerator[str]:
    """`a` hands on to `b`, `b` to `worker`: the worker is three agents down from a client of `a` (its URL)."""
    where = ("--registry", registry.base_url, "--no-mdns")
    async with (
        AgentProcess(f"{CHATTY}:worker", *where),
        AgentProcess(f"{CHATTY}:front", "--name", "b", "--meta", "next=worker", *where),
        AgentProcess(f"{CHATTY}:front", "--name", "a", "--meta", "next=b", *where) as a,
    ):
        yield a.url


@asynccontextmanager
async def two_agents(registry: RegistryProcess) -> AsyncGenerator[str]:
    """`a` hands on to `worker` (the URL of `a`)."""
    where = ("--registry", registry.base_url, "--no-mdns")
    async with (
        AgentProcess(f"{CHATTY}:worker", *where),
        AgentProcess(f"{CHATTY}:front", "--name", "a", "--meta", "next=worker", *where) as a,
    ):
        yield a.url


@asynccontextmanager
async def gateway_client(
    registry: RegistryProcess, mode: str, heard: Heard, log_level: LoggingLevel | None = None
) -> AsyncGenerator[Client]:
    """The SDK `Client` on `mesh gateway`'s stdio, as Claude Desktop drives it."""
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mesh", "gateway", "--registry", registry.base_url], env={**os.environ}
    )
    async with Client(
        params,
        mode=mode,  # pyright: ignore[reportArgumentType]
        logging_callback=heard.on_log,
        log_level=log_level,
        elicitation_callback=heard.on_elicit,
    ) as client:
        yield client


@asynccontextmanager
async def direct_client(
    url: str, mode: str, heard: Heard, log_level: LoggingLevel | None = None, *, answers: bool = False
) -> AsyncGenerator[Client]:
    """The SDK `Client` straight to an agent, with a client token of this test's mesh (that elicits if `answers`)."""
    token = MeshKeys.load().mint("test-client", "*", ttl=300, role="client")
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
        Client(
            streamable_http_client(url, http_client=http),
            mode=mode,  # pyright: ignore[reportArgumentType]
            logging_callback=heard.on_log,
            log_level=log_level,
            elicitation_callback=heard.on_elicit if answers else None,
        ) as client,
    ):
        yield client


async def set_level(client: Client, level: LoggingLevel) -> None:
    """`logging/setLevel`, which the SDK marks deprecated (it is gone at 2026-07-28)."""
    with pytest.warns(MCPDeprecationWarning):
        await client.set_logging_level(level)  # pyright: ignore[reportDeprecated]


def text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


@pytest.mark.parametrize("mode", MODES)
async def test_progress_and_logs_from_three_agents_down_reach_the_gateways_client(
    mesh_env: dict[str, str], mode: str
) -> None:
    heard = Heard()
    async with RegistryProcess() as registry, three_agents(registry):
        with anyio.fail_after(90):
            async with gateway_client(registry, mode, heard, log_level="info") as client:
                if mode == "legacy":
                    await set_level(client, "info")
                result = await client.call_tool("a__work", {"steps": 3}, progress_callback=heard.on_progress)
    assert result.is_error is False, text(result)
    assert text(result) == "worker did 3 steps"
    assert heard.progress == [(1.0, 3.0, "worker step 1"), (2.0, 3.0, "worker step 2"), (3.0, 3.0, "worker step 3")]
    assert heard.logs == [
        ("info", "a", "a hands on 3 steps"),
        ("info", "b", "b hands on 3 steps"),
        ("info", "worker", "worker did step 1"),
        ("info", "worker", "worker did step 2"),
        ("info", "worker", "worker did step 3"),
    ]


async def test_the_level_a_client_sets_decides_what_the_gateway_forwards(mesh_env: dict[str, str]) -> None:
    heard = Heard()
    async with RegistryProcess() as registry, two_agents(registry):
        with anyio.fail_after(90):
            async with gateway_client(registry, "legacy", heard) as client:
                assert client.server_capabilities.logging is not None
                await set_level(client, "debug")
                await client.call_tool("a__work", {"steps": 1})
                everything = list(heard.logs)
                heard.logs.clear()
                await set_level(client, "warning")
                await client.call_tool("a__work", {"steps": 1})
    assert ("debug", "worker", "worker detail of step 1") in everything
    assert ("info", "worker", "worker did step 1") in everything
    assert heard.logs == []


async def test_an_agent_answers_set_level_for_a_client_that_calls_it_directly(mesh_env: dict[str, str]) -> None:
    heard = Heard()
    async with RegistryProcess() as registry, two_agents(registry) as a:
        with anyio.fail_after(60):
            async with direct_client(a, "legacy", heard) as client:
                assert client.server_capabilities.logging is not None
                await set_level(client, "error")
                quiet = await client.call_tool("work", {"steps": 2}, progress_callback=heard.on_progress)
                assert heard.logs == []
                await set_level(client, "debug")
                await client.call_tool("work", {"steps": 1})
    assert text(quiet) == "worker did 2 steps"
    assert heard.progress == [(1.0, 2.0, "worker step 1"), (2.0, 2.0, "worker step 2")]
    assert heard.logs[0] == ("info", "a", "a hands on 1 steps")
    assert ("debug", "worker", "worker detail of step 1") in heard.logs


async def test_a_2026_client_gets_log_messages_only_when_it_opts_in(mesh_env: dict[str, str]) -> None:
    silent, chatty = Heard(), Heard()
    async with RegistryProcess() as registry, two_agents(registry) as a:
        with anyio.fail_after(60):
            async with direct_client(a, "auto", silent) as client:
                await client.call_tool("work", {"steps": 1}, progress_callback=silent.on_progress)
            async with direct_client(a, "auto", chatty, log_level="debug") as client:
                await client.call_tool("work", {"steps": 1})
    assert silent.progress == [(1.0, 1.0, "worker step 1")]
    assert silent.logs == []
    assert chatty.progress == []
    assert ("debug", "worker", "worker detail of step 1") in chatty.logs


@pytest.mark.parametrize("mode", MODES)
async def test_a_tool_asks_the_person_at_the_origin_and_gets_their_answer(mesh_env: dict[str, str], mode: str) -> None:
    heard = Heard(ElicitResult(action="decline"), ElicitResult(action="accept", content={"name": "Ada"}))
    async with RegistryProcess() as registry, two_agents(registry):
        with anyio.fail_after(90):
            async with gateway_client(registry, mode, heard) as client:
                result = await client.call_tool("a__greet", {})
    assert result.is_error is False, text(result)
    assert text(result) == "hello Ada"
    assert heard.asked == ["What is your name?", "Please, what is your name?"]


async def test_an_answer_is_used_once_and_given_again_is_refused(mesh_env: dict[str, str]) -> None:
    heard = Heard()
    async with RegistryProcess() as registry, two_agents(registry):
        with anyio.fail_after(90):
            async with gateway_client(registry, "auto", heard) as client:
                asked = await client.session.call_tool("a__greet", {}, allow_input_required=True)
                assert isinstance(asked, InputRequiredResult)
                [key] = asked.input_requests or {}
                answer: dict[str, InputResponse] = {key: ElicitResult(action="accept", content={"name": "Ada"})}
                state = asked.request_state

                async def reply() -> CallToolResult | InputRequiredResult:
                    return await client.session.call_tool(
                        "a__greet", {}, input_responses=answer, request_state=state, allow_input_required=True
                    )

                first, again = await reply(), await reply()
    assert key == f"{ASK_INPUT_KEY}/worker/1"
    assert isinstance(first, CallToolResult)
    assert text(first) == "hello Ada"
    assert isinstance(again, CallToolResult)
    assert again.is_error is True
    assert "already used" in text(again)


async def test_a_handshake_era_client_is_asked_on_its_own_connection_and_one_that_cannot_answer_gets_a_no(
    mesh_env: dict[str, str],
) -> None:
    legacy = Heard(ElicitResult(action="accept", content={"name": "Grace"}))
    modern = Heard()
    async with AgentProcess(f"{CHATTY}:worker", "--no-mdns") as worker:
        with anyio.fail_after(60):
            async with direct_client(worker.url, "legacy", legacy, answers=True) as client:
                asked = await client.call_tool("greet", {})
            async with direct_client(worker.url, "auto", modern) as client:
                refused = await client.call_tool("greet", {})
    assert text(asked) == "hello Grace"
    assert legacy.asked == ["What is your name?"]
    assert refused.is_error is True
    assert "ApprovalRequired" in text(refused)
    assert "nobody in this call chain can answer" in text(refused)
    assert modern.asked == []


async def test_an_adopted_servers_progress_and_logs_reach_the_caller(mesh_env: dict[str, str]) -> None:
    heard = Heard()
    adapter = MeshProcess(["run", "--command", STDIO_CHATTY, "--name", "chatty", "--port", "0", "--no-mdns"])
    async with adapter:
        with anyio.fail_after(60):
            async with direct_client(adapter.url, "auto", heard, log_level="info") as client:
                result = await client.call_tool("steps", {"count": 2}, progress_callback=heard.on_progress)
    assert text(result) == "2 steps done"
    assert heard.progress == [(1.0, 2.0, "step 1"), (2.0, 2.0, "step 2")]
    assert [(level, data) for level, _logger, data in heard.logs] == [("info", "did step 1"), ("info", "did step 2")]
