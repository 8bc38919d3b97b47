"""A real registry answers an unchanged listing with 304; peers polling it that way still see who is alive."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx2
import pytest

from mesh.peers.directory import Instance
from mesh.runtime.node import MeshNode
from mesh.testing import AgentProcess, RegistryProcess
from mesh.wire import LEASE_FLOOR_HEADER

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
ECHO = str(ROOT / "agents" / "echo.py")


async def _until(node: MeshNode, check: Callable[[list[Instance]], bool], timeout: float = 20.0) -> list[Instance]:
    """Wait (bounded) until the node's directory satisfies `check`."""
    with anyio.fail_after(timeout):
        changes = node.directory.watch()
        with changes:
            while not check(node.directory.all()):
                with anyio.move_on_after(0.5):  # a lease raised by a 304 is no membership change
                    await changes.receive()
    return node.directory.all()


def _echo(instances: list[Instance]) -> Instance | None:
    return next((i for i in instances if i.name == "echo"), None)


async def test_an_unchanged_listing_answers_304_and_a_peer_keeps_the_lease_fresh(mesh_env: dict[str, str]) -> None:
    async with (
        RegistryProcess() as registry,
        AgentProcess(ECHO, "--registry", registry.base_url),
        MeshNode("observer", registry=registry.base_url, mdns=False) as node,
        httpx2.AsyncClient(base_url=registry.base_url) as http,
    ):
        found = await _until(node, lambda found: (i := _echo(found)) is not None and i.healthy())
        first = await http.get("/api/agents")
        tag = first.headers["etag"]
        (record,) = first.json()
        held = _echo(found)
        assert held is not None

        # Heartbeats go on; the observer's conditional polls are answered 304 and raise the lease it holds.
        later = await _until(
            node, lambda found: (i := _echo(found)) is not None and i.lease_until > record["expires_at"]
        )
        again = await http.get("/api/agents", headers={"if-none-match": tag})

    assert first.status_code == 200
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", tag)
    assert float(again.headers[LEASE_FLOOR_HEADER]) > record["expires_at"]
    now_held = _echo(later)
    assert now_held is not None
    assert now_held.healthy()
    assert now_held.sources == frozenset({"registry"})


async def test_an_agent_that_stops_renewing_disappears_from_a_peers_view(mesh_env: dict[str, str]) -> None:
    async with (
        RegistryProcess() as registry,
        AgentProcess(ECHO, "--registry", registry.base_url) as echo,
        MeshNode("observer", registry=registry.base_url, mdns=False) as node,
        httpx2.AsyncClient(base_url=registry.base_url) as http,
    ):
        await _until(node, lambda found: (i := _echo(found)) is not None and i.healthy())
        tag = (await http.get("/api/agents")).headers["etag"]
        echo.signal(signal.SIGKILL)  # no deregistration: only its lease lapsing can remove it

        remaining = await _until(node, lambda found: _echo(found) is None, timeout=30)
        after = await http.get("/api/agents", headers={"if-none-match": tag})

    assert remaining == []
    assert (after.status_code, after.json()) == (200, [])
    assert after.headers["etag"] != tag
    assert LEASE_FLOOR_HEADER not in after.headers
