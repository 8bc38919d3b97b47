"""Real third-party MCP servers on the mesh, unchanged: the reference "everything" server from npm and
`mcp-server-time` from PyPI, each adopted by `mesh run --command`.

For each: `mesh call` reaches it, the gateway lists and calls its tools as `NAME__TOOL`, a Cedar
policy denies one tool to one caller and makes another wait for a person, the decision trace holds
the adapter's spans and the verdicts, and a child killed with SIGKILL mid-call fails those calls with
a typed error and is started again.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import signal
import struct
import sys
import termios
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp_types import CallToolResult, TextContent

from mesh.errors import PolicyDenied
from mesh.runtime.node import MeshNode
from mesh.testing import MeshProcess, RegistryProcess
from mesh.wire import ERROR_META_KEY
from tests.integration.helpers import child_pids, mesh_cli, sdk_client, until
from tests.security.helpers import cli_as, person_token
from tests.thirdparty.installs import NodeTools

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@dataclass(frozen=True, slots=True)
class Call:
    """One tool call and a piece of text its answer must contain."""

    tool: str
    arguments: dict[str, Any]
    answer: str


@dataclass(frozen=True, slots=True)
class Server:
    """A third-party server as the mesh adopts it, and the calls the tests make of it."""

    name: str
    command: str
    server_name: str
    """What the server calls itself in its MCP initialize (the adapter's span names it)."""
    call: Call
    """Any caller may make it."""
    denied: Call
    """The policy refuses it to the caller `script`, and only to it."""
    denied_by: str
    approved: Call
    """The policy makes it wait for a person."""
    policy: Path


@pytest.fixture(params=["everything", "time"])
def server(request: pytest.FixtureRequest) -> Server:
    """The everything server (npm, on Node 22) or the time server (PyPI, in its own venv)."""
    if request.param == "everything":
        tools: NodeTools = request.getfixturevalue("node_tools")
        return Server(
            name="everything",
            command=f"{tools.node} {tools.everything} stdio",
            server_name="mcp-servers/everything",
            call=Call("echo", {"message": "hello mesh"}, "Echo: hello mesh"),
            denied=Call("get-env", {}, "PATH"),
            denied_by="no-env-for-scripts",
            approved=Call("get-sum", {"a": 2, "b": 3}, "5"),
            policy=FIXTURES / "everything.cedar",
        )
    script: Path = request.getfixturevalue("time_server")
    return Server(
        name="time",
        command=f"{script} --local-timezone UTC",
        server_name="mcp-time",
        call=Call("get_current_time", {"timezone": "Asia/Tokyo"}, '"timezone": "Asia/Tokyo"'),
        denied=Call(
            "convert_time", {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}, "21:00"
        ),
        denied_by="no-conversions-for-scripts",
        approved=Call("get_current_time", {"timezone": "UTC"}, '"timezone": "UTC"'),
        policy=FIXTURES / "time.cedar",
    )


async def test_mesh_call_and_the_gateway_reach_the_server_under_its_own_tool_names(
    mesh_env: dict[str, str], server: Server
) -> None:
    gateway_tool = f"{server.name}__{server.call.tool}"
    async with RegistryProcess() as registry, adopted(server, "--registry", registry.base_url):
        arguments = json.dumps(server.call.arguments)
        called = await cli("call", server.name, server.call.tool, "--args", arguments, "--registry", registry.base_url)
        async with gateway(registry.base_url) as client:
            listing = await until(lambda: client.list_tools(), lambda r: gateway_tool in {t.name for t in r.tools})
            result = await client.call_tool(gateway_tool, server.call.arguments)
    assert called.returncode == 0, called.stderr
    assert server.call.answer in called.stdout
    [tool] = [t for t in listing.tools if t.name == gateway_tool]
    assert set(server.call.arguments) <= set(tool.input_schema["properties"])  # the server's own schema
    assert not result.is_error, text_of(result)
    assert server.call.answer in text_of(result)


async def test_a_policy_denies_one_tool_to_one_caller_and_makes_another_wait_for_a_person(
    mesh_env: dict[str, str], server: Server
) -> None:
    approved = server.approved
    async with (
        RegistryProcess() as registry,
        adopted(server, "--registry", registry.base_url, "--policy", str(server.policy)),
        MeshNode("script", registry=registry.base_url) as script,
        MeshNode("ops", registry=registry.base_url) as ops,
        httpx2.AsyncClient(base_url=registry.base_url) as http,
    ):
        await script.settle()
        await ops.settle()
        with pytest.raises(PolicyDenied, match=server.denied_by):
            await script.call(server.name, server.denied.tool, server.denied.arguments)
        allowed = await ops.call(server.name, server.denied.tool, server.denied.arguments)
        outcome: dict[str, Any] = {}
        pending: dict[str, Any] = {}

        async def wait_for_a_person() -> None:
            outcome["answer"] = await script.call(server.name, approved.tool, approved.arguments, timeout=60)

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_for_a_person)
            filed = await until(lambda: get(http, "/api/approvals", status="pending"), bool)
            [first] = filed
            pending.update(first)
            assert "answer" not in outcome  # it waits for the decision
            approver = person_token("alice", "approver")
            decided = await anyio.to_thread.run_sync(
                lambda: cli_as(approver, "approvals", "approve", pending["id"], "--registry", registry.base_url)
            )
            assert decided.returncode == 0, decided.stderr
        trace_id = await trace_with_adapter_span(http, server.name, approved.tool)
        shown = await cli("traces", "show", trace_id, "--json", "--registry", registry.base_url)
    assert server.denied.answer in json.dumps(allowed)  # the same tool, another caller
    assert server.approved.answer in json.dumps(outcome["answer"])
    assert (pending["agent"], pending["tool"], pending["caller"]) == (server.name, approved.tool, "script")
    assert shown.returncode == 0, shown.stderr
    spans = walk(json.loads(shown.stdout)["root"])
    [served] = [s for s in spans if s["agent"] == server.name and s["kind"] == "server"]
    [forwarded] = [s for s in spans if "mesh.adopted.transport" in s["attributes"]]  # the adapter's hop to the child
    assert (forwarded["agent"], forwarded["kind"]) == (server.name, "client")
    assert forwarded["attributes"]["mesh.adopted.transport"] == "stdio"
    assert forwarded["attributes"]["mesh.adopted.server"] == server.server_name
    verdicts = [(d["kind"], d["choice"]) for d in served["decisions"]]
    assert {("policy", "approval"), ("approval", "approved")} <= set(verdicts), verdicts


async def test_a_child_killed_mid_call_fails_those_calls_typed_and_is_started_again(
    mesh_env: dict[str, str], server: Server
) -> None:
    async with adopted(server) as process:
        first = await child_of(process)
        results: list[CallToolResult] = []
        async with sdk_client(process.url) as client:

            async def call() -> None:
                results.append(await client.call_tool(server.call.tool, server.call.arguments))

            # A stopped child reads nothing: each call waits on its way in until the kill, so all are in flight.
            os.kill(first, signal.SIGSTOP)
            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    for _ in range(3):
                        sent = unread_input(first)
                        tg.start_soon(call)
                        await until(lambda: asynced(unread_input(first)), lambda n, sent=sent: n > sent)
                    os.kill(first, signal.SIGKILL)
            second = await child_of(process, other_than=first)
            answer = await until(lambda: client.call_tool(server.call.tool, server.call.arguments), ok)
    assert len(results) == 3
    for failed in results:
        assert failed.is_error
        assert (failed.meta or {}).get(ERROR_META_KEY) == "PeerUnavailable", text_of(failed)
        assert server.server_name in text_of(failed)  # it says which server was lost
    assert second != first
    assert server.call.answer in text_of(answer)
    assert "running again" in process.stderr


# -- helpers -------------------------------------------------------------------------------------


def adopted(server: Server, *args: str) -> MeshProcess:
    """`mesh run --command` of `server` on a free port, owned by `platform`."""
    argv = ["run", "--command", server.command, "--name", server.name, "--port", "0", "--no-mdns"]
    return MeshProcess([*argv, "--meta", "owner=platform", *args], ready_timeout=60)


@asynccontextmanager
async def gateway(registry: str) -> AsyncGenerator[Client]:
    """`mesh gateway` over stdio, as Claude Desktop launches it, driven by the SDK client."""
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mesh", "gateway", "--registry", registry], env={**os.environ}
    )
    async with Client(params, mode="legacy") as client:
        yield client


async def cli(*args: str) -> Any:
    return await anyio.to_thread.run_sync(lambda: mesh_cli(*args))


async def get(http: httpx2.AsyncClient, path: str, **params: str) -> Any:
    """A registry read (no token needed on loopback), as JSON."""
    return (await http.get(path, params=params)).json()


async def trace_with_adapter_span(http: httpx2.AsyncClient, agent: str, tool: str) -> str:
    """The id of the one trace of `agent`'s `tool`, once the adapter's span into the child has arrived."""
    [summary] = await until(lambda: get(http, "/api/traces", agent=agent, tool=tool), lambda found: len(found) == 1)
    trace_id: str = summary["trace_id"]
    await until(
        lambda: get(http, f"/api/traces/{trace_id}"),
        lambda tree: any("mesh.adopted.transport" in s["attributes"] for s in walk(tree["root"])),
    )
    return trace_id


def walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node["children"] for n in walk(child))]


def ok(result: CallToolResult) -> bool:
    return not result.is_error


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


async def child_of(process: MeshProcess, other_than: int | None = None) -> int:
    """The pid of the server `process` adopted (one other than `other_than`, after a restart)."""
    found: set[int] = await until(
        lambda: asynced(child_pids(process.pid) - {other_than or -1}), lambda pids: len(pids) == 1, timeout=60
    )
    return found.pop()


def unread_input(pid: int) -> int:
    """Bytes written to process `pid`'s pipes and sockets that it has not read yet (Linux only).

    Each is counted with FIONREAD on a copy of the child's descriptor from pidfd_getfd(2): the wire
    need not be fd 0 (the SDK moves it aside) and under uvloop it is a socket, which /proc cannot open.
    """
    unread = 0
    pidfd = os.pidfd_open(pid)
    try:
        for entry in Path(f"/proc/{pid}/fd").iterdir():
            if os.readlink(entry).startswith(("pipe:", "socket:")):
                unread += _fionread(pidfd, int(entry.name))
    finally:
        os.close(pidfd)
    return unread


def _fionread(pidfd: int, target: int) -> int:
    fd = _LIBC.syscall(_SYS_PIDFD_GETFD, pidfd, target, 0)
    if fd < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"pidfd_getfd: {os.strerror(errno)}")
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
    except OSError:  # a descriptor that holds no byte stream (a listening socket, say)
        return 0
    finally:
        os.close(fd)


_LIBC = ctypes.CDLL(None, use_errno=True)
_SYS_PIDFD_GETFD = 438  # one number on every architecture (Linux 5.6+)


async def asynced(value: Any) -> Any:
    return value
