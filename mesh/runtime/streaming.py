"""`AnswerSwitch`: each MCP request answered as one JSON body, or as an event stream when it may need one.

A call whose caller asked for notices while it runs (a `progressToken`, or a log level, in its
`_meta`) goes to the SDK's event-stream transport, which sends them as they happen, as does a
`subscriptions/listen` (its answer is the stream); every other 2026-07-28 request, most hops between
agents, keeps the lean JSON answer. Handshake-era clients
(2025-11-25) keep their sessions, and their back-channel, on the event-stream transport, as does
everything that is not a 2026-07-28 POST to the MCP path (`/healthz`, GET and DELETE).
"""

from __future__ import annotations

from collections import deque
from typing import Final, final

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types import LOG_LEVEL_META_KEY
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mesh.wire import PROGRESS_TOKEN_META_KEY

__all__ = ["AnswerSwitch"]

_VERSION_HEADER: Final = MCP_PROTOCOL_VERSION_HEADER.encode()
_HANDSHAKE: Final = frozenset(v.encode() for v in HANDSHAKE_PROTOCOL_VERSIONS)
# A caller asks for notices with these `_meta` keys. Found as bytes, the body is not parsed twice: a
# key that only looks present (in an argument, say) costs an event stream that answers as JSON anyway.
_ASKS_FOR_NOTICES: Final = (
    *(f'"{key}"'.encode() for key in (PROGRESS_TOKEN_META_KEY, LOG_LEVEL_META_KEY)),
    b'"subscriptions/listen"',  # the method itself: the events of a listen stream are its answer
)


@final
class AnswerSwitch:
    """ASGI app: `lean` (a JSON-answering session manager) for requests that need no stream, else `streams`.

    `app` is the agent's whole Starlette app: its routes, `streams` behind its MCP path, and the
    lifespan of `streams`; the switch runs `lean`'s lifespan around it. A 2026-07-28 POST goes
    straight to the manager that answers it (no routing to pay for on every hop).
    """

    def __init__(
        self,
        *,
        lean: StreamableHTTPSessionManager,
        streams: StreamableHTTPSessionManager,
        app: ASGIApp,
        path: str = "/mcp",
    ) -> None:
        self._lean = lean
        self._streams = streams
        self._app = app
        self._path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            async with self._lean.run():
                await self._app(scope, receive, send)
            return
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self._path or _handshake(scope):
            await self._app(scope, receive, send)
            return
        body, replay = await _buffered(receive)
        manager = self._streams if any(key in body for key in _ASKS_FOR_NOTICES) else self._lean
        await manager.handle_request(scope, replay, send)


def _handshake(scope: Scope) -> bool:
    """True for a handshake-era request (a version from 2025-11-25 or before, or none at all)."""
    for name, value in scope["headers"]:
        if name == _VERSION_HEADER:
            return value in _HANDSHAKE
    return True


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """The request body (read up to the SDK's size limit), and a `receive` that gives it again."""
    messages: deque[Message] = deque()
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break  # the client went away: the transport hears it on replay
        chunk: bytes = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False) or size > DEFAULT_MAX_REQUEST_BODY_SIZE:
            break  # over the limit, the SDK answers 413 as it reads the rest

    async def replay() -> Message:
        return messages.popleft() if messages else await receive()

    return b"".join(chunks), replay
