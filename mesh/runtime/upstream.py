"""`Upstream`: the one long-lived SDK `Client` session to an adopted MCP server, a stdio child or a URL.

Owns the child's life (started on entry, restarted with backoff when it dies, stopped on exit:
the SDK's stdio transport closes stdin, then kills the process tree), the current tool listing
(listed again on `notifications/tools/list_changed`), the progress and log messages a call's
caller asked for, and turning the server's failures into `PeerError`s and one-line `ConfigError`s.
Serving the listing to the mesh is `mesh.runtime.adapter`'s.
"""

from __future__ import annotations

import logging
import math
import shlex
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Self, TypeVar, final

import anyio
import httpx2
from anyio import AsyncContextManagerMixin
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import Client, MCPError
from mcp.client import IncomingMessage, Transport
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage
from mcp_types import (
    CallToolResult,
    LoggingMessageNotification,
    ResourceUpdatedNotification,
    Tool,
    ToolListChangedNotification,
)

from mesh.errors import ConfigError, PeerError, PeerUnavailable
from mesh.peers.failures import first_leaf, translate
from mesh.peers.notices import NoticeSink

__all__ = ["Upstream", "UpstreamSpec"]

log = logging.getLogger("mesh.upstream")
_T = TypeVar("_T")

START_TIMEOUT: Final = 30.0
"""Seconds a server has to complete MCP initialize and list its tools."""
FIRST_BACKOFF: Final = 0.5
MAX_BACKOFF: Final = 10.0
CALL_TIMEOUT: Final = 24 * 3600.0
"""A call's read timeout towards the server: the caller's budget (CallGuard) is what bounds a call."""


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
        logging.getLogger("mcp.client.stdio").addFilter(_NO_PARSE_TRACEBACK)
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
        self, tool: str, arguments: Mapping[str, Any], *, notices: NoticeSink | None = None
    ) -> CallToolResult:
        """Forward one `tools/call`; a server that is gone or goes mid-call raises `PeerUnavailable`.

        Its progress goes to `notices` when the caller asked for it, and so do its log messages while
        this is the only call in flight (a log message names no request: with several, it is kept
        from every caller rather than shown to the wrong one).
        """
        client = self._client
        if client is None:
            raise PeerUnavailable(f"{self._what} is restarting; try again shortly", tool=tool)
        progress = notices.progress if notices is not None and notices.progress_wanted else None
        call = _Call(notices)
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
                async with Client(self._transport(), mode="legacy", message_handler=self._on_message) as client:
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
                return _refusal(self._refused)
            return _why(leaf)
        finally:
            self._client = None
        return None

    def _transport(self) -> Transport:
        if self.spec.url is not None:
            return _watched(_http(self.spec.url, self.spec.headers, self._note_status), self._lost, self._garbage)
        command, *args = self.spec.command
        params = StdioServerParameters(command=command, args=args, env=dict(self.spec.env) or None)
        return _watched(stdio_client(params), self._lost, self._garbage)

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, ToolListChangedNotification):
            self._stale.set()
        elif isinstance(message, ResourceUpdatedNotification):
            if self.on_resource_updated is not None:
                await self.on_resource_updated(str(message.params.uri))
        elif isinstance(message, LoggingMessageNotification):
            calls = self._calls
            if len(calls) == 1 and calls[0].notices is not None:
                entry = message.params
                await calls[0].notices.log(entry.level, entry.data, entry.logger or self.server_name)
            else:
                log.debug("%s: a log message with %d calls in flight was not relayed", self.spec.describe(), len(calls))

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
        log.error("%s wrote something that is not MCP on stdout (ignored): %s", self.spec.describe(), _line(error))


@final
class _Call:
    """One call in flight, and where its caller wants notices (compared by identity)."""

    __slots__ = ("notices",)

    def __init__(self, notices: NoticeSink | None) -> None:
        self.notices = notices


class _NoParseTraceback(logging.Filter):
    """Drops the SDK's traceback for a stdout line that is not JSON-RPC: `Upstream` reports it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to parse JSONRPC message")


_NO_PARSE_TRACEBACK: Final = _NoParseTraceback()


@asynccontextmanager
async def _http(
    url: str, headers: Mapping[str, str], on_response: Callable[[httpx2.Response], Awaitable[None]]
) -> AsyncGenerator[Any]:
    """Streamable HTTP to `url` on an HTTP client of its own that sends `headers` (the server's credentials)."""
    timeout = httpx2.Timeout(30.0, read=CALL_TIMEOUT)
    hooks = {"response": [on_response]}
    async with (
        httpx2.AsyncClient(headers=dict(headers), timeout=timeout, event_hooks=hooks) as http,
        streamable_http_client(url, http_client=http) as streams,
    ):
        yield streams


@asynccontextmanager
async def _watched(
    transport: Transport, lost: anyio.Event, garbage: Callable[[Exception], None]
) -> AsyncGenerator[Any]:
    """`transport`, setting `lost` when its stream ends, and dropping lines that are not MCP (told to `garbage`)."""
    async with transport as (read, write):
        sender: MemoryObjectSendStream[SessionMessage | Exception]
        receiver: MemoryObjectReceiveStream[SessionMessage | Exception]
        sender, receiver = anyio.create_memory_object_stream[SessionMessage | Exception](0)

        async def forward() -> None:
            async with sender:
                try:
                    async for item in read:
                        if isinstance(item, Exception):
                            garbage(item)
                            continue
                        await sender.send(item)
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    pass
            lost.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(forward)
            try:
                yield receiver, write
            finally:
                tg.cancel_scope.cancel()
                receiver.close()


def _why(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "command not found"
    if isinstance(exc, PermissionError):
        return "permission denied: the command is not executable"
    if isinstance(exc, httpx2.HTTPStatusError):
        return _refusal(exc.response.status_code)
    if isinstance(exc, httpx2.ConnectError):
        return f"cannot connect: {_line(exc)}"
    if isinstance(exc, MCPError):
        return f"the server went away before its MCP initialize completed ({exc.error.message})"
    if isinstance(exc, OSError):
        return f"cannot start it: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {_line(exc)}"


def _refusal(status: int) -> str:
    if status in (401, 403):
        return f"the server refused the credentials (HTTP {status}); check --header"
    return f"the server answered HTTP {status}"


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
