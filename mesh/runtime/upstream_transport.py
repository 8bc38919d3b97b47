"""The transports to an adopted MCP server, and the one-line reasons one cannot be reached.

Owns the HTTP client a `--url` server gets (its credentials, its read timeout), the watch on a
transport's stream (its end means the server is lost; a line that is not MCP is reported, not a
hang), and how a failure to start reads in one line. Sessions and restarts are `mesh.runtime.upstream`'s.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio
import httpx2
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import MCPError
from mcp.client import Transport
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage

from mesh.text import one_line

__all__ = [
    "CALL_TIMEOUT",
    "NO_PARSE_TRACEBACK",
    "http_streams",
    "refusal_reason",
    "watched",
    "why_not_started",
]

CALL_TIMEOUT: Final = 24 * 3600.0
"""A call's read timeout towards the server: the caller's budget (CallGuard) is what bounds a call."""


class _NoParseTraceback(logging.Filter):
    """Drops the SDK's traceback for a stdout line that is not JSON-RPC: `Upstream` reports it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to parse JSONRPC message")


NO_PARSE_TRACEBACK: Final = _NoParseTraceback()


@asynccontextmanager
async def http_streams(
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
async def watched(transport: Transport, lost: anyio.Event, garbage: Callable[[Exception], None]) -> AsyncGenerator[Any]:
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


def why_not_started(exc: BaseException) -> str:
    """Why a server never got going, in one line a user can act on."""
    if isinstance(exc, FileNotFoundError):
        return "command not found"
    if isinstance(exc, PermissionError):
        return "permission denied: the command is not executable"
    if isinstance(exc, httpx2.HTTPStatusError):
        return refusal_reason(exc.response.status_code)
    if isinstance(exc, httpx2.ConnectError):
        return f"cannot connect: {one_line(exc)}"
    if isinstance(exc, MCPError):
        return f"the server went away before its MCP initialize completed ({exc.error.message})"
    if isinstance(exc, OSError):
        return f"cannot start it: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {one_line(exc)}"


def refusal_reason(status: int) -> str:
    """What an HTTP server's refusal means, in one line."""
    if status in (401, 403):
        return f"the server refused the credentials (HTTP {status}); check --header"
    return f"the server answered HTTP {status}"
