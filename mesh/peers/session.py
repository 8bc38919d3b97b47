"""One MCP client session to one agent instance, over Streamable HTTP with the SDK `Client`.

The one place where MCP, httpx2 and anyio failures become mesh errors (STYLE habit 8):
callers of `PeerSession` only ever see `PeerError` subclasses. Routing, retries and
policy are not this module's business.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Mapping
from contextlib import AsyncExitStack, contextmanager, suppress
from typing import Any, final

import anyio
import httpx2
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, RequestParamsMeta, TextContent, Tool

from mesh.errors import DeadlineExceeded, PeerError, PeerRejected, PeerUnavailable, ToolFailed

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

    @contextmanager
    def _errors(self, tool: str) -> Generator[None]:
        where = f"{self.agent or self.url}"
        try:
            yield
        except PeerError:
            raise
        except MCPError as exc:
            raise _from_mcp(exc, where, tool, self.agent) from None
        except httpx2.HTTPStatusError as exc:
            raise _from_status(exc.response.status_code, exc.response.text, where, tool, self.agent) from None
        except (httpx2.ConnectError, httpx2.ConnectTimeout, ConnectionError) as exc:
            raise PeerUnavailable(
                f"cannot reach {where}: {_reason(exc)}", agent=self.agent, tool=tool
            ) from None
        except (httpx2.TimeoutException, TimeoutError) as exc:
            raise DeadlineExceeded(
                f"{where} did not answer in time ({type(exc).__name__})", agent=self.agent, tool=tool
            ) from None
        except (httpx2.HTTPError, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise PeerUnavailable(
                f"lost {where} mid-call: {_reason(exc)}", agent=self.agent, tool=tool
            ) from None
        except ExceptionGroup as group:
            first = _first_leaf(group)
            with self._errors(tool):
                raise first from None


def result_value(result: CallToolResult) -> Any:
    """The tool's structured result (unwrapped from the SDK's `{"result": x}`), else its text."""
    data = result.structured_content
    if data is not None:
        if set(data) == {"result"}:
            return data["result"]
        return data
    text = _text_of(result)
    try:
        return json.loads(text)
    except ValueError:
        return text


def _text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


def _bearer(token: Callable[[], str]) -> Callable[[httpx2.Request], httpx2.Request]:
    def add(request: httpx2.Request) -> httpx2.Request:
        request.headers["Authorization"] = f"Bearer {token()}"
        return request

    return add


def _from_mcp(exc: MCPError, where: str, tool: str, agent: str | None) -> PeerError:
    message = exc.error.message
    if "401" in message or "unauthorized" in message.lower():
        return PeerRejected(f"{where} refused the call: {message}", agent=agent, tool=tool)
    if exc.error.code in (-32000,) and ("closed" in message.lower() or "connect" in message.lower()):
        return PeerUnavailable(f"lost {where}: {message}", agent=agent, tool=tool)
    if "timed out" in message.lower() or "timeout" in message.lower():
        return DeadlineExceeded(f"{where} did not answer in time: {message}", agent=agent, tool=tool)
    return PeerRejected(f"{where} rejected {tool!r}: {message}", agent=agent, tool=tool)


def _from_status(status: int, body: str, where: str, tool: str, agent: str | None) -> PeerError:
    detail = body.strip().splitlines()[0][:200] if body.strip() else ""
    with suppress(ValueError, KeyError, TypeError):
        detail = json.loads(body)["error"]["message"]
    if status in (502, 503, 504):
        return PeerUnavailable(f"{where} is unavailable (HTTP {status})", agent=agent, tool=tool)
    return PeerRejected(f"{where} answered HTTP {status}: {detail}", agent=agent, tool=tool)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _first_leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]  # pyright: ignore[reportUnknownMemberType]
    return exc
