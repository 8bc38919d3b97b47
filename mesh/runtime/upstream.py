"""`Upstream`: the one long-lived SDK `Client` session to an adopted MCP server, a stdio child or a URL.

Owns the child's life (started on entry, restarted with backoff when it dies, stopped on exit:
the SDK's stdio transport closes stdin, then kills the process tree), the current tool listing
(listed again on `notifications/tools/list_changed`), the progress and log messages a call's
caller asked for, the server's own requests to the client during a call (elicitation, sampling: handed
to that call's `CallerQuestions`), and turning the server's failures into `PeerError`s and one-line
`ConfigError`s. Serving the listing to the mesh is `mesh.runtime.adapter`'s.
"""

from __future__ import annotations

import logging
import math
import shlex
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol, Self, TypeVar, final

import anyio
import httpx2
from anyio import AsyncContextManagerMixin
from anyio.abc import TaskStatus
from mcp import Client, MCPError
from mcp.client import IncomingMessage, Transport
from mcp.client.context import ClientRequestContext
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp_types import (
    INVALID_REQUEST,
    CallToolResult,
    CreateMessageRequestParams,
    CreateMessageResult,
    CreateMessageResultWithTools,
    ElicitRequestParams,
    ElicitResult,
    ErrorData,
    LoggingMessageNotification,
    PromptListChangedNotification,
    ResourceListChangedNotification,
    ResourceUpdatedNotification,
    Tool,
    ToolListChangedNotification,
)

from mesh.errors import ConfigError, PeerError, PeerUnavailable
from mesh.peers.failures import first_leaf, translate
from mesh.peers.notices import NoticeSink
from mesh.runtime.upstream_transport import (
    CALL_TIMEOUT,
    NO_PARSE_TRACEBACK,
    http_streams,
    refusal_reason,
    watched,
    why_not_started,
)
from mesh.text import one_line

__all__ = ["CallerQuestions", "ListKind", "Upstream", "UpstreamSpec"]

log = logging.getLogger("mesh.upstream")
_T = TypeVar("_T")

START_TIMEOUT: Final = 30.0
"""Seconds a server has to complete MCP initialize and list its tools."""
FIRST_BACKOFF: Final = 0.5
MAX_BACKOFF: Final = 10.0

ListKind = Literal["resources", "prompts"]
"""Which of the server's listings besides tools changed (`notifications/{kind}/list_changed`)."""


class CallerQuestions(Protocol):
    """Where the server's own requests to the client go while a call runs: to that call's caller, or refused."""

    async def elicit(self, params: ElicitRequestParams) -> ElicitResult | ErrorData:
        """The caller's answer to an `elicitation/create`, or an error saying why there is none."""
        ...

    async def sample(
        self, params: CreateMessageRequestParams
    ) -> CreateMessageResult | CreateMessageResultWithTools | ErrorData:
        """The caller's answer to a `sampling/createMessage`, or an error saying why there is none."""
        ...


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    """Where the adopted server is: `command` (argv of a stdio server) or `url` (Streamable HTTP), not both."""

    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict[str, str])
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict[str, str])

    def __post_init__(self) -> None:
        if bool(self.command) == bool(self.url):
            raise ConfigError("give the server as --command or --url, one of them")

    @classmethod
    def parse(cls, *, command: str | None, url: str | None, env: Mapping[str, str], headers: Mapping[str, str]) -> Self:
        """From `mesh run --command "CMD ARGS"` or `--url URL`, with their `--env` or `--header` pairs."""
        if command is not None:
            try:
                argv = tuple(shlex.split(command))
            except ValueError as exc:
                raise ConfigError(f"--command cannot be split into words: {exc}") from None
            if not argv:
                raise ConfigError("--command is empty")
            if headers:
                raise ConfigError("--header goes with --url, not --command (use --env for a stdio server)")
            return cls(command=argv, env=dict(env))
        if url is not None:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"--url must be an http:// or https:// URL, not {url!r}")
            if env:
                raise ConfigError("--env goes with --command, not --url (use --header for a remote server)")
            return cls(url=url, headers=dict(headers))
        raise ConfigError("give the server as --command or --url")

    @property
    def transport(self) -> str:
        """`stdio` or `http`."""
        return "stdio" if self.command else "http"

    def describe(self) -> str:
        """The server for logs and errors, with every `--env` and `--header` value masked."""
        if self.url is not None:
            masked = "".join(f" ({name}: ***)" for name in self.headers)
            return f"{self.url}{masked}"
        env = " ".join(f"{name}=***" for name in self.env)
        return f"{shlex.join(self.command)}" + (f" (env: {env})" if env else "")


@final
class Upstream(AsyncContextManagerMixin):
    """The adopted server while entered: `tools` is its listing, `call` forwards, `relisted` waits for a change.

    Entering starts the server and waits for its tools (a `ConfigError` in one line when it cannot
    start); leaving stops it. A server that dies is started again with backoff, and calls made
    meanwhile raise `PeerUnavailable` at once.
    """

    def __init__(self, spec: UpstreamSpec) -> None:
        self.spec = spec
        logging.getLogger("mcp.client.stdio").addFilter(NO_PARSE_TRACEBACK)
        self.tools: list[Tool] = []
        self.server_name: str | None = None
        self.restarts = 0
        self._client: Client | None = None
        self._refused: int | None = None  # the last 4xx/5xx status an HTTP server answered (the SDK drops it)
        self._lost = anyio.Event()
        self._stale = anyio.Event()
        self._relisted = anyio.Event()
        self._entered = False
        self._calls: list[_Call] = []
        self.on_resource_updated: Callable[[str], Awaitable[object]] | None = None
        """Told the URI of each `notifications/resources/updated` the server sends (the adapter's subscriptions)."""
        self.on_list_changed: Callable[[ListKind], Awaitable[object]] | None = None
        """Told each time the server says its resource or prompt list changed."""

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        if self._entered:
            raise RuntimeError("Upstream is single use; make a new one")
        self._entered = True
        async with anyio.create_task_group() as tg:
            await tg.start(self._keep_connected)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()

    async def relisted(self) -> None:
        """Return the next time the server's tool list changed (or it restarted)."""
        await self._relisted.wait()

    async def call(
        self,
        tool: str,
        arguments: Mapping[str, Any],
        *,
        notices: NoticeSink | None = None,
        asks: CallerQuestions | None = None,
    ) -> CallToolResult:
        """Forward one `tools/call`; a server that is gone or goes mid-call raises `PeerUnavailable`.

        Its progress goes to `notices` when the caller asked for it. Its log messages go there, and
        its elicitation and sampling requests to `asks`, while this is the only call in flight: none
        of them names the request it belongs to, so with several calls in flight a log message is
        kept from every caller and a request is refused, rather than either reaching the wrong one.
        """
        client = self._client
        if client is None:
            raise PeerUnavailable(f"{self._what} is restarting; try again shortly", tool=tool)
        progress = notices.progress if notices is not None and notices.progress_wanted else None
        call = _Call(notices, asks)
        self._calls.append(call)
        try:
            with translate(self._what, tool, None):
                return await client.call_tool(
                    tool, dict(arguments), read_timeout_seconds=CALL_TIMEOUT, progress_callback=progress
                )
        except PeerUnavailable:
            self._lost.set()  # a URL server gives no end-of-stream: reconnect on the first failure
            raise
        except PeerError:
            if self._lost.is_set() or self._client is not client:
                raise PeerUnavailable(f"lost {self._what} mid-call; it is being restarted", tool=tool) from None
            raise
        finally:
            self._calls.remove(call)

    async def forward(self, what: str, send: Callable[[Client], Awaitable[_T]]) -> _T:
        """Send one other request (`what` names it in errors) on the live session, failing as `call` fails."""
        client = self._client
        if client is None:
            raise PeerUnavailable(f"{self._what} is restarting; try again shortly", tool=what)
        try:
            with translate(self._what, what, None):
                return await send(client)
        except PeerUnavailable:
            self._lost.set()
            raise
        except PeerError:
            if self._lost.is_set() or self._client is not client:
                raise PeerUnavailable(f"lost {self._what} mid-request; it is being restarted", tool=what) from None
            raise

    @property
    def _what(self) -> str:
        return f"the {self.spec.transport} server {self.server_name or self.spec.describe()}"

    async def _keep_connected(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        delay = FIRST_BACKOFF
        first = True
        while True:
            failure = await self._connect_once(task_status if first else None)
            if first and failure is not None:
                raise ConfigError(f"{self.spec.describe()}: {failure}")
            if failure is None:  # it ran, then went away: a fresh start gets a fresh backoff
                delay = FIRST_BACKOFF
                failure = "connection lost"
            first = False
            log.warning("%s: %s; starting it again in %.1fs", self.spec.describe(), failure, delay)
            await anyio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    async def _connect_once(self, task_status: TaskStatus[None] | None) -> str | None:
        """Run one session until it is lost; the reason it never got going, or None after it ran."""
        self._lost = anyio.Event()
        ran = False
        try:
            with anyio.CancelScope(deadline=anyio.current_time() + START_TIMEOUT) as scope:
                async with Client(
                    self._transport(),
                    mode="legacy",
                    message_handler=self._on_message,
                    elicitation_callback=self._on_elicitation,
                    sampling_callback=self._on_sampling,
                ) as client:
                    await self._list(client)
                    scope.deadline = math.inf
                    self.server_name = client.server_info.name if client.server_info else None
                    self._client, ran = client, True
                    if task_status is not None:
                        task_status.started()
                    else:
                        self.restarts += 1
                        log.warning("%s is running again (restart %d)", self.spec.describe(), self.restarts)
                        self._announce_change()
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._relist_when_stale, client)
                        await self._lost.wait()
                        tg.cancel_scope.cancel()
            if scope.cancelled_caught:
                return f"did not complete MCP initialize within {START_TIMEOUT:g}s"
        except Exception as exc:  # task root of one session: every failure is a reason to start again
            leaf = first_leaf(exc) if isinstance(exc, ExceptionGroup) else exc
            if ran:
                return None
            if isinstance(leaf, MCPError) and self._refused is not None:
                return refusal_reason(self._refused)
            return why_not_started(leaf)
        finally:
            self._client = None
        return None

    def _transport(self) -> Transport:
        if self.spec.url is not None:
            return watched(http_streams(self.spec.url, self.spec.headers, self._note_status), self._lost, self._garbage)
        command, *args = self.spec.command
        params = StdioServerParameters(command=command, args=args, env=dict(self.spec.env) or None)
        return watched(stdio_client(params), self._lost, self._garbage)

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, ToolListChangedNotification):
            self._stale.set()
        elif isinstance(message, ResourceUpdatedNotification):
            if self.on_resource_updated is not None:
                await self.on_resource_updated(str(message.params.uri))
        elif isinstance(message, ResourceListChangedNotification | PromptListChangedNotification):
            if self.on_list_changed is not None:
                kind: ListKind = "resources" if isinstance(message, ResourceListChangedNotification) else "prompts"
                await self.on_list_changed(kind)
        elif isinstance(message, LoggingMessageNotification):
            calls = self._calls
            if len(calls) == 1 and calls[0].notices is not None:
                entry = message.params
                await calls[0].notices.log(entry.level, entry.data, entry.logger or self.server_name)
            else:
                log.debug("%s: a log message with %d calls in flight was not relayed", self.spec.describe(), len(calls))

    async def _on_elicitation(
        self, context: ClientRequestContext, params: ElicitRequestParams
    ) -> ElicitResult | ErrorData:
        del context
        asks = self._asked_by_one_call("elicitation/create")
        return asks if isinstance(asks, ErrorData) else await asks.elicit(params)

    async def _on_sampling(
        self, context: ClientRequestContext, params: CreateMessageRequestParams
    ) -> CreateMessageResult | CreateMessageResultWithTools | ErrorData:
        del context
        asks = self._asked_by_one_call("sampling/createMessage")
        return asks if isinstance(asks, ErrorData) else await asks.sample(params)

    def _asked_by_one_call(self, method: str) -> CallerQuestions | ErrorData:
        """The questions channel of the one call in flight, or the error the server gets instead."""
        calls = self._calls
        if len(calls) == 1 and calls[0].asks is not None:
            return calls[0].asks
        if not calls:
            why = "no call is in flight to relay it for"
        elif len(calls) > 1:
            why = f"{len(calls)} calls are in flight and a request names none of them: whose caller to ask is unknown"
        else:
            why = "this call's caller cannot be asked"
        log.info("%s: %s refused: %s", self.spec.describe(), method, why)
        return ErrorData(code=INVALID_REQUEST, message=f"{method} not relayed by the mesh: {why}")

    async def _relist_when_stale(self, client: Client) -> None:
        while True:
            await self._stale.wait()
            self._stale = anyio.Event()
            try:
                with translate(self._what, "tools/list", None):
                    await self._list(client)
            except PeerError as exc:
                log.error("%s: could not list its tools again: %s", self.spec.describe(), exc)
                continue
            self._announce_change()

    async def _list(self, client: Client) -> None:
        tools: list[Tool] = []
        cursor: str | None = None
        while True:
            page = await client.list_tools(cursor=cursor, cache_mode="bypass")
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        self.tools = tools

    def _announce_change(self) -> None:
        relisted, self._relisted = self._relisted, anyio.Event()
        relisted.set()

    async def _note_status(self, response: httpx2.Response) -> None:
        if response.status_code >= 400:
            self._refused = response.status_code

    def _garbage(self, error: Exception) -> None:
        log.error("%s wrote something that is not MCP on stdout (ignored): %s", self.spec.describe(), one_line(error))


@final
class _Call:
    """One call in flight, where its caller wants notices, and who answers its requests (compared by identity)."""

    __slots__ = ("asks", "notices")

    def __init__(self, notices: NoticeSink | None, asks: CallerQuestions | None) -> None:
        self.notices = notices
        self.asks = asks
