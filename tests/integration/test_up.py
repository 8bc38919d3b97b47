"""`mesh up` starts a whole mesh from its mesh file, keeps going when one agent dies, and stops cleanly.

`mesh up` runs as a real process with its plain-line output (stdout is a pipe): one line per
state change carrying each child's pid, and `mesh up: ready: ...` once every agent answers.
The registry gets a free port through `--registry-port 0`.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from collections.abc import AsyncGenerator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import pytest
from anyio.streams.text import TextReceiveStream

from mesh.runtime.node import MeshNode
from tests.integration.helpers import mesh_cli, sdk_client

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
SUPPORT_DESK = ROOT / "examples" / "support-desk"
DESK_AGENTS = {"kb", "crm", "triage", "drafter", "human-desk", "analytics"}
_STATE = re.compile(r"^(\S+)\s+(starting|ready|restarting|stopping|exited\(-?\d+\))\s+pid=(\d+)(?:\s+(http://\S+))?")


@dataclass
class Up:
    """A running `mesh up`: its process and what it has printed so far."""

    process: anyio.abc.Process
    lines: list[str] = field(default_factory=list[str])
    stderr: str = ""
    changed: anyio.Event = field(default_factory=anyio.Event)
    ended: bool = False

    @property
    def pids(self) -> dict[str, int]:
        """Every child's latest pid, by label."""
        return {m[1]: int(m[3]) for line in self.lines if (m := _STATE.match(line))}

    @property
    def all_pids(self) -> set[int]:
        """Every pid any child has had (a restarted child has had several)."""
        return {int(m[3]) for line in self.lines if (m := _STATE.match(line))}

    def state(self, label: str) -> str | None:
        """The label's latest state, as printed."""
        states = [m[2] for line in self.lines if (m := _STATE.match(line)) and m[1] == label]
        return states[-1] if states else None

    def url(self, label: str) -> str | None:
        """The URL the child said it listens on."""
        urls = [m[4] for line in self.lines if (m := _STATE.match(line)) and m[1] == label and m[4]]
        return urls[-1] if urls else None

    async def until(self, condition: Callable[[], object], timeout: float = 60.0) -> None:
        """Return once `condition()` is true of what was printed; fail if `mesh up` ends first."""
        with anyio.fail_after(timeout):
            while not condition():
                if self.ended:
                    raise AssertionError(f"mesh up ended first; it said: {self.lines} {self.stderr}")
                await self.changed.wait()
                self.changed = anyio.Event()

    async def wait_for(self, prefix: str, timeout: float = 60.0) -> str:
        """The first printed line starting with `prefix`, waiting for it if need be."""
        await self.until(lambda: any(line.startswith(prefix) for line in self.lines), timeout)
        return next(line for line in self.lines if line.startswith(prefix))

    async def interrupt(self, timeout: float = 30.0) -> int:
        """SIGINT, as Ctrl-C would; the exit code, within `timeout`."""
        self.process.send_signal(signal.SIGINT)
        with anyio.fail_after(timeout):
            return await self.process.wait()


@asynccontextmanager
async def mesh_up(*args: str, preload: bool = True) -> AsyncGenerator[Up]:
    """`python -m mesh up ARGS`, its output followed; stopped (and its children checked) on the way out.

    `preload=False` sets `MESH_UP_PRELOAD=0`: every agent its own `python -m mesh run`.
    """
    env = {**os.environ, "MESH_UP_PRELOAD": "1" if preload else "0"}
    process = await anyio.open_process([sys.executable, "-m", "mesh", "up", *args], env=env)
    up = Up(process)
    async with process, anyio.create_task_group() as tg:
        tg.start_soon(_follow_stdout, up)
        tg.start_soon(_follow_stderr, up)
        try:
            yield up
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                    with anyio.move_on_after(20):
                        await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                for pid in _alive(up.all_pids):  # only if mesh up failed to: these are ours
                    os.kill(pid, signal.SIGKILL)


async def _follow_stdout(up: Up) -> None:
    assert up.process.stdout is not None
    pending = ""
    async for chunk in TextReceiveStream(up.process.stdout):
        *lines, pending = (pending + chunk).split("\n")
        up.lines.extend(lines)
        up.changed.set()
    up.ended = True
    up.changed.set()


async def _follow_stderr(up: Up) -> None:
    assert up.process.stderr is not None
    async for chunk in TextReceiveStream(up.process.stderr):
        up.stderr += chunk
    up.changed.set()


def _first_index(lines: list[str], prefix: str, word: str) -> int:
    return next(i for i, line in enumerate(lines) if line.startswith(prefix) and word in line)


def _healthy(node: MeshNode) -> set[str]:
    return {i.name for i in node.directory.all() if i.healthy()}


def _alive(pids: Iterable[int]) -> list[int]:
    alive: list[int] = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.append(pid)
    return alive


async def test_mesh_up_serves_the_support_desk_and_stops_every_process_on_ctrl_c(mesh_env: dict[str, str]) -> None:
    async with mesh_up(str(SUPPORT_DESK), "--registry-port", "0") as up:
        ready = await up.wait_for("mesh up: ready:")
        registry = up.url("registry")
        assert registry is not None
        async with MeshNode("up-test", registry=registry) as node:
            changes = node.directory.watch()
            with changes, anyio.fail_after(30):
                # Every name, and both kb replicas: the second may be listed a moment after the first.
                while not (_healthy(node) >= DESK_AGENTS and len(node.directory.instances("kb")) >= 2):
                    with anyio.move_on_after(0.2):  # a probe's verdict is not a change: look again now and then
                        await changes.receive()
            kb_instances = len(node.directory.instances("kb"))
            outcome = await node.call(
                "triage",
                "handle",
                {
                    "ticket_id": "T-1",
                    "sender": "ada@example.com",
                    "subject": "Charged twice for the March invoice",
                    "body": "My card was charged twice for the March invoice.",
                },
                timeout=30,
            )
        children = up.pids
        code = await up.interrupt()

    assert "7 of 7 agents" in ready
    assert kb_instances == 2
    assert outcome["route"] == "billing"
    assert outcome["confidence"] >= 0.6
    assert outcome["customer"] == "Ada Lovelace"
    assert outcome["escalated"] is False
    assert outcome["draft"]["sources"][0] == "KB-103"
    assert outcome["draft"]["body"].startswith("Hello Ada,")
    assert "no-confidential-abroad" in outcome["analytics"]  # the policy kept EU data from the US agent
    assert code == 0
    assert set(children) == {"registry", "kb#1", "kb#2", "crm", "triage", "drafter", "human-desk", "analytics"}
    assert _alive(children.values()) == []
    assert up.lines[-1] == "mesh up: stopped"
    assert all(up.state(label) == "exited(0)" for label in children)
    registry_stops = _first_index(up.lines, "registry ", "stopping")
    assert all(_first_index(up.lines, f"{label} ", "exited") < registry_stops for label in set(children) - {"registry"})


async def test_an_agent_that_fails_to_start_is_tried_again_then_left_down_while_the_others_keep_running(
    mesh_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('no database configured')\n")
    (tmp_path / "mesh.toml").write_text(
        '[registry]\nenabled = false\n[[agents]]\ntarget = "echo"\n[[agents]]\ntarget = "broken.py"\n'
    )
    async with mesh_up(str(tmp_path), "--no-mdns") as up:
        await up.wait_for("mesh up: ready: 1 of 2 agents")
        gave_up = await up.wait_for("mesh up: broken exited before it was ready")
        await up.until(lambda: up.state("broken") == "exited(1)")
        tally = await up.wait_for("mesh up: ready: 1 of 2 agents · 1 crashed")
        restarts = [line for line in up.lines if line.startswith("broken ") and "restarting" in line]
        echo_state = up.state("echo")
        code = await up.interrupt()

    assert "4 times in a row" in gave_up
    assert [line.split("(")[-1] for line in restarts] == [
        "exit 1; restart 1 in 0.5s)",
        "exit 1; restart 2 in 1s)",
        "exit 1; restart 3 in 2s)",
    ]
    assert tally.startswith("mesh up: ready: 1 of 2 agents")
    assert up.stderr.count("no database configured") == 4
    assert echo_state == "ready"
    assert code == 0
    assert _alive(up.all_pids) == []


@pytest.mark.parametrize("preload", [True, False], ids=["forked", "own-process"])
async def test_an_agent_killed_with_sigkill_is_restarted_and_answers_again(
    mesh_env: dict[str, str], tmp_path: Path, preload: bool
) -> None:
    (tmp_path / "mesh.toml").write_text('[registry]\nenabled = false\n[[agents]]\ntarget = "echo"\nreplicas = 2\n')
    async with mesh_up(str(tmp_path), "--no-mdns", preload=preload) as up:
        await up.wait_for("mesh up: ready: 2 of 2 agents")
        first = up.pids["echo#1"]
        os.kill(first, signal.SIGKILL)
        await up.until(lambda: up.state("echo#1") == "restarting")
        restarting = up.lines[-2:]
        await up.until(lambda: up.state("echo#1") == "ready" and up.pids["echo#1"] != first)
        await up.wait_for("mesh up: ready: 1 of 2 agents · 1 restarting")
        await up.until(lambda: up.lines.count("mesh up: ready: 2 of 2 agents") == 2)  # first up, then back
        url = up.url("echo#1")
        assert url is not None
        async with sdk_client(url) as client:
            answer = await client.call_tool("echo", {"text": "again"})
        tallies = [line for line in up.lines if line.startswith("mesh up: ready:")]
        code = await up.interrupt()

    assert any("restarting" in line and "(exit -9; restart 1 in 0.5s)" in line for line in restarting)
    assert answer.structured_content == {"result": "again"}
    assert tallies[-1] == "mesh up: ready: 2 of 2 agents"  # the truth again, once it is back
    assert code == 0
    assert _alive(up.all_pids) == []


async def test_an_agent_with_restart_no_stays_down_and_the_tally_says_so(
    mesh_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "mesh.toml").write_text(
        '[registry]\nenabled = false\n[[agents]]\ntarget = "echo"\n'
        '[[agents]]\ntarget = "echo"\nname = "fragile"\nrestart = "no"\n'
    )
    async with mesh_up(str(tmp_path), "--no-mdns") as up:
        await up.wait_for("mesh up: ready: 2 of 2 agents")
        fragile = up.pids["fragile"]
        os.kill(fragile, signal.SIGKILL)
        tally = await up.wait_for("mesh up: ready: 1 of 2 agents · 1 crashed")
        await up.until(lambda: up.state("fragile") == "exited(-9)")
        pids_after = up.pids
        code = await up.interrupt()

    assert tally == "mesh up: ready: 1 of 2 agents · 1 crashed"
    assert pids_after["fragile"] == fragile  # never started again
    assert not any(line.startswith("fragile ") and "restarting" in line for line in up.lines)
    assert code == 0
    assert _alive(up.all_pids) == []


async def test_a_second_ctrl_c_kills_an_agent_that_ignores_sigterm(mesh_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "stubborn.py").write_text(
        "import signal\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # SIGTERM never arrives\n"
        "from mesh import Agent\n"
        "agent = Agent('stubborn')\n"
    )
    (tmp_path / "mesh.toml").write_text('[registry]\nenabled = false\n[[agents]]\ntarget = "stubborn.py"\n')
    async with mesh_up(str(tmp_path), "--no-mdns") as up:
        await up.wait_for("mesh up: ready: 1 of 1 agents")
        up.process.send_signal(signal.SIGINT)
        await up.until(lambda: up.state("stubborn") == "stopping")
        code = await up.interrupt()

    assert code == 0
    assert up.state("stubborn") == "exited(-9)"
    assert "mesh up: SIGINT: killing what is left" in up.lines
    assert _alive(up.all_pids) == []


async def test_mesh_up_fails_in_one_line_when_every_agent_exits(mesh_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    (tmp_path / "mesh.toml").write_text('[registry]\nenabled = false\n[[agents]]\ntarget = "broken.py"\n')
    async with mesh_up(str(tmp_path), "--no-mdns") as up:
        with anyio.fail_after(60):
            code = await up.process.wait()

    assert code == 1
    [error] = [line for line in up.stderr.splitlines() if line.startswith("mesh: error:")]
    assert "every agent has exited" in error
    assert "Traceback" not in up.stderr


def test_a_registry_port_in_use_is_one_line_and_starts_nothing(mesh_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = mesh_cli("up", str(SUPPORT_DESK), "--registry-port", str(port))

    assert result.returncode != 0
    assert result.stderr.strip() == f"mesh: error: port {port} on 127.0.0.1 is already in use"
    assert "pid=" not in result.stdout


def test_a_mistake_in_the_mesh_file_is_one_line_naming_the_key(mesh_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "mesh.toml").write_text('[[agents]]\ntarget = "echo"\nreplica = 2\n')
    result = mesh_cli("up", str(tmp_path))

    assert result.returncode != 0
    assert result.stderr.count("\n") == 1
    assert "agents[0].replica: unknown key" in result.stderr
