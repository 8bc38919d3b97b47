"""`resources/subscribe`: a client hears of a change a tool announces, and only for what it subscribed to."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import ResourceUpdatedNotification

from mesh import Agent, Context
from mesh.runtime.tools import build_server

pytestmark = [
    pytest.mark.anyio,
    # The 2025-11-25 method the conformance suite and handshake-era clients use (2026-07-28 clients listen).
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]


def library() -> Agent:
    agent = Agent("library", owner="docs")

    @agent.resource("lib://books/{isbn}")
    async def book(isbn: str) -> str:
        return f"book {isbn}"

    @agent.resource("lib://shelf")
    async def shelf() -> str:
        return "every book"

    @agent.tool()
    async def reshelve(uri: str, ctx: Context) -> int:
        """Say that `uri` changed; how many clients were told."""
        return await ctx.resource_updated(uri)

    return agent


async def test_a_subscriber_is_told_of_the_change_a_tool_announces_and_not_after_unsubscribing() -> None:
    heard: list[str] = []
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            heard.append(str(message.params.uri))
            changed.set()

    async with Client(build_server(library(), peers=None), mode="legacy", message_handler=on_message) as client:
        await client.subscribe_resource("lib://books/42")  # pyright: ignore[reportDeprecated]
        told = await client.call_tool("reshelve", {"uri": "lib://books/42"})
        with anyio.fail_after(5):
            await changed.wait()
        untold = await client.call_tool("reshelve", {"uri": "lib://shelf"})  # not subscribed
        await client.unsubscribe_resource("lib://books/42")  # pyright: ignore[reportDeprecated]
        after = await client.call_tool("reshelve", {"uri": "lib://books/42"})
    assert [told.structured_content, untold.structured_content, after.structured_content] == [
        {"result": 1},
        {"result": 0},
        {"result": 0},
    ]
    assert heard == ["lib://books/42"]


async def test_subscribing_to_a_resource_the_agent_does_not_offer_is_refused_in_one_line() -> None:
    async with Client(build_server(library(), peers=None), mode="legacy") as client:
        with pytest.raises(MCPError, match="unknown resource 'lib://films/1'"):
            await client.subscribe_resource("lib://films/1")  # pyright: ignore[reportDeprecated]
