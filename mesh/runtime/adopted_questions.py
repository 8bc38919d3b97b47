"""An adopted server's own requests to the client during a call (elicitation, sampling), relayed to its caller.

Owns `QuestionRelay`, which decides per call where such a request goes: to a handshake-era
(2025-11-25) caller on its own connection, unchanged (`DirectQuestions`); on a 2026-07-28 chain
whose origin can answer, up the chain as an `input_required` round while the server's call is held
open until the caller's next round brings the answer (`_Held`); anywhere else back to the server as
an error saying why nobody can answer. A held call's round state is the guard's (signed, used once,
at the instance that asked); it is resumed only by the caller that was asked, and a question nobody
answers within the approval TTL cancels its call. Which call a request belongs to is `Upstream`'s.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, Final, Self, TypeVar, final

import anyio
from anyio import AsyncContextManagerMixin
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    CallToolResult,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    CreateMessageResultWithTools,
    ElicitRequest,
    ElicitRequestParams,
    ElicitResult,
    ErrorData,
    LoggingLevel,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ValidationError

from mesh.peers.notices import NoticeSink
from mesh.peers.person import person_var
from mesh.peers.questions import sampling_var
from mesh.peers.rounds import InputNeeded, Relay, interactive_var, relay_var
from mesh.runtime.approval_gate import APPROVAL_TTL
from mesh.runtime.upstream import CallerQuestions
from mesh.wire import ASK_INPUT_KEY

__all__ = ["DirectQuestions", "QuestionRelay"]

log = logging.getLogger(__name__)

_STATE_PREFIX: Final = "held1:"
_ELICIT: Final = "elicitation/create"
_SAMPLE: Final = "sampling/createMessage"
_Result = TypeVar("_Result", bound=BaseModel)

Forward = Callable[[CallerQuestions, NoticeSink | None], Awaitable[CallToolResult]]
"""Makes the call to the server, with where its requests and notices go."""


@final
class QuestionRelay(AsyncContextManagerMixin):
    """Runs each call to the adopted server `agent` so that what the server asks reaches the call's caller.

    While entered it owns the calls held between rounds; leaving cancels them.
    """

    def __init__(self, agent: str, *, ttl: float = APPROVAL_TTL) -> None:
        self.agent = agent
        self.ttl = ttl
        """Seconds a held call waits for its caller's answer before it is cancelled."""
        self._held: dict[str, _Held] = {}
        self._tasks: TaskGroup | None = None

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        if self._tasks is not None:
            raise RuntimeError("a QuestionRelay is entered once")
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            try:
                yield self
            finally:
                for held in list(self._held.values()):
                    held.cancel()
                self._held.clear()
                tasks.cancel_scope.cancel()

    @property
    def held(self) -> int:
        """How many calls wait for their caller's answer now."""
        return len(self._held)

    async def run(
        self,
        tool: str,
        forward: Forward,
        *,
        request: ServerRequestContext[Any, Any] | None = None,
        caller: str | None = None,
        notices: NoticeSink | None = None,
    ) -> CallToolResult:
        """Make the call for `caller` (or resume the held one this round answers); `InputNeeded` asks upstream.

        `request` is the request being served (None outside one): a handshake-era caller is asked on it.
        A held call is bound to `caller` and to the person the call runs for (`person_var`).
        """
        person = person_var.get()
        caller = f"{caller} for {person.name}" if person is not None else caller
        relay = relay_var.get()
        held_id = _held_id(relay, self.agent, tool)
        if relay is not None and held_id is not None:
            return await self._resume(relay, held_id, tool, caller, notices)
        if request is not None and _takes_requests(request):
            return await forward(DirectQuestions(request), notices)
        elicits, samples = interactive_var.get(), sampling_var.get()
        if not elicits and not samples:
            return await forward(_Refused("nobody in this call chain can answer"), notices)
        held = _Held(self.agent, tool, caller, elicits=elicits, samples=samples, ttl=self.ttl, expired=self._expired)
        held.notices.sink = notices
        if self._tasks is None:
            raise RuntimeError("QuestionRelay used outside `async with`")
        self._tasks.start_soon(_run, held, forward)
        return await self._follow(held)

    async def _resume(
        self, relay: Relay, held_id: str, tool: str, caller: str | None, notices: NoticeSink | None
    ) -> CallToolResult:
        held = self._held.pop(held_id, None)
        if held is None or held.tool != tool or held.asked is None:
            raise ToolError(
                f"{self.agent}.{tool}: no call waits for this answer any more (nobody answered within "
                f"{self.ttl:g}s, or it was answered already); call again"
            )
        if held.caller != caller:
            held.cancel()
            raise ToolError(f"{self.agent}.{tool}: this answer belongs to another caller's call, which is cancelled")
        answer = relay.responses.get(held.asked.key)
        if not isinstance(answer, dict):
            self._held[held.id] = held  # the round came back without an answer: ask again
            raise held.question(self.agent)
        held.notices.sink = notices
        held.answer(answer)  # pyright: ignore[reportUnknownArgumentType]
        return await self._follow(held)

    async def _follow(self, held: _Held) -> CallToolResult:
        """Wait for the held call's next event: its result, or a question to send up (holding the call)."""
        try:
            event = await held.next_event()
        except anyio.get_cancelled_exc_class():
            held.cancel()  # the caller went away, or its time ran out, while the call ran
            raise
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise ToolError(f"{self.agent}.{held.tool}: the call was cancelled") from None
        finally:
            held.notices.sink = None
        if isinstance(event, _Finished):
            held.close()
            if event.error is not None:
                raise event.error
            assert event.result is not None
            return event.result
        held.asked = event
        self._held[held.id] = held
        raise held.question(self.agent)

    def _expired(self, held: _Held) -> None:
        if self._held.get(held.id) is held:
            del self._held[held.id]
        held.cancel()


@final
class DirectQuestions:
    """Asks a handshake-era caller on its own connection, as the server would have asked it directly."""

    def __init__(self, request: ServerRequestContext[Any, Any]) -> None:
        self._request = request

    async def elicit(self, params: ElicitRequestParams) -> ElicitResult | ErrorData:
        """Relay `elicitation/create` when the caller's client declared elicitation."""
        capabilities = self._request.session.client_capabilities
        if capabilities is None or capabilities.elicitation is None:
            return _refusal(_ELICIT, "the caller's client declared no elicitation capability")
        return await self._send(ElicitRequest(params=params), ElicitResult)

    async def sample(
        self, params: CreateMessageRequestParams
    ) -> CreateMessageResult | CreateMessageResultWithTools | ErrorData:
        """Relay `sampling/createMessage` when the caller's client declared sampling."""
        capabilities = self._request.session.client_capabilities
        if capabilities is None or capabilities.sampling is None:
            return _refusal(_SAMPLE, "the caller's client declared no sampling capability")
        request = CreateMessageRequest(params=params)
        if params.tools or params.tool_choice:
            return await self._send(request, CreateMessageResultWithTools)
        return await self._send(request, CreateMessageResult)

    async def _send(self, request: ElicitRequest | CreateMessageRequest, result: type[_Result]) -> _Result | ErrorData:
        related = ServerMessageMetadata(related_request_id=self._request.request_id)
        try:
            return await self._request.session.send_request(request, result, metadata=related)
        except MCPError as exc:  # the client's own refusal (or no back-channel), passed on as it said it
            return exc.error
        except ValidationError:
            return ErrorData(code=INTERNAL_ERROR, message=f"the caller's answer to {request.method} is malformed")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return ErrorData(code=INTERNAL_ERROR, message=f"the caller hung up before answering {request.method}")


# -- private -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Asked:
    """A request of the server's waiting for the caller's answer, under its key in the input-required round."""

    key: str
    request: dict[str, Any]
    reply: MemoryObjectSendStream[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class _Finished:
    """How the held call ended."""

    result: CallToolResult | None = None
    error: Exception | None = None


@final
class _CurrentRound:
    """A held call's `NoticeSink`: the caller's channel in the round being served now, none between rounds."""

    __slots__ = ("sink",)

    def __init__(self) -> None:
        self.sink: NoticeSink | None = None

    @property
    def progress_wanted(self) -> bool:
        """True when the round being served asked for progress."""
        return self.sink is not None and self.sink.progress_wanted

    @property
    def log_level(self) -> LoggingLevel | None:
        """The level the round being served takes log messages at."""
        return self.sink.log_level if self.sink is not None else None

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        """Report progress to the round being served, if any."""
        if self.sink is not None:
            await self.sink.progress(progress, total, message)

    async def log(self, level: LoggingLevel, data: Any, logger: str | None) -> None:
        """Send a log message to the round being served, if any."""
        if self.sink is not None:
            await self.sink.log(level, data, logger)


@final
class _Held:
    """One call running in the background, the `CallerQuestions` of its server, and the question it waits on."""

    def __init__(
        self,
        agent: str,
        tool: str,
        caller: str | None,
        *,
        elicits: bool,
        samples: bool,
        ttl: float,
        expired: Callable[[_Held], None],
    ) -> None:
        self.id = secrets.token_urlsafe(12)
        self.agent = agent
        self.tool = tool
        self.caller = caller
        self.notices = _CurrentRound()
        self.asked: _Asked | None = None
        self.scope = anyio.CancelScope()
        self._elicits = elicits
        self._samples = samples
        self._ttl = ttl
        self._expired = expired
        self._count = 0
        self.events_in: MemoryObjectSendStream[_Asked | _Finished]
        self._events: MemoryObjectReceiveStream[_Asked | _Finished]
        self.events_in, self._events = anyio.create_memory_object_stream[_Asked | _Finished](1)

    async def elicit(self, params: ElicitRequestParams) -> ElicitResult | ErrorData:
        """Send the server's `elicitation/create` up the chain and wait for the answer."""
        if not self._elicits:
            return _refusal(_ELICIT, "no client at the origin of this call chain can answer elicitations")
        return await self._ask(ElicitRequest(params=params), ElicitResult)

    async def sample(
        self, params: CreateMessageRequestParams
    ) -> CreateMessageResult | CreateMessageResultWithTools | ErrorData:
        """Send the server's `sampling/createMessage` up the chain and wait for the answer."""
        if not self._samples:
            return _refusal(_SAMPLE, "no client at the origin of this call chain declared sampling")
        request = CreateMessageRequest(params=params)
        if params.tools or params.tool_choice:
            return await self._ask(request, CreateMessageResultWithTools)
        return await self._ask(request, CreateMessageResult)

    def question(self, agent: str) -> InputNeeded:
        """The question waited on, as the error that carries it up to a person (or a client that samples)."""
        assert self.asked is not None
        return InputNeeded(agent, self.tool, {self.asked.key: self.asked.request}, _STATE_PREFIX + self.id)

    async def next_event(self) -> _Asked | _Finished:
        """The call's next question, or its end."""
        return await self._events.receive()

    def answer(self, answer: dict[str, Any]) -> None:
        """Give the question waited on its answer (lost if the server stopped waiting meanwhile)."""
        asked, self.asked = self.asked, None
        if asked is not None:
            try:
                asked.reply.send_nowait(answer)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.WouldBlock):
                log.info("%s.%s: the server stopped waiting for the answer", self.agent, self.tool)

    def cancel(self) -> None:
        """Stop the call: its server is told (`notifications/cancelled`) and its question gets no answer."""
        if self.asked is not None:
            self.asked.reply.close()
        self.close()  # nobody waits for what the call does from now on
        self.scope.cancel()

    def close(self) -> None:
        """Let go of the channel the call's events come on (it has ended, or nobody waits for them)."""
        self._events.close()

    async def _ask(self, request: ElicitRequest | CreateMessageRequest, result: type[_Result]) -> _Result | ErrorData:
        self._count += 1
        key = f"{ASK_INPUT_KEY}/{self.agent}/{self.id}/{self._count}"
        wire = request.model_dump(mode="json", by_alias=True, exclude_none=True)
        reply_in, replies = anyio.create_memory_object_stream[dict[str, Any]](1)
        answer: dict[str, Any] | None = None
        with reply_in, replies, anyio.move_on_after(self._ttl):
            try:
                await self.events_in.send(_Asked(key, wire, reply_in))
                answer = await replies.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):  # cancelled
                return _refusal(request.method, "the call was cancelled before its caller answered")
        if answer is None:
            self._expired(self)
            return _refusal(request.method, f"nobody answered within {self._ttl:g}s")
        try:
            return result.model_validate(answer, by_name=False)
        except ValidationError:
            return ErrorData(code=INVALID_REQUEST, message=f"the answer relayed to {request.method} is malformed")


@final
class _Refused:
    """The `CallerQuestions` of a call whose caller cannot be asked: every request gets an error saying why."""

    def __init__(self, why: str) -> None:
        self._why = why

    async def elicit(self, params: ElicitRequestParams) -> ErrorData:
        """An error: nobody can answer."""
        del params
        return _refusal(_ELICIT, self._why)

    async def sample(self, params: CreateMessageRequestParams) -> ErrorData:
        """An error: nobody can answer."""
        del params
        return _refusal(_SAMPLE, self._why)


async def _run(held: _Held, forward: Forward) -> None:
    """The task of a held call: make it, and hand its end to whichever round waits for it."""
    with held.events_in, held.scope:
        try:
            outcome = _Finished(result=await forward(held, held.notices))
        except Exception as exc:  # a task root: the failure is the answer of the round that waits for it
            outcome = _Finished(error=exc)
        with suppress(anyio.BrokenResourceError):  # cancelled meanwhile: nobody waits for the end
            await held.events_in.send(outcome)


def _held_id(relay: Relay | None, agent: str, tool: str) -> str | None:
    """The held call this round answers, when the relay is for this agent's `tool` and carries one."""
    if relay is None or (relay.agent, relay.tool) != (agent, tool) or relay.state is None:
        return None
    return relay.state.removeprefix(_STATE_PREFIX) if relay.state.startswith(_STATE_PREFIX) else None


def _takes_requests(request: ServerRequestContext[Any, Any]) -> bool:
    """True for a handshake-era caller on a connection that can carry a server request back to it."""
    return request.protocol_version not in MODERN_PROTOCOL_VERSIONS and request.session.can_send_request


def _refusal(method: str, why: str) -> ErrorData:
    return ErrorData(code=INVALID_REQUEST, message=f"{method} not relayed by the mesh: {why}")
