"""Progress and log messages travelling back up a call chain, hop by hop, to the origin client.

The runtime leaves, for the request being served, a `NoticeSink` in `sink_var`: the caller's
channel (progress under the caller's token, log messages at the level the caller asked for). For
each hop it makes, the pool asks the callee for the same notices (a progress token of its own, the
caller's log level in `_meta`) and hands what comes back to that sink. A sink that wants nothing
adds nothing to the hop, which then keeps the lean JSON answer. Delivering is the sink's business.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any, Final, Protocol, get_args

from mcp_types import LOG_LEVEL_META_KEY, LoggingLevel

from mesh.wire import PROGRESS_TOKEN_META_KEY

__all__ = [
    "LOG_LEVELS",
    "NoticeHandler",
    "NoticeSink",
    "ask_for_notices",
    "at_least",
    "sink_var",
]

LOG_LEVELS: Final[tuple[LoggingLevel, ...]] = get_args(LoggingLevel)
"""The MCP log levels, least severe first (RFC 5424's order, as `LoggingLevel` declares them)."""

PROGRESS_METHOD: Final = "notifications/progress"
MESSAGE_METHOD: Final = "notifications/message"


class NoticeSink(Protocol):
    """Where one served request's notices go: its caller, who may want progress, log messages, or neither."""

    @property
    def progress_wanted(self) -> bool:
        """True when the caller sent a progress token."""
        ...

    @property
    def log_level(self) -> LoggingLevel | None:
        """The least severe level the caller wants log messages at; None for no log messages."""
        ...

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        """Report progress to the caller (never raises: a caller that hung up loses the notice)."""
        ...

    async def log(self, level: LoggingLevel, data: Any, logger: str | None) -> None:
        """Send a log message to the caller if it wants that level (never raises)."""
        ...


sink_var: ContextVar[NoticeSink | None] = ContextVar("mesh_notice_sink", default=None)
"""The caller's channel for the request being served, if it can take notices."""

NoticeHandler = Callable[[str, Mapping[str, Any]], Awaitable[None]]
"""Takes one notification a callee sent while it ran: its method and params."""

_tokens = itertools.count(1)


def at_least(level: str, threshold: str) -> bool:
    """True when `level` is as severe as `threshold` or more."""
    return LOG_LEVELS.index(level) >= LOG_LEVELS.index(threshold)  # pyright: ignore[reportArgumentType]


def ask_for_notices(meta: dict[str, Any], sink: NoticeSink | None) -> NoticeHandler | None:
    """Ask a hop (in its `_meta`) for what `sink` wants relayed; the handler for what arrives, or None."""
    if sink is None:
        return None
    wanted = False
    if sink.progress_wanted:
        meta[PROGRESS_TOKEN_META_KEY] = f"mesh-{next(_tokens)}"  # unique per process: the callee echoes it back
        wanted = True
    level = sink.log_level
    if level is not None:
        meta[LOG_LEVEL_META_KEY] = level
        wanted = True
    if not wanted:
        return None

    async def relay(method: str, params: Mapping[str, Any]) -> None:
        if method == PROGRESS_METHOD:
            progress = params.get("progress")
            if isinstance(progress, int | float) and not isinstance(progress, bool):
                total = params.get("total")
                message = params.get("message")
                await sink.progress(
                    float(progress),
                    float(total) if isinstance(total, int | float) else None,
                    message if isinstance(message, str) else None,
                )
        elif method == MESSAGE_METHOD:
            level = params.get("level")
            logger = params.get("logger")
            if level in LOG_LEVELS:
                await sink.log(level, params.get("data"), logger if isinstance(logger, str) else None)

    return relay
