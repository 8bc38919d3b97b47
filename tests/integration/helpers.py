"""Small helpers for integration tests: run the `mesh` CLI, an SDK client with a mesh token, child processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mesh.identity import MeshKeys, Role
from mesh.runtime.node import MeshNode
from mesh.testing import AgentProcess, RegistryProcess

VAULT = str(Path(__file__).resolve().parent / "fixtures" / "vault.py")


def child_pids(pid: int) -> set[int]:
    """Live child processes of `pid` (Linux /proc): a tracer's ingest workers, say."""
    found: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        if fields[1] == str(pid) and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def mesh_cli(*args: str, timeout: float = 60.0, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m mesh ARGS` to completion and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "mesh", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        check=False,
    )


@asynccontextmanager
async def sdk_client(
    url: str, *, caller: str = "test-client", audience: str = "*", role: Role = "client"
) -> AsyncGenerator[Client]:
    """The official SDK client on Streamable HTTP, sending a token of this test's mesh (a client's, by default)."""
    token = MeshKeys.load().mint(caller, audience, ttl=300, role=role)
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client


@asynccontextmanager
async def vault_chain(caller: str) -> AsyncGenerator[tuple[RegistryProcess, MeshNode]]:
    """A registry, the `vault` (its `withdraw` needs approval) and the `teller` that calls it, seen by `caller`."""
    async with (
        RegistryProcess() as registry,
        AgentProcess(f"{VAULT}:vault", "--registry", registry.base_url),
        AgentProcess(f"{VAULT}:teller", "--registry", registry.base_url),
        MeshNode(caller, registry=registry.base_url) as node,
    ):
        await node.settle()
        yield registry, node


async def until(fetch: Callable[[], Awaitable[Any]], check: Callable[[Any], bool], timeout: float = 20) -> Any:
    """Poll `fetch` (bounded) until `check` holds of what it returns; spans arrive about once a second."""
    with anyio.fail_after(timeout):
        while True:
            value = await fetch()
            if check(value):
                return value
            await anyio.sleep(0.2)
