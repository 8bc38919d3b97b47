"""An adopted server's own requests to the client (elicitation, sampling) reach whoever called it (issue 26).

The server is a plain SDK server on stdio (`fixtures/stdio_asking.py`), adopted by `mesh run --command`;
its callers are the SDK `Client` on `mesh gateway` (the call held at the adapter between the rounds of a
2026-07-28 chain, or asked on the gateway's connection for a 2025-11-25 client), and a script that
nobody can answer for.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp_types import (
    CallToolResult,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequestParams,
    ElicitResult,
    InputRequiredResult,
    InputResponse,
    TextContent,
)

from mesh.runtime.node import MeshNode
from mesh.testing import MeshProcess, RegistryProcess
from mesh.wire import ASK_INPUT_KEY

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ASKING = f"{sys.executable} {FIXTURES / 'stdio_asking.py'}"
MODES = ["legacy", "auto"]  # the 2025-11-25 handshake, and 2026-07-28


class Person:
    """The client's side: the questions it was asked and the prompts its model was given, and its answers."""

    def __init__(self, *answers: ElicitResult) -> None:
        self.asked: list[str] = []
        self.sampled: list[str] = []
        self._answers = list(answers)

    async def on_elicit(self, context: Any, params: ElicitRequestParams) -> ElicitResult:
        del context
        self.asked.append(params.message)
        return self._answers.pop(0)

    async def on_sample(self, context: Any, params: CreateMessageRequestParams) -> CreateMessageResult:
        del context
        [message] = params.messages
        assert isinstance(message.content, TextContent)
        self.sampled.append(message.content.text)
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text="it is short"), model="test-model"
        )


@asynccontextmanager
async def adopted_asking(registry: RegistryProcess) -> AsyncGenerator[MeshProcess]:
    """The asking server on the mesh as `asking`, registered with `registry`."""
    args = ["run", "--command", ASKING, "--name", "asking", "--port", "0", "--no-mdns"]
    async with MeshProcess([*args, "--registry", registry.base_url, "--meta", "owner=tests"]) as adapter:
        yield adapter


@asynccontextmanager
async def gateway_client(registry: RegistryProcess, mode: str, person: Person) -> AsyncGenerator[Client]:
    """The SDK `Client` on `mesh gateway`'s stdio, answering questions and sampling as Claude Desktop would."""
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mesh", "gateway", "--registry", registry.base_url], env={**os.environ}
    )
    async with Client(
        params,
        mode=mode,  # pyright: ignore[reportArgumentType]
        elicitation_callback=person.on_elicit,
        sampling_callback=person.on_sample,
    ) as client:
        yield client


def text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


@pytest.mark.parametrize("mode", MODES)
async def test_an_adopted_servers_question_and_sampling_reach_the_gateways_client(
    mesh_env: dict[str, str], mode: str
) -> None:
    person = Person(ElicitResult(action="accept", content={"name": "Ada"}))
    async with RegistryProcess() as registry, adopted_asking(registry):
        with anyio.fail_after(90):
            async with gateway_client(registry, mode, person) as client:
                greeted = await client.call_tool("asking__greet", {})
                summary = await client.call_tool("asking__summarize", {"text": "a long story"})
    assert greeted.is_error is False, text(greeted)
    assert text(greeted) == "hello Ada"
    assert person.asked == ["What is your name?"]
    assert text(summary) == "summary by test-model: it is short"
    assert person.sampled == ["Summarize: a long story"]


async def test_a_held_calls_answer_is_used_once(mesh_env: dict[str, str]) -> None:
    person = Person()
    async with RegistryProcess() as registry, adopted_asking(registry):
        with anyio.fail_after(90):
            async with gateway_client(registry, "auto", person) as client:
                asked = await client.session.call_tool("asking__greet", {}, allow_input_required=True)
                assert isinstance(asked, InputRequiredResult)
                [(key, question)] = (asked.input_requests or {}).items()
                answer: dict[str, InputResponse] = {key: ElicitResult(action="accept", content={"name": "Ada"})}

                async def reply() -> CallToolResult | InputRequiredResult:
                    return await client.session.call_tool(
                        "asking__greet",
                        {},
                        input_responses=answer,
                        request_state=asked.request_state,
                        allow_input_required=True,
                    )

                first, again = await reply(), await reply()
    assert key.startswith(f"{ASK_INPUT_KEY}/asking/")
    assert question.method == "elicitation/create"
    assert isinstance(first, CallToolResult)
    assert text(first) == "hello Ada"
    assert isinstance(again, CallToolResult)
    assert again.is_error is True
    assert "already used" in text(again)


async def test_a_caller_nobody_answers_for_leaves_the_server_its_refusal(mesh_env: dict[str, str]) -> None:
    async with (
        RegistryProcess() as registry,
        adopted_asking(registry),
        MeshNode("script", registry=registry.base_url) as script,
    ):
        await script.settle()
        with anyio.fail_after(60):
            greeted = await script.call("asking", "greet", {})
            summary = await script.call("asking", "summarize", {"text": "a long story"})
    assert greeted == "refused: elicitation/create not relayed by the mesh: nobody in this call chain can answer"
    assert summary == "refused: sampling/createMessage not relayed by the mesh: nobody in this call chain can answer"
