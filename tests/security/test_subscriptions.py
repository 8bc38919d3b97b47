"""Who may not read a resource may not subscribe to it either, and hears nothing of its changes.

The attacker holds a valid client token of the mesh, but the policy lets only `hr-desk` read salaries.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import ResourceUpdatedNotification

from mesh.identity import MeshKeys
from mesh.testing import AgentProcess, MeshProcess
from tests.security.helpers import FIXTURES

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.integration,
    # `resources/subscribe` is the 2025-11-25 method (2026-07-28 clients listen instead).
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

PAYROLL = str(FIXTURES / "payroll.py")
POLICY = str(FIXTURES / "payroll.cedar")
CONFORMANCE = Path(__file__).resolve().parents[1] / "thirdparty" / "fixtures" / "conformance_server.py"


@asynccontextmanager
async def listening(url: str, caller: str, heard: list[str]) -> AsyncGenerator[Client]:
    """A handshake-era SDK client with a valid token for `caller`, noting each resource update it hears."""

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            heard.append(str(message.params.uri))

    token = MeshKeys.load().mint(caller, "*", ttl=300, role="client")
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
        Client(streamable_http_client(url, http_client=http), mode="legacy", message_handler=on_message) as client,
    ):
        yield client


async def test_a_caller_denied_a_resource_cannot_subscribe_to_it_nor_hear_it_change(mesh_env: dict[str, str]) -> None:
    mallory_heard: list[str] = []
    desk_heard: list[str] = []
    async with AgentProcess(PAYROLL, "--no-mdns", "--policy", POLICY) as payroll:
        with anyio.fail_after(60):
            async with (
                listening(payroll.url, "mallory", mallory_heard) as mallory,
                listening(payroll.url, "hr-desk", desk_heard) as desk,
            ):
                with pytest.raises(MCPError) as refused:
                    await mallory.subscribe_resource("hr://salaries/alice")  # pyright: ignore[reportDeprecated]
                await mallory.subscribe_resource("hr://handbook")  # pyright: ignore[reportDeprecated]
                await desk.subscribe_resource("hr://salaries/alice")  # pyright: ignore[reportDeprecated]
                told = await mallory.call_tool("raise_salary", {"person": "alice"})
                while not desk_heard:  # bounded by fail_after: the update is on its way to the desk
                    await anyio.sleep(0.05)
                with pytest.raises(MCPError, match="PolicyDenied"):
                    await mallory.read_resource("hr://salaries/alice")
    message = refused.value.error.message
    assert message.startswith("PolicyDenied: mallory may not subscribe to payroll hr://salaries/alice")
    assert "salaries-are-for-hr" in message
    assert told.structured_content == {"result": 1}  # the desk only: mallory was never subscribed
    assert desk_heard == ["hr://salaries/alice"]
    assert mallory_heard == []


async def test_an_adopted_servers_resource_is_refused_to_a_subscriber_the_policy_denies(
    mesh_env: dict[str, str],
) -> None:
    command = f"{sys.executable} {CONFORMANCE}"
    args = ["run", "--command", command, "--name", "conformance", "--port", "0", "--no-mdns", "--policy", POLICY]
    async with MeshProcess(args) as adopted:
        with anyio.fail_after(60):
            async with listening(adopted.url, "mallory", []) as mallory, listening(adopted.url, "hr-desk", []) as desk:
                with pytest.raises(MCPError) as refused:
                    await mallory.subscribe_resource("test://watched-resource")  # pyright: ignore[reportDeprecated]
                await desk.subscribe_resource("test://watched-resource")  # pyright: ignore[reportDeprecated]
                await mallory.subscribe_resource("test://static-text")  # pyright: ignore[reportDeprecated]
    assert refused.value.error.message.startswith(
        "PolicyDenied: mallory may not subscribe to conformance test://watched-resource"
    )
