"""`resources/subscribe`: who asked to hear of a resource's changes, and telling them.

Owns the subscriptions of one served agent: per URI, the client connections that asked;
a connection found closed when told drops out. `updated(uri)` sends
`notifications/resources/updated` to each; a tool calls it as `await ctx.resource_updated(uri)`.
The SDK's `MCPServer` has no public seam for these two methods; its migration guide says to register
them on the low-level server, which also advertises the capability.
"""

from __future__ import annotations

from typing import Any, final

import anyio
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.session import ServerSession
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams

__all__ = ["ResourceSubscriptions"]


@final
class ResourceSubscriptions:
    """The sessions subscribed to each resource URI of one agent."""

    def __init__(self, uris: tuple[str, ...] | None) -> None:
        self._any = uris is None  # an adopted server's: it judges the URI itself
        uris = uris or ()
        self._static = frozenset(u for u in uris if "{" not in u)
        self._templates = tuple(u[: u.index("{")] for u in uris if "{" in u)  # what a match starts with
        self._by_uri: dict[str, dict[Connection, ServerSession]] = {}

    def install(self, server: MCPServer) -> None:
        """Answer `resources/subscribe` and `resources/unsubscribe` on `server`."""
        lowlevel = server._lowlevel_server  # pyright: ignore[reportPrivateUsage]
        lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, self._subscribe)
        lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, self._unsubscribe)

    def subscribers(self, uri: str) -> int:
        """How many open sessions listen to `uri`."""
        return len(self._by_uri.get(uri, ()))

    async def updated(self, uri: str) -> int:
        """Tell every session subscribed to `uri` that it changed; returns how many were told."""
        told = 0
        for connection, session in list(self._by_uri.get(uri, {}).items()):
            try:
                await session.send_resource_updated(uri)  # on the connection's own channel, not a request's
                told += 1
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._by_uri[uri].pop(connection, None)  # the client went away
        return told

    async def subscribe(self, ctx: ServerRequestContext[Any], params: SubscribeRequestParams) -> EmptyResult:
        """Record that `ctx`'s connection wants to hear of changes to `params.uri`."""
        return await self._subscribe(ctx, params)

    async def unsubscribe(self, ctx: ServerRequestContext[Any], params: UnsubscribeRequestParams) -> EmptyResult:
        """Forget `ctx`'s connection's interest in `params.uri`."""
        return await self._unsubscribe(ctx, params)

    async def _subscribe(self, ctx: ServerRequestContext[Any], params: SubscribeRequestParams) -> EmptyResult:
        uri = str(params.uri)
        if not self._any and uri not in self._static and not uri.startswith(self._templates):
            raise MCPError(code=INVALID_PARAMS, message=f"unknown resource {uri!r}")
        self._by_uri.setdefault(uri, {})[_connection(ctx)] = ctx.session
        return EmptyResult()

    async def _unsubscribe(self, ctx: ServerRequestContext[Any], params: UnsubscribeRequestParams) -> EmptyResult:
        found = self._by_uri.get(str(params.uri))
        if found is not None:
            found.pop(_connection(ctx), None)
        return EmptyResult()


def _connection(ctx: ServerRequestContext[Any]) -> Connection:
    """The client connection a request came on: the session object is new for every request."""
    return ctx.session._connection  # pyright: ignore[reportPrivateUsage]
