"""The caller's channel for a request being served: progress under its token, log messages at its level.

Owns `RequestNotices` (the `NoticeSink` of one request, over the SDK's request-scoped session) and
`LogLevels`, the answer to `logging/setLevel`. A 2026-07-28 caller opts in per request (a `_meta`
progressToken, `io.modelcontextprotocol/logLevel`); a handshake-era (2025-11-25) caller sets one
level per session with `logging/setLevel`, and gets `info` and above until it does (the spec leaves
that choice to the server). Relaying a callee's notices up to this sink is `mesh.peers.notices`'.
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import suppress
from typing import Any, Final, final

import anyio
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context as SdkContext
from mcp.server.mcpserver import MCPServer
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp_types import (
    LOG_LEVEL_META_KEY,
    EmptyResult,
    LoggingLevel,
    LoggingMessageNotification,
    LoggingMessageNotificationParams,
    SetLevelRequestParams,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from mesh.peers.notices import LOG_LEVELS, at_least

__all__ = ["DEFAULT_LEVEL", "LogLevels", "RequestNotices", "answer_set_level", "notices_of"]

DEFAULT_LEVEL: Final[LoggingLevel] = "info"
"""What a handshake-era client that never sent `logging/setLevel` gets: `info` and above."""
_SESSION_HEADER: Final = "mcp-session-id"
_REMEMBERED: Final = 4096  # sessions whose level is kept (oldest forgotten first): a bound, not a cache


@final
class LogLevels:
    """The level each handshake-era session asked for with `logging/setLevel`."""

    def __init__(self) -> None:
        self._levels: OrderedDict[str, LoggingLevel] = OrderedDict()

    async def set_level(self, ctx: ServerRequestContext[Any, Any], params: SetLevelRequestParams) -> EmptyResult:
        """The `logging/setLevel` handler: remember the level for the session it came on."""
        session = _session_of(ctx)
        self._levels[session] = params.level
        self._levels.move_to_end(session)
        while len(self._levels) > _REMEMBERED:
            self._levels.popitem(last=False)
        return EmptyResult()

    def level_for(self, ctx: ServerRequestContext[Any, Any]) -> LoggingLevel | None:
        """The least severe level this request's caller takes log messages at; None for none."""
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            meta: Any = (ctx.params or {}).get("_meta")
            requested: Any = meta.get(LOG_LEVEL_META_KEY) if isinstance(meta, dict) else None  # pyright: ignore[reportUnknownMemberType]
            return requested if requested in LOG_LEVELS else None
        return self._levels.get(_session_of(ctx), DEFAULT_LEVEL)


def answer_set_level(server: MCPServer[Any] | Server[Any], levels: LogLevels) -> None:
    """Serve `logging/setLevel` on `server` (which then advertises the logging capability)."""
    # MCPServer has no public seam for a spec method it does not serve; its docs point to the
    # low-level `Server.add_request_handler`, which it keeps as `_lowlevel_server`.
    lowlevel: Server[Any] = server._lowlevel_server if isinstance(server, MCPServer) else server  # pyright: ignore[reportPrivateUsage, reportUnknownMemberType]
    lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, levels.set_level)


@final
class RequestNotices:
    """The `NoticeSink` of one request being served: what its caller asked for, sent on its own stream."""

    __slots__ = ("_ctx", "log_level", "progress_wanted")

    def __init__(self, ctx: ServerRequestContext[Any, Any], levels: LogLevels) -> None:
        self._ctx = ctx
        self.progress_wanted: bool = progress_token_from_params(ctx.params) is not None
        self.log_level: LoggingLevel | None = levels.level_for(ctx)

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        """Report progress under the caller's token (nothing if it sent none)."""
        if self.progress_wanted:
            with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):  # the caller hung up
                await self._ctx.session.report_progress(progress, total, message)

    async def log(self, level: LoggingLevel, data: Any, logger: str | None) -> None:
        """Send a log message on this request's stream, if the caller takes that level."""
        if self.log_level is None or not at_least(level, self.log_level):
            return
        params = LoggingMessageNotificationParams(level=level, data=data, logger=logger)
        with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await self._ctx.session.send_notification(
                LoggingMessageNotification(params=params), related_request_id=self._ctx.request_id
            )


def notices_of(sdk_ctx: SdkContext[Any, Any] | None, levels: LogLevels) -> RequestNotices | None:
    """The notices of the request behind the SDK's tool `Context`, when there is one."""
    if sdk_ctx is None:
        return None
    try:
        request = sdk_ctx.request_context
    except ValueError:  # a Context built outside a request
        return None
    return RequestNotices(request, levels)


def _session_of(ctx: ServerRequestContext[Any, Any]) -> str:
    """The HTTP session a request came on ("" on stdio, where the process serves one connection)."""
    headers: Any = getattr(ctx.request, "headers", None)
    session = headers.get(_SESSION_HEADER) if headers is not None else None
    return str(session) if session else ""
