"""The gateway tells its client when the mesh's resources or prompts change, as it does for tools.

An adopted server (`fixtures/stdio_shelf.py`) adds a resource and a prompt and says so; an agent
(`agents/kb.py`) leaves the mesh. A handshake-era client hears `notifications/*/list_changed`, a
2026-07-28 client the same events on its `subscriptions/listen` stream; either then lists anew.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.subscriptions import PromptsListChanged, ResourcesListChanged
from mcp_types import PromptListChangedNotification, ResourceListChangedNotification

from mesh.testing import AgentProcess, MeshProcess, RegistryProcess
from tests.integration.helpers import until

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
KB = str(ROOT / "agents" / "kb.py")
SHELF = f"{sys.executable} {Path(__file__).resolve().parent / 'fixtures' / 'stdio_shelf.py'}"


class Heard:
    """Which listings the client was told changed, in order."""

    def __init__(self) -> None:
        self.changed: list[str] = []

    async def on_message(self, message: Any) -> None:
        if isinstance(message, ResourceListChangedNotification):
            self.changed.append("resources")
        elif isinstance(message, PromptListChangedNotification):
            self.changed.append("prompts")

    async def count(self) -> int:
        return len(self.changed)


@asynccontextmanager
async def gateway_client(registry: RegistryProcess, mode: str, heard: Heard) -> AsyncGenerator[Client]:
    """The SDK `Client` on `mesh gateway`'s stdio (which hears notifications itself on the 2025-11-25 wire)."""
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mesh", "gateway", "--registry", registry.base_url], env={**os.environ}
    )
    handler = heard.on_message if mode == "legacy" else None  # a 2026-07-28 client hears them on its stream
    async with Client(params, mode=mode, message_handler=handler) as client:  # pyright: ignore[reportArgumentType]
        yield client


async def uris(client: Client) -> set[str]:
    return {r.uri for r in (await client.list_resources()).resources}


async def prompts(client: Client) -> set[str]:
    return {p.name for p in (await client.list_prompts()).prompts}


@asynccontextmanager
async def listening(client: Client, heard: Heard) -> AsyncGenerator[None]:
    """A 2026-07-28 `subscriptions/listen` stream on the gateway, its events noted in `heard`."""
    async with (
        client.listen(resources_list_changed=True, prompts_list_changed=True) as stream,
        anyio.create_task_group() as tg,
    ):

        async def note() -> None:
            async for event in stream:
                if isinstance(event, ResourcesListChanged):
                    heard.changed.append("resources")
                elif isinstance(event, PromptsListChanged):
                    heard.changed.append("prompts")

        tg.start_soon(note)
        yield
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_the_gateway_tells_its_client_of_new_resources_and_prompts_and_of_an_agent_leaving(
    mesh_env: dict[str, str], mode: str
) -> None:
    heard = Heard()
    async with RegistryProcess() as registry:
        where = ("--registry", registry.base_url, "--no-mdns")
        kb = AgentProcess(KB, *where)
        shelf = MeshProcess(["run", "--command", SHELF, "--name", "shelf", "--port", "0", *where])
        async with kb, shelf:
            with anyio.fail_after(120):
                async with gateway_client(registry, mode, heard) as client:
                    before = await until(
                        lambda: uris(client),
                        lambda found: {"mesh://shelf/shelf://books/first", "mesh://kb/kb://articles"} <= found,
                        timeout=60,
                    )
                    await prompts(client)
                    async with listening(client, heard) if mode == "auto" else _nothing():
                        await client.call_tool("shelf__shelve", {"title": "dune"})
                        await until(heard.count, lambda n: n >= 2)
                        told = sorted(heard.changed)
                        grown = await uris(client)
                        offered = await prompts(client)
                        heard.changed.clear()
                        await kb.stop()
                        await until(heard.count, lambda n: n >= 1, timeout=60)
                        left = await uris(client)
    assert "mesh://shelf/shelf://books/dune" not in before
    assert told == ["prompts", "resources"]
    assert "mesh://shelf/shelf://books/dune" in grown
    assert "shelf__about_dune" in offered
    assert heard.changed[0] == "resources"
    assert not any(uri.startswith("mesh://kb/") for uri in left)
    assert "mesh://shelf/shelf://books/dune" in left


@asynccontextmanager
async def _nothing() -> AsyncGenerator[None]:
    yield
