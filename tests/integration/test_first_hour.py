"""What a newcomer meets in a second terminal: the mesh `mesh up` started is found, and approvals speak.

`mesh up` runs with no `MESH_NAME` (the mesh file names the mesh), and so does every command
after it, as in a fresh terminal; only `MESH_HOME` is private to the test.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path

import anyio
import anyio.abc
import pytest
from anyio.streams.text import TextReceiveStream

from mesh.identity import MeshKeys
from tests.integration.helpers import mesh_cli
from tests.integration.test_up import Up, mesh_up
from tests.security.helpers import cli_as

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

DESK = '''
from mesh import Agent

desk = Agent("desk", owner="support", jurisdiction="eu", data_class="internal")


@desk.tool(approval=True)
async def refund(order: str, amount: int) -> str:
    """Refund an order (a person approves)."""
    return f"refunded {amount} on {order}"


@desk.tool(approval_ttl=2)
async def wipe(order: str) -> str:
    """Erase an order (a person has two seconds to approve)."""
    return f"wiped {order}"


@desk.tool(read_only=True)
async def lookup(order: str) -> str:
    """Look an order up."""
    return f"order {order}: shipped"
'''
_WAITING = re.compile(r"approval ([0-9a-f]+), expires in \d+s\); decide with: mesh approvals approve \1")


@pytest.fixture
async def desk_up(mesh_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncGenerator[Up]:
    """`mesh up` of a one-agent mesh named in its mesh file, in a shell with no MESH_NAME."""
    del mesh_env
    monkeypatch.delenv("MESH_NAME")
    (tmp_path / "desk.py").write_text(DESK)
    name = f"desk-{uuid.uuid4().hex[:8]}"
    (tmp_path / "mesh.toml").write_text(f'[mesh]\nname = "{name}"\n[[agents]]\ntarget = "desk.py:desk"\n')
    async with mesh_up(str(tmp_path), "--registry-port", "0") as up:
        await up.wait_for("mesh up: next:")
        yield up


def _mesh_of(up: Up) -> str:
    """The mesh's name, as `mesh up` announced it."""
    return next(line for line in up.lines if line.startswith("mesh up: mesh ")).split()[3]


async def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return await anyio.to_thread.run_sync(lambda: mesh_cli(*args))


async def test_a_second_terminal_finds_the_mesh_that_mesh_up_started_without_its_name(desk_up: Up) -> None:
    mesh = _mesh_of(desk_up)
    listed = await cli("ls", "--json")
    approvals = await cli("approvals", "ls")
    traces = await cli("traces", "ls", "--json")
    next_steps = await desk_up.wait_for("mesh up: next:")

    assert listed.returncode == 0, listed.stderr
    assert [peer["name"] for peer in json.loads(listed.stdout)] == ["desk"]
    assert listed.stderr == f"mesh: using mesh '{mesh}' (the one running here; --mesh to choose)\n"
    assert approvals.returncode == 0, approvals.stderr
    assert approvals.stdout.strip() == "no approvals"
    assert traces.returncode == 0, traces.stderr
    assert re.search(r"web page: http://127\.0\.0\.1:\d+/ · mesh ls · mesh approvals ls", next_steps)
    assert "--mesh" not in next_steps


async def test_a_call_waiting_for_a_person_says_so_and_a_short_id_approves_it(desk_up: Up) -> None:
    argv = [sys.executable, "-m", "mesh", "call", "desk", "refund", "--arg", "order=A-7", "--arg", "amount=5"]
    async with await anyio.open_process(argv, stdin=subprocess.DEVNULL) as call:
        assert call.stdout is not None
        assert call.stderr is not None
        said = ""
        match: re.Match[str] | None = None
        with anyio.fail_after(30):
            async for chunk in TextReceiveStream(call.stderr):
                said += chunk
                if match := _WAITING.search(said):
                    break
        assert match is not None, said
        alice = MeshKeys.load(_mesh_of(desk_up)).mint("alice", role="approver", person="alice", ttl=300)
        approved = await anyio.to_thread.run_sync(lambda: cli_as(alice, "approvals", "approve", match[1][:4]))
        with anyio.fail_after(30):
            result = await _all(call.stdout)
            said += await _all(call.stderr)
            code = await call.wait()

    assert approved.returncode == 0, approved.stderr
    assert code == 0, said
    assert approved.stdout.startswith(f"{match[1]}: approved by alice")
    assert "desk.refund waits for an approver" in said
    assert code == 0
    assert result.strip() == "refunded 5 on A-7"


async def _all(stream: anyio.abc.ByteReceiveStream) -> str:
    return "".join([chunk async for chunk in TextReceiveStream(stream)])


async def test_a_call_nobody_approves_in_the_tools_own_ttl_ends_saying_approval_expired(desk_up: Up) -> None:
    del desk_up
    with anyio.fail_after(60):
        result = await cli("call", "desk", "wipe", "--arg", "order=A-7")

    assert result.returncode != 0
    assert _WAITING.search(result.stderr) is not None, result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith("mesh: error:")]
    assert "approval expired" in error
    assert "Traceback" not in result.stderr


async def test_an_unknown_tool_or_argument_is_one_line_naming_what_the_agent_has(desk_up: Up) -> None:
    del desk_up
    no_tool = await cli("call", "desk", "refnd")
    no_arg = await cli("call", "desk", "lookup", "--arg", "q=x")
    unknown_id = await cli("approvals", "approve", "zzzz")

    assert no_tool.returncode != 0
    assert (
        no_tool.stderr.splitlines()[-1]
        == "mesh: error: agent 'desk' has no tool 'refnd' (its tools: lookup, refund, wipe)"
    )
    assert no_arg.returncode != 0
    assert no_arg.stderr.splitlines()[-1] == "mesh: error: desk.lookup takes no argument 'q' (its arguments: order)"
    assert unknown_id.returncode != 0
    assert unknown_id.stderr.splitlines()[-1] == (
        "mesh: error: no approval has an id starting with 'zzzz' (see `mesh approvals ls`)"
    )
