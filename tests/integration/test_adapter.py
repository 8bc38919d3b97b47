"""`mesh run --command` / `--url`: a plain MCP server, unchanged, served to the mesh like any agent."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mesh.errors import PeerUnavailable, PolicyDenied, ToolFailed
from mesh.runtime.node import MeshNode
from mesh.testing import MeshProcess, RegistryProcess, free_port
from tests.integration.helpers import child_pids, mesh_cli, sdk_client, until
from tests.security.helpers import cli_as, person_token

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

FIXTURES = Path(__file__).resolve().parent / "fixtures"
STDIO_SERVER = f"{sys.executable} {FIXTURES / 'stdio_server.py'}"
HTTP_SERVER = str(FIXTURES / "http_server.py")
POLICY = str(FIXTURES / "adopted.cedar")


def adopted(*args: str, command: str = STDIO_SERVER, name: str = "plain") -> MeshProcess:
    """`mesh run --command COMMAND --name NAME ARGS` on a free port."""
    return MeshProcess(["run", "--command", command, "--name", name, "--port", "0", "--no-mdns", *args])


async def child_of(process: MeshProcess, other_than: int | None = None) -> int:
    """The pid of the adopted server `process` runs (one other than `other_than`, after a restart)."""

    async def fetch() -> set[int]:
        return child_pids(process.pid) - {other_than or -1}

    found: set[int] = await until(fetch, lambda pids: len(pids) == 1)
    return found.pop()


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def cli(*args: str) -> Any:
    return await anyio.to_thread.run_sync(lambda: mesh_cli(*args))


async def test_a_stdio_server_is_called_through_the_mesh_under_its_own_tools(mesh_env: dict[str, str]) -> None:
    async with (
        RegistryProcess() as registry,
        adopted("--registry", registry.base_url, "--env", "FIXTURE_SECRET=hunter2") as plain,
    ):
        called = await cli("call", "plain", "add", "--arg", "a=2", "--arg", "b=3", "--registry", registry.base_url)
        secret = await cli("call", "plain", "env", "--arg", "name=FIXTURE_SECRET", "--registry", registry.base_url)
        listed = await cli("ls", "--json", "--registry", registry.base_url)
        async with sdk_client(plain.url) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        async with httpx2.AsyncClient() as http:
            health = (await http.get(plain.base_url + "/healthz")).text
    assert called.returncode == 0, called.stderr
    assert called.stdout.strip() == "5"
    assert secret.stdout.strip() == "hunter2"  # --env reached the child
    assert sorted(tools) == ["add", "crash", "env", "grow", "nap"]
    add = tools["add"]
    assert add.description == "Add two integers."
    assert add.input_schema["required"] == ["a", "b"]
    assert add.annotations is not None
    assert (add.annotations.read_only_hint, add.annotations.idempotent_hint) == (True, True)
    assert add.annotations.title == "Add two numbers"
    [row] = [r for r in json.loads(listed.stdout) if r["name"] == "plain"]
    assert row["metadata"]["ungoverned"] == "true"  # no --meta owner
    assert "add" in row["tools"]
    for shown in (listed.stdout, health, plain.stderr):
        assert "hunter2" not in shown
    assert "FIXTURE_SECRET=***" in plain.stderr


async def test_policy_denies_a_tool_and_an_approval_rule_makes_another_wait(mesh_env: dict[str, str]) -> None:
    async with (
        RegistryProcess() as registry,
        adopted("--registry", registry.base_url, "--policy", POLICY, "--meta", "owner=platform"),
        MeshNode("script", registry=registry.base_url) as node,
    ):
        await node.settle()
        with pytest.raises(PolicyDenied, match="no-env-for-scripts"):
            await node.call("plain", "env", {"name": "HOME"})
        outcome: dict[str, Any] = {}
        pending: dict[str, Any] = {}

        async def nap() -> None:
            outcome["nap"] = await node.call("plain", "nap", {"seconds": 0}, timeout=30)

        async with anyio.create_task_group() as tg:
            tg.start_soon(nap)
            listing = ("approvals", "ls", "--status", "pending", "--json", "--registry", registry.base_url)
            filed = await until(lambda: cli(*listing), lambda r: bool(json.loads(r.stdout or "[]")))
            [first] = json.loads(filed.stdout)
            pending.update(first)
            approver = person_token("alice", "approver")
            decided = await anyio.to_thread.run_sync(
                lambda: cli_as(approver, "approvals", "approve", pending["id"], "--registry", registry.base_url)
            )
            assert decided.returncode == 0, decided.stderr
        traces = await until(
            lambda: cli("traces", "ls", "--agent", "plain", "--tool", "nap", "--json", "--registry", registry.base_url),
            lambda r: r.returncode == 0 and len(json.loads(r.stdout)) == 1,
        )
        trace_id = json.loads(traces.stdout)[0]["trace_id"]
        shown = await until(
            lambda: cli("traces", "show", trace_id, "--json", "--registry", registry.base_url),
            lambda r: any(n["agent"] == "plain" and n["kind"] == "client" for n in _walk(json.loads(r.stdout)["root"])),
        )
    assert outcome["nap"] == "rested"
    assert (pending["agent"], pending["tool"], pending["caller"]) == ("plain", "nap", "script")
    nodes = _walk(json.loads(shown.stdout)["root"])
    server = [n for n in nodes if n["agent"] == "plain" and n["kind"] == "server"]
    client = [n for n in nodes if n["agent"] == "plain" and n["kind"] == "client"]
    assert server
    assert client
    assert client[0]["attributes"]["mesh.adopted.transport"] == "stdio"
    kinds = {(d["kind"], d["choice"]) for d in server[0]["decisions"]}
    assert ("policy", "approval") in kinds


async def test_a_killed_child_fails_its_calls_and_a_restarted_one_answers(
    mesh_env: dict[str, str], tmp_path: Path
) -> None:
    naps = tmp_path / "naps"
    async with (
        RegistryProcess() as registry,
        adopted("--registry", registry.base_url, "--meta", "owner=platform", "--env", f"FIXTURE_NAPS={naps}") as plain,
        MeshNode("script", registry=registry.base_url) as node,
    ):
        await node.settle()
        first = await child_of(plain)
        failures: list[BaseException] = []

        async def nap() -> None:
            try:
                await node.call("plain", "nap", {"seconds": 60}, timeout=30)
            except PeerUnavailable as exc:  # typed: the child died mid-call
                failures.append(exc)

        with anyio.fail_after(15):  # the calls in flight fail at once, not at their deadline
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(nap)
                await until(lambda: _lines(naps), lambda n: n == 3)  # the naps are under way in the child
                os.kill(first, signal.SIGKILL)
        second = await child_of(plain, other_than=first)
        answer = await until(lambda: _try_add(node), lambda value: value == 7)
    assert len(failures) == 3
    assert all("lost" in str(f) for f in failures), failures
    assert second != first
    assert answer == 7
    assert "running again" in plain.stderr


async def test_junk_on_a_childs_stdout_is_logged_in_one_line_and_calls_go_on(mesh_env: dict[str, str]) -> None:
    async with adopted("--env", "FIXTURE_BANNER=1") as plain:
        added = await cli("call", "--url", plain.url, "add", "--arg", "a=1", "--arg", "b=1")
    assert added.stdout.strip() == "2"
    assert "is not MCP on stdout (ignored)" in plain.stderr
    assert "Traceback" not in plain.stderr


async def test_stopping_the_adapter_leaves_no_child(mesh_env: dict[str, str]) -> None:
    async with adopted() as plain:
        child = await child_of(plain)
        assert alive(child)
        code = await plain.stop(signal.SIGTERM)
    assert code is not None
    await until(lambda: _async(alive(child)), lambda running: not running, timeout=10)


async def test_a_changed_tool_list_makes_the_new_tool_callable(mesh_env: dict[str, str]) -> None:
    async with (
        RegistryProcess() as registry,
        adopted("--registry", registry.base_url, "--meta", "owner=platform"),
        MeshNode("script", registry=registry.base_url) as node,
    ):
        await node.settle()
        assert await node.call("plain", "grow", {}) == "grown"
        listed = await until(
            lambda: cli("ls", "--json", "--registry", registry.base_url),
            lambda r: any("extra" in row["tools"] for row in json.loads(r.stdout or "[]") if row["name"] == "plain"),
        )
        called = await cli("call", "plain", "extra", "--registry", registry.base_url)
    assert listed.returncode == 0
    assert called.returncode == 0, called.stderr
    assert called.stdout.strip() == "extra here"


async def test_a_remote_server_is_adopted_with_its_credentials(mesh_env: dict[str, str]) -> None:
    async with _http_server("s3cret") as url:
        async with MeshProcess(
            ["run", "--url", url, "--name", "remote", "--header", "Authorization=Bearer s3cret", "--no-mdns"]
        ) as remote:
            called = await cli("call", "--url", remote.url, "greet", "--arg", "who=mesh")
            async with sdk_client(remote.url) as client:
                names = [tool.name for tool in (await client.list_tools()).tools]
        refused = await cli("run", "--url", url, "--name", "remote", "--header", "Authorization=Bearer wrong")
    assert called.returncode == 0, called.stderr
    assert called.stdout.strip() == "hello mesh"
    assert names == ["greet"]
    assert "s3cret" not in remote.stderr
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1].startswith("mesh: error:")
    assert "401" in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--command", "no-such-command-xyz --flag", "--name", "x"], "command not found"),
        (["--command", f"{sys.executable} -c 'raise SystemExit(2)'", "--name", "x"], "before its MCP initialize"),
        (["--command", "cat", "--url", "http://127.0.0.1:9/mcp", "--name", "x"], "not both"),
        (["agents/echo.py", "--command", "cat", "--name", "x"], "not both"),
        (["--command", "cat"], "needs --name"),
        (["--command", "cat", "--name", "x", "--env", "NOVALUE"], "--env takes KEY=VALUE"),
    ],
)
def test_a_server_that_cannot_be_adopted_is_one_line(mesh_env: dict[str, str], args: list[str], fragment: str) -> None:
    result = mesh_cli("run", "--no-mdns", *args)
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("mesh: adopting")]
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]


# -- helpers -------------------------------------------------------------------------------------


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node["children"] for n in _walk(child))]


async def _async(value: Any) -> Any:
    return value


async def _try_add(node: MeshNode) -> Any:
    try:
        return await node.call("plain", "add", {"a": 3, "b": 4})
    except (ToolFailed, PeerUnavailable):
        return None  # still restarting


@asynccontextmanager
async def _http_server(token: str) -> AsyncGenerator[str]:
    """The plain SDK server on Streamable HTTP, checking `token`, on a free port; yields its /mcp URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    process = await anyio.open_process([sys.executable, HTTP_SERVER, str(port), token])
    try:
        async with httpx2.AsyncClient() as http:

            async def answers() -> bool:
                try:
                    await http.get(url)
                except httpx2.TransportError:
                    return False
                return True

            await until(answers, bool)
        yield url
    finally:
        process.terminate()
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _lines(path: Path) -> int:
    file = anyio.Path(path)
    return len((await file.read_text()).splitlines()) if await file.exists() else 0
