"""Agents find each other through mDNS and the registry; liveness comes from leases and probes."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import anyio
import httpx2
import pytest

from mesh.discovery.mdns import MdnsAnnouncer
from mesh.discovery.txt import Announcement, signed
from mesh.identity import MeshKeys
from mesh.peers.directory import Instance
from mesh.runtime.node import MeshNode
from mesh.testing import AgentProcess, RegistryProcess
from tests.integration.helpers import mesh_cli

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
ECHO = str(ROOT / "agents" / "echo.py")
RELAY = str(ROOT / "tests" / "integration" / "fixtures" / "relay.py")


async def _until(node: MeshNode, check: Callable[[list[Instance]], bool], timeout: float = 10.0) -> list[Instance]:
    """Wait (bounded) until the node's directory satisfies `check`."""
    with anyio.fail_after(timeout):
        changes = node.directory.watch()
        with changes:
            while not check(node.directory.all()):
                with anyio.move_on_after(0.5):  # probes refresh health without a change event
                    await changes.receive()
    return node.directory.all()


def _healthy(instances: list[Instance], name: str) -> bool:
    return any(i.name == name and i.healthy() for i in instances)


async def test_agents_and_registry_see_each_other_through_both_sources(mesh_env: dict[str, str]) -> None:
    async with (
        RegistryProcess(),
        AgentProcess(RELAY, "--name", "alpha", "--meta", "next=beta") as alpha,
        AgentProcess(RELAY, "--name", "beta"),
        MeshNode("observer") as node,
    ):
        both = await _until(
            node,
            lambda found: (
                {i.name for i in found if set(i.sources) == {"mdns", "registry"} and i.healthy()} >= {"alpha", "beta"}
            ),
        )
        # alpha can reach beta peer to peer: it saw beta too.
        reply = await node.call("alpha", "relay", {"text": "hi"})
    assert reply == "hi>alpha>beta"
    beta = next(i for i in both if i.name == "beta")
    assert beta.metadata["owner"] == "tests"
    assert beta.url.startswith("http://127.0.0.1:")
    assert alpha.url != beta.url


async def test_mesh_ls_json_has_the_documented_shape(mesh_env: dict[str, str]) -> None:
    async with RegistryProcess() as registry, AgentProcess(ECHO, "--registry", registry.base_url):
        async with httpx2.AsyncClient(base_url=registry.base_url) as http:
            with anyio.fail_after(10):  # registration follows readiness by a few milliseconds
                while not (await http.get("/api/agents")).json():
                    await anyio.sleep(0.05)
        result = await anyio.to_thread.run_sync(
            lambda: mesh_cli("ls", "--json", "--registry", registry.base_url, "--wait", "1.5")
        )
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert {"name", "instance", "url", "tools", "sources", "healthy", "metadata"} <= set(row)
    assert row["name"] == "echo"
    assert row["tools"] == ["echo"]
    assert row["healthy"] is True
    assert set(row["sources"]) == {"mdns", "registry"}
    assert row["metadata"]["jurisdiction"] == "eu"


async def test_a_killed_agent_stops_being_healthy_within_its_lease(mesh_env: dict[str, str]) -> None:
    async with RegistryProcess(), MeshNode("observer") as node, AgentProcess(ECHO) as echo:
        await _until(node, lambda found: _healthy(found, "echo"))
        echo.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await _until(node, lambda found: not _healthy(found, "echo"), timeout=15)
        gone_after = time.monotonic() - killed_at
    assert gone_after < 15  # the lease is 10 s; probes usually notice within ~2 s


async def test_a_gracefully_stopped_agent_disappears_at_once(mesh_env: dict[str, str]) -> None:
    async with RegistryProcess(), MeshNode("observer") as node:
        async with AgentProcess(ECHO) as echo:
            await _until(node, lambda found: _healthy(found, "echo"))
            await echo.stop(signal.SIGTERM)
        remaining = await _until(node, lambda found: not any(i.name == "echo" for i in found), timeout=5)
    assert remaining == []


async def test_a_registry_restart_loses_no_registration(mesh_env: dict[str, str], tmp_path: Path) -> None:
    db = tmp_path / "registry.sqlite3"
    async with RegistryProcess("--db", str(db)) as first, AgentProcess(ECHO):
        async with MeshNode("observer", registry=first.base_url, mdns=False) as node:
            await _until(node, lambda found: any("registry" in i.sources for i in found))
        port = first.port
        await first.stop(signal.SIGKILL)
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert conn.execute("SELECT count(*) FROM agents").fetchone() == (1,)
        async with (
            RegistryProcess("--db", str(db), port=port) as second,
            MeshNode("observer", registry=second.base_url, mdns=False) as node,
        ):
            found = await _until(node, lambda found: any("registry" in i.sources and i.healthy() for i in found))
    assert [i.name for i in found] == ["echo"]


async def test_forged_and_replayed_announcements_are_never_trusted(mesh_env: dict[str, str]) -> None:
    keys = MeshKeys.load()
    genuine = signed(
        Announcement(
            kind="agent",
            mesh=keys.mesh,
            name="payments",
            instance="a1b2c3d4",
            host="127.0.0.1",
            port=45001,
            path="/mcp",
            expires=int(time.time()) + 300,
            auth=True,
            fingerprint=keys.fingerprint,
        ),
        keys.sign,
    )
    replayed = replace(genuine, port=45002, instance="e5f6a7b8")
    forged = replace(genuine, name="ledger", instance="c9d0e1f2", signature="", fingerprint="")
    async with (
        MdnsAnnouncer(lambda: replayed),
        MdnsAnnouncer(lambda: forged),
        MeshNode("observer", mdns=True) as node,
    ):
        found = await _until(node, lambda found: {i.name for i in found} >= {"payments", "ledger"})
        with pytest.raises(Exception, match="no trusted instance"):
            await node.call("ledger", "anything", {})
    by_name = {i.name: i for i in found}
    assert not by_name["payments"].verified
    assert "bad signature" in (by_name["payments"].reason or "")
    assert not by_name["ledger"].verified
    assert by_name["ledger"].reason == "unsigned announcement"
    assert not any(i.healthy() for i in found)


async def test_meshes_with_different_names_never_see_each_other(mesh_env: dict[str, str]) -> None:
    async with AgentProcess(ECHO), MeshNode("observer", mesh=mesh_env["MESH_NAME"] + "-other") as other:
        await other.settle(browse=1.5)
        seen = other.directory.all()
    assert seen == []
