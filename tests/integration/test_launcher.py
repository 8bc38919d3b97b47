"""`mesh up` forks its agents from one preloaded launcher, and each fork is an agent process of its own.

What `mesh run` gives an agent, a fork gets too: its own pid (that `mesh up` reports and signals),
session, random state, instance and name; Ctrl-C stops them all, and a `mesh up` killed outright
leaves none behind (the launcher stops its forks when `mesh up`'s end of its socket closes). A module
that starts a thread when imported is never forked: every agent then starts as its own process.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import httpx2
import pytest

from tests.integration.helpers import sdk_client
from tests.integration.test_up import mesh_up

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def _alive(pids: set[int]) -> set[int]:
    alive: set[int] = set()
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.add(pid)
    return alive


def _mesh_file(tmp_path: Path, target: str, replicas: int) -> str:
    (tmp_path / "mesh.toml").write_text(
        f'[registry]\nenabled = false\n[[agents]]\ntarget = "{target}"\nreplicas = {replicas}\n'
    )
    return str(tmp_path)


async def test_three_forked_agents_are_each_a_process_of_their_own(mesh_env: dict[str, str], tmp_path: Path) -> None:
    async with mesh_up(_mesh_file(tmp_path, str(FIXTURES / "dice.py"), 3), "--no-mdns") as up:
        await up.wait_for("mesh up: ready: 3 of 3 agents")
        pids = up.pids
        labels = sorted(pids)
        launchers = {_parent(pid) for pid in pids.values()}
        launcher = next(iter(launchers))
        launcher_cmdline, launcher_parent = _cmdline(launcher), _parent(launcher)
        sessions = {label: os.getsid(pid) for label, pid in pids.items()}
        names = {label: _comm(pid) for label, pid in pids.items()}
        rolls: dict[str, dict[str, int]] = {}
        instances: set[str] = set()
        async with httpx2.AsyncClient() as http:
            for label in labels:
                url = up.url(label)
                assert url is not None
                async with sdk_client(url) as client:
                    result = await client.call_tool("roll", {})
                assert isinstance(result.structured_content, dict)
                rolls[label] = result.structured_content
                instances.add((await http.get(url.removesuffix("/mcp") + "/healthz")).json()["instance"])
        code = await up.interrupt()

    assert labels == ["dice#1", "dice#2", "dice#3"]
    assert len(launchers) == 1
    assert "mesh.runtime.launcher" in launcher_cmdline
    assert launcher_parent == up.process.pid
    assert all(sessions[label] == pids[label] for label in labels)  # each leads its own session
    assert names == {label: f"mesh {label}" for label in labels}
    assert {label: rolls[label]["pid"] for label in labels} == pids  # the pid mesh up shows is the agent's
    assert len({r["draw"] for r in rolls.values()}) == 3  # re-seeded after the fork
    assert len(instances) == 3
    assert code == 0
    assert _alive({*up.all_pids, launcher}) == set()


async def test_with_preload_off_each_agent_is_a_child_of_mesh_up(mesh_env: dict[str, str], tmp_path: Path) -> None:
    async with mesh_up(_mesh_file(tmp_path, "echo", 2), "--no-mdns", preload=False) as up:
        await up.wait_for("mesh up: ready: 2 of 2 agents")
        parents = {_parent(pid) for pid in up.pids.values()}
        commands = [_cmdline(pid) for pid in up.pids.values()]
        code = await up.interrupt()

    assert parents == {up.process.pid}
    assert all(" -m mesh run echo " in command for command in commands)
    assert code == 0
    assert _alive(up.all_pids) == set()


async def test_a_module_that_starts_a_thread_when_imported_is_never_forked(
    mesh_env: dict[str, str], tmp_path: Path
) -> None:
    async with mesh_up(_mesh_file(tmp_path, str(FIXTURES / "threaded.py"), 2), "--no-mdns") as up:
        note = await up.wait_for("mesh up: launcher:")
        await up.wait_for("mesh up: ready: 2 of 2 agents")
        parents = {_parent(pid) for pid in up.pids.values()}
        url = up.url("threaded#1")
        assert url is not None
        async with sdk_client(url) as client:
            answer = await client.call_tool("ping", {})
        code = await up.interrupt()

    assert "imported-worker" in note
    assert note.endswith("starting every agent as its own process")
    assert parents == {up.process.pid}
    assert answer.structured_content == {"result": "pong"}
    assert code == 0
    assert _alive(up.all_pids) == set()


async def test_a_mesh_up_killed_outright_leaves_no_forked_agent_behind(
    mesh_env: dict[str, str], tmp_path: Path
) -> None:
    async with mesh_up(_mesh_file(tmp_path, "echo", 3), "--no-mdns") as up:
        await up.wait_for("mesh up: ready: 3 of 3 agents")
        forks = set(up.pids.values())
        launcher = _parent(next(iter(forks)))
        up.process.send_signal(signal.SIGKILL)
        with anyio.fail_after(30):
            while _alive({*forks, launcher}):
                await anyio.sleep(0.1)  # polling other processes' lives, with the deadline above

    assert _alive({*forks, launcher}) == set()
