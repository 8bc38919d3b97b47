"""`QuestionRelay`: an adopted server's requests go up the chain, the call held until its caller answers."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import (
    CallToolResult,
    CreateMessageRequestParams,
    ElicitRequestFormParams,
    ElicitResult,
    ErrorData,
    SamplingMessage,
    TextContent,
)

from mesh.errors import PeerUnavailable
from mesh.peers.notices import NoticeSink
from mesh.peers.questions import sampling_var
from mesh.peers.rounds import InputNeeded, Relay, interactive_var, relay_var
from mesh.runtime.adopted_questions import QuestionRelay
from mesh.runtime.upstream import CallerQuestions

pytestmark = pytest.mark.anyio

FORM = ElicitRequestFormParams(
    message="What is your name?", requested_schema={"type": "object", "properties": {"name": {"type": "string"}}}
)
PROMPT = CreateMessageRequestParams(
    messages=[SamplingMessage(role="user", content=TextContent(type="text", text="Summarize"))], max_tokens=10
)


class Server:
    """A fake of the adopted server's side of a call: it asks, then answers with what it got."""

    def __init__(self) -> None:
        self.got: list[ElicitResult | ErrorData] = []
        self.started = anyio.Event()
        self.stopped = anyio.Event()
        self.release = anyio.Event()

    async def greet(self, asks: CallerQuestions, notices: NoticeSink | None) -> CallToolResult:
        del notices
        answer = await asks.elicit(FORM)
        self.got.append(answer)
        said = answer.message if isinstance(answer, ErrorData) else f"{answer.action} {answer.content}"
        return CallToolResult(content=[TextContent(type="text", text=said)])

    async def sample(self, asks: CallerQuestions, notices: NoticeSink | None) -> CallToolResult:
        del notices
        answer = await asks.sample(PROMPT)
        said = answer.message if isinstance(answer, ErrorData) else str(answer.model)
        return CallToolResult(content=[TextContent(type="text", text=said)])

    async def work(self, asks: CallerQuestions, notices: NoticeSink | None) -> CallToolResult:
        del asks, notices
        self.started.set()
        try:
            await self.release.wait()
        finally:
            self.stopped.set()
        return CallToolResult(content=[TextContent(type="text", text="done")])

    async def fail(self, asks: CallerQuestions, notices: NoticeSink | None) -> CallToolResult:
        del asks, notices
        raise PeerUnavailable("the child died")


@pytest.fixture
async def relay() -> AsyncGenerator[QuestionRelay]:
    async with QuestionRelay("asking", ttl=30) as relay:
        yield relay


@contextmanager
def origin(*, elicits: bool = True, samples: bool = False, relayed: Relay | None = None) -> Generator[None]:
    """What the guard sets for a request: whether the origin answers questions, and this round's answers."""
    tokens = (interactive_var.set(elicits), sampling_var.set(samples), relay_var.set(relayed))
    try:
        yield
    finally:
        relay_var.reset(tokens[2])
        sampling_var.reset(tokens[1])
        interactive_var.reset(tokens[0])


def answered(need: InputNeeded, answer: dict[str, Any]) -> Relay:
    """The next round of `need`, carrying `answer` to its one question, as the guard hands it down."""
    [key] = need.input_requests
    return Relay(need.agent, need.tool, need.request_state, {key: answer})


def text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


async def test_a_question_goes_up_and_its_answer_resumes_the_held_call(relay: QuestionRelay) -> None:
    server = Server()
    with anyio.fail_after(5):
        with origin(), pytest.raises(InputNeeded) as asked:
            await relay.run("greet", server.greet, caller="gateway")
        need = asked.value
        held = relay.held
        with origin(relayed=answered(need, {"action": "accept", "content": {"name": "Ada"}})):
            result = await relay.run("greet", server.greet, caller="gateway")
    [(key, question)] = need.input_requests.items()
    assert (need.agent, need.tool) == ("asking", "greet")
    assert key.startswith("agentplex/ask/asking/")
    assert question["method"] == "elicitation/create"
    assert question["params"]["message"] == "What is your name?"
    assert held == 1
    assert text(result) == "accept {'name': 'Ada'}"
    assert relay.held == 0


async def test_sampling_goes_up_only_when_the_origin_samples(relay: QuestionRelay) -> None:
    server = Server()
    with anyio.fail_after(5):
        with origin(elicits=True, samples=False):
            refused = await relay.run("sample", server.sample)
        with origin(elicits=False, samples=True), pytest.raises(InputNeeded) as asked:
            await relay.run("sample", server.sample)
        answer = {"role": "assistant", "content": {"type": "text", "text": "short"}, "model": "m-1"}
        with origin(elicits=False, samples=True, relayed=answered(asked.value, answer)):
            sampled = await relay.run("sample", server.sample)
    assert "no client at the origin of this call chain declared sampling" in text(refused)
    [question] = asked.value.input_requests.values()
    assert question["method"] == "sampling/createMessage"
    assert text(sampled) == "m-1"


async def test_a_call_whose_origin_cannot_answer_gives_the_server_an_error(relay: QuestionRelay) -> None:
    server = Server()
    with anyio.fail_after(5), origin(elicits=False):
        result = await relay.run("greet", server.greet)
    assert text(result) == "elicitation/create not relayed by the mesh: nobody in this call chain can answer"
    assert relay.held == 0


async def test_only_the_caller_that_was_asked_may_answer_and_a_stranger_cancels_nothing_else(
    relay: QuestionRelay,
) -> None:
    server = Server()
    with anyio.fail_after(5):
        with origin(), pytest.raises(InputNeeded) as asked:
            await relay.run("greet", server.greet, caller="gateway")
        stolen = answered(asked.value, {"action": "accept", "content": {"name": "Mallory"}})
        with origin(relayed=stolen), pytest.raises(ToolError, match="belongs to another caller's call"):
            await relay.run("greet", server.greet, caller="mallory")
        with origin(relayed=stolen), pytest.raises(ToolError, match="no call waits for this answer"):
            await relay.run("greet", server.greet, caller="gateway")
    assert all(not isinstance(got, ElicitResult) for got in server.got)  # Mallory's answer never reached it


async def test_an_unanswered_question_cancels_its_call_after_the_ttl() -> None:
    server = Server()
    async with QuestionRelay("asking", ttl=0.05) as relay:
        with anyio.fail_after(5):
            with origin(), pytest.raises(InputNeeded) as asked:
                await relay.run("greet", server.greet)
            while relay.held:  # bounded by fail_after: the TTL lapses
                await anyio.sleep(0.01)
            late = answered(asked.value, {"action": "accept", "content": {"name": "Ada"}})
            with origin(relayed=late), pytest.raises(ToolError, match="no call waits for this answer any more"):
                await relay.run("greet", server.greet)


async def test_a_caller_that_goes_away_stops_the_call(relay: QuestionRelay) -> None:
    server = Server()
    with anyio.fail_after(5), origin():
        async with anyio.create_task_group() as tg:
            tg.start_soon(relay.run, "work", server.work)
            await server.started.wait()
            tg.cancel_scope.cancel()
        await server.stopped.wait()
    assert not server.release.is_set()


async def test_a_call_that_asks_nothing_returns_or_fails_as_it_would_unheld(relay: QuestionRelay) -> None:
    server = Server()
    server.release.set()
    with anyio.fail_after(5), origin():
        done = await relay.run("work", server.work)
        with pytest.raises(PeerUnavailable, match="the child died"):
            await relay.run("fail", server.fail)
    assert text(done) == "done"
    assert relay.held == 0
