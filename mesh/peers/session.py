"""One MCP client session to one agent instance, over Streamable HTTP with the SDK `Client`.

The one place where MCP, httpx2 and anyio failures become mesh errors (STYLE habit 8):
callers of `PeerSession` only ever see `PeerError` subclasses. Routing, retries and
policy are not this module's business.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, AsyncExitStack, suppress
from typing import Any, final

import anyio
import httpx2
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, RequestParamsMeta, TextContent, Tool

from mesh.errors import ToolFailed
from mesh.peers.failures import translate
from mesh.peers.hop import tool_value

__all__ = ["PeerSession", "result_value", "shared_transport"]


def shared_transport() -> httpx2.AsyncHTTPTransport:
    """One connection pool for every session of a process (DESIGN §10: a new SSL context costs ~17 ms)."""
    return httpx2.AsyncHTTPTransport(limits=httpx2.Limits(max_connections=512, max_keepalive_connections=128))


@final
class PeerSession:
    """A pooled SDK client for one instance; `call` raises only PeerError subclasses."""

    def __init__(
        self,
        url: str,
        *,
        transport: httpx2.AsyncBaseTransport,
        token: Callable[[], str] | None = None,
        agent: str | None = None,
    ) -> None:
        self.url = url
        self.agent = agent
        self._http = httpx2.AsyncClient(
            transport=transport,
            auth=httpx2.FunctionAuth(_bearer(token)) if token else None,
            timeout=httpx2.Timeout(30.0, read=300.0),
        )
        self._stack: AsyncExitStack | None = None
        self._client: Client | None = None
        self.tools: dict[str, Tool] = {}

    async def __aenter__(self) -> PeerSession:
        if self._stack is not None:
            raise RuntimeError("PeerSession is already open; open a new one instead")
        stack = AsyncExitStack()
        with self._errors("connect"):
            try:
                self._client = await stack.enter_async_context(
                    Client(streamable_http_client(self.url, http_client=self._http, terminate_on_close=False))
                )
                listed = await self._client.list_tools()
            except BaseException:
                await stack.aclose()
                raise
        self.tools = {tool.name: tool for tool in listed.tools}
        self._stack = stack
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            # No cancel scope of our own here: the SDK's task groups unwind in the order they were entered.
            # A peer that is gone leaves nothing to close politely.
            with suppress(MCPError, httpx2.HTTPError, anyio.BrokenResourceError, OSError):
                await stack.aclose()

    async def call(
        self,
        tool: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        meta: RequestParamsMeta | None = None,
    ) -> CallToolResult:
        """Call `tool`; a result flagged as an error raises ToolFailed."""
        if self._client is None:
            raise RuntimeError("PeerSession.call outside `async with`")
        with self._errors(tool):
            result = await self._client.call_tool(
                tool, dict(arguments or {}), read_timeout_seconds=timeout, meta=meta or None
            )
        if result.is_error:
            raise ToolFailed(_text_of(result) or f"tool {tool!r} failed", agent=self.agent, tool=tool)
        return result

    def _errors(self, tool: str) -> AbstractContextManager[None]:
        return translate(self.agent or self.url, tool, self.agent)


def result_value(result: CallToolResult) -> Any:
    """The tool's structured result (unwrapped from the SDK's `{"result": x}`), else its text."""
    return tool_value(result.structured_content, _text_of(result))


def _text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


def _bearer(token: Callable[[], str]) -> Callable[[httpx2.Request], httpx2.Request]:
    def add(request: httpx2.Request) -> httpx2.Request:
        request.headers["Authorization"] = f"Bearer {token()}"
        return request

    return add
