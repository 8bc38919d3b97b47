"""The lean client for hops between agents: one MCP 2026-07-28 request per HTTP POST.

The 2026-07-28 revision makes every request self-contained (no handshake, no session), so
a call is one POST with a pre-built envelope on a pooled connection: no discover, no hidden
`tools/list`, no per-call task groups. It is still MCP Streamable HTTP, answered by the SDK's
own server. Owns the envelope and the response: JSON, or an event stream read as it arrives when
the caller passes a handler for the notifications a callee sends while it runs (progress, log
messages). Translating failures into mesh errors is `mesh.peers.failures`' job.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final, final

import httpx2
from mcp.shared.inbound import MCP_METHOD_HEADER, MCP_NAME_HEADER, MCP_PROTOCOL_VERSION_HEADER
from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, JSONRPC_VERSION, PROTOCOL_VERSION_META_KEY

from mesh.errors import PeerRejected
from mesh.peers.failures import translate
from mesh.peers.notices import NoticeHandler

__all__ = ["PROTOCOL_VERSION", "HopClient", "HopResult", "tool_value"]

PROTOCOL_VERSION: Final = "2026-07-28"
"""The MCP revision every hop speaks: the envelope here is built for it, so a newer one is adopted on purpose."""


@final
class HopResult:
    """A `tools/call` result as it came off the wire (a dict), with the few fields the mesh reads."""

    __slots__ = ("raw",)

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw

    @property
    def input_required(self) -> bool:
        """True when the callee asks for input (a person's approval) before it runs."""
        return self.raw.get("resultType") == "input_required"

    @property
    def is_error(self) -> bool:
        """True when the tool reported an error."""
        return bool(self.raw.get("isError"))

    @property
    def text(self) -> str:
        """The text blocks of the result, joined by newlines."""
        blocks: list[Any] = self.raw.get("content") or []
        return "\n".join(str(b.get("text", "")) for b in blocks if isinstance(b, dict) and b.get("type") == "text")  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]

    @property
    def value(self) -> Any:
        """The structured result (unwrapped from the SDK's `{"result": x}`), else the text (JSON if it parses)."""
        data = self.raw.get("structuredContent")
        return tool_value(data if isinstance(data, dict) else None, self.text)  # pyright: ignore[reportUnknownArgumentType]


def tool_value(structured: dict[str, Any] | None, text: str) -> Any:
    """What a tool returned: its structured content (the SDK wraps plain values as `{"result": x}`), else its text."""
    if structured is not None:
        return structured["result"] if set(structured) == {"result"} else structured
    try:
        return json.loads(text)
    except ValueError:
        return text


@final
class HopClient:
    """Sends MCP requests to one agent instance over a shared connection pool."""

    def __init__(
        self,
        url: str,
        *,
        http: httpx2.AsyncClient,
        token: Callable[[], str] | None = None,
        agent: str | None = None,
        client_name: str = "agentplex",
    ) -> None:
        self.url = url
        self.agent = agent
        self._http = http
        self._token = token
        self._ids = 0
        self.listing_meta: dict[str, Any] = {}
        """The `_meta` of the last `tools/list` answer (agents put their governance metadata there)."""
        self._client_meta: dict[str, Any] = {
            PROTOCOL_VERSION_META_KEY: PROTOCOL_VERSION,
            CLIENT_INFO_META_KEY: {"name": client_name, "version": "0.1.0"},
            CLIENT_CAPABILITIES_META_KEY: {},
        }

    async def call_tool(
        self,
        tool: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        meta: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        input_responses: Mapping[str, Any] | None = None,
        request_state: str | None = None,
        on_notice: NoticeHandler | None = None,
    ) -> HopResult:
        """`tools/call` one tool; raises PeerError subclasses, never transport exceptions.

        `on_notice` gets each notification the callee sends before its answer (ask for them in `meta`).
        """
        params: dict[str, Any] = {"name": tool, "arguments": dict(arguments or {})}
        if input_responses:
            params["inputResponses"] = dict(input_responses)
        if request_state:
            params["requestState"] = request_state
        params["_meta"] = {**self._client_meta, **meta} if meta else self._client_meta
        return HopResult(await self.request("tools/call", params, name=tool, timeout=timeout, on_notice=on_notice))

    def envelope(self, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """This client's `_meta` for a request (the 2026-07-28 envelope: version, client, capabilities), plus `meta`."""
        return {**self._client_meta, **meta} if meta else dict(self._client_meta)

    async def list_tools(self, *, timeout: float | None = 5.0) -> list[dict[str, Any]]:
        """Every tool the instance serves (following pagination), as wire dicts; `listing_meta` keeps the `_meta`."""
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(100):
            params: dict[str, Any] = {"_meta": self._client_meta}
            if cursor:
                params["cursor"] = cursor
            page = await self.request("tools/list", params, timeout=timeout)
            if not cursor:
                self.listing_meta = page.get("_meta") or {}
            tools.extend(page.get("tools") or [])
            cursor = page.get("nextCursor")
            if not isinstance(cursor, str):
                break
        return tools

    async def request(
        self,
        method: str,
        params: dict[str, Any],
        *,
        name: str | None = None,
        timeout: float | None = None,
        on_notice: NoticeHandler | None = None,
    ) -> dict[str, Any]:
        """One JSON-RPC request; returns its `result` or raises a PeerError."""
        self._ids += 1
        body = json.dumps(
            {"jsonrpc": JSONRPC_VERSION, "id": self._ids, "method": method, "params": params}, separators=(",", ":")
        )
        headers = {
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            MCP_PROTOCOL_VERSION_HEADER: PROTOCOL_VERSION,
            MCP_METHOD_HEADER: method,
        }
        if name is not None:
            headers[MCP_NAME_HEADER] = name
        if self._token is not None:
            headers["authorization"] = f"Bearer {self._token()}"
        where = self.agent or self.url
        limits = httpx2.Timeout(timeout, connect=min(timeout or 5.0, 5.0))
        with translate(where, name or method, self.agent):
            if on_notice is None:  # the lean path: one body, read whole
                response = await self._http.post(self.url, content=body, headers=headers, timeout=limits)
                if response.headers.get("content-type", "").startswith("text/event-stream"):
                    message = _last_sse_message(response.text)
                else:
                    message = _json_answer(response)
            else:
                async with self._http.stream(
                    "POST", self.url, content=body, headers=headers, timeout=limits
                ) as response:
                    if response.headers.get("content-type", "").startswith("text/event-stream"):
                        message = await _read_events(response, on_notice)
                    else:
                        await response.aread()
                        message = _json_answer(response)
        if "error" in message:
            error = message["error"] or {}
            code, text = error.get("code"), error.get("message", "unknown error")
            status = f"HTTP {response.status_code}, " if response.status_code >= 400 else ""
            raise PeerRejected(
                f"{where} rejected {name or method!r} ({status}code {code}): {text}", agent=self.agent, tool=name
            )
        result = message.get("result")
        if not isinstance(result, dict):
            raise PeerRejected(f"{where} sent no result for {name or method!r}", agent=self.agent, tool=name)
        return result  # pyright: ignore[reportUnknownVariableType]


def _json_answer(response: httpx2.Response) -> dict[str, Any]:
    if response.status_code >= 400 and not response.content.startswith(b"{"):
        response.raise_for_status()
    return response.json()


async def _read_events(response: httpx2.Response, on_notice: NoticeHandler) -> dict[str, Any]:
    """The JSON-RPC response in an SSE stream; each notification before it goes to `on_notice`.

    Read to the end (the server closes the stream right after the response): a connection left with
    unread body cannot go back to the pool, and a new one per call costs a connect.
    """
    answer: dict[str, Any] = {}
    data: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            data.append(line[5:].strip())
            continue
        if line or not data:
            continue  # `event:`, `id:`, `retry:`, comments (pings), or a blank line with nothing pending
        decoded = json.loads("".join(data))
        data.clear()
        if not isinstance(decoded, dict) or answer:
            continue
        if "result" in decoded or "error" in decoded:
            answer = decoded  # pyright: ignore[reportUnknownVariableType]
            continue
        method = decoded.get("method")  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        params = decoded.get("params")  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        if isinstance(method, str) and isinstance(params, dict):
            await on_notice(method, params)  # pyright: ignore[reportUnknownArgumentType]
    if data and not answer:  # a last event cut short of its blank line
        answer = _last_sse_message("data:" + "".join(data))
    return answer  # pyright: ignore[reportUnknownVariableType]


def _last_sse_message(text: str) -> dict[str, Any]:
    """The JSON-RPC response in an SSE body (notifications before it are skipped)."""
    last: dict[str, Any] = {}
    # Events end at a blank line, and SSE lines may end in CRLF (the SDK's server sends them so).
    for event in text.replace("\r\n", "\n").replace("\r", "\n").split("\n\n"):
        data = "".join(line[5:].strip() for line in event.split("\n") if line.startswith("data:"))
        if data:
            decoded = json.loads(data)
            if isinstance(decoded, dict) and ("result" in decoded or "error" in decoded):
                last = decoded  # pyright: ignore[reportUnknownVariableType]
    return last
