"""The caller's call path in one process: routing, failover, retries, circuit breaking, deadlines, the hop.

Agents are the SDK's own `MCPServer`, served in-process by `mesh.testing.InProcessMesh`; the pool,
the directory and the hop client are the real ones.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import LoggingMessageNotification, LoggingMessageNotificationParams, ToolAnnotations

from mesh.errors import DeadlineExceeded, PeerRejected, PeerUnavailable
from mesh.peers.budget import deadline_var
from mesh.peers.directory import Instance
from mesh.peers.notices import sink_var
from mesh.testing import InProcessMesh
from mesh.testing.notices import RecordingNotices
from mesh.wire import BUDGET_META_KEY

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("mesh_env")]


def replica(instance: str, runs: list[tuple[str, str]]) -> MCPServer:
    """One copy of the `crm` agent: every tool records (instance, tool) when it runs."""
    server = MCPServer("crm")

    @server.tool()
    def create(name: str) -> str:
        runs.append((instance, "create"))
        return f"{name} created by {instance}"

    @server.tool(annotations=ToolAnnotations(idempotent_hint=True))
    def upsert(name: str) -> str:
        runs.append((instance, "upsert"))
        return f"{name} upserted by {instance}"

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def lookup(name: str) -> str:
        runs.append((instance, "lookup"))
        return f"{name} found by {instance}"

    @server.tool()
    def budget(ctx: Context) -> int:
        meta: dict[str, Any] = dict(ctx.request_context.meta or {})
        return int(meta[BUDGET_META_KEY])

    return server


async def replicas(mesh: InProcessMesh, names: list[str], runs: list[tuple[str, str]]) -> list[Instance]:
    return [await mesh.serve("crm", replica(name, runs), instance=name) for name in names]


def healthy(mesh: InProcessMesh) -> list[str]:
    return sorted(i.instance for i in mesh.directory.instances("crm"))


async def test_refused_replicas_are_passed_over_in_order_and_then_left_out_of_rotation() -> None:
    runs: list[tuple[str, str]] = []
    async with InProcessMesh() as mesh:
        a, b, _ = await replicas(mesh, ["a", "b", "c"], runs)
        mesh.fault(a, "down")
        mesh.fault(b, "down")
        async with mesh.pool() as pool:
            # Refused connections never reached the tool, so even a non-idempotent one moves on.
            assert await pool.call("crm", "create", {"name": "ada"}) == "ada created by c"
            assert mesh.sent() == ["a", "b", "c"]
            assert healthy(mesh) == ["c"]
            assert await pool.call("crm", "create", {"name": "bob"}) == "bob created by c"
            assert mesh.sent() == ["a", "b", "c", "c"]
            assert sum(pool.after_failure.values()) == 0
        assert runs == [("c", "create"), ("c", "create")]


async def test_no_reachable_replica_is_one_peer_unavailable_naming_the_agent() -> None:
    async with InProcessMesh() as mesh:
        for inst in await replicas(mesh, ["a", "b"], []):
            mesh.fault(inst, "down")
        async with mesh.pool() as pool:
            with pytest.raises(PeerUnavailable, match=r"^no instance of crm could take 'create'"):
                await pool.call("crm", "create", {"name": "ada"})
        assert mesh.sent() == ["a", "b"]
        assert healthy(mesh) == []


@pytest.mark.parametrize(
    ("tool", "retried"),
    [("create", False), ("upsert", True), ("lookup", True)],
    ids=["plain", "idempotent", "read-only"],
)
async def test_a_call_that_may_have_run_is_sent_again_only_when_the_tool_says_a_repeat_is_harmless(
    tool: str, retried: bool
) -> None:
    runs: list[tuple[str, str]] = []
    async with InProcessMesh() as mesh:
        a, _ = await replicas(mesh, ["a", "b"], runs)
        mesh.fault(a, "lose")  # the request runs on `a`; its answer never comes back
        async with mesh.pool() as pool:
            if retried:
                assert (await pool.call("crm", tool, {"name": "ada"})).endswith(" by b")
                assert runs == [("a", tool), ("b", tool)]
            else:
                with pytest.raises(PeerUnavailable, match=r"lost crm mid-call"):
                    await pool.call("crm", tool, {"name": "ada"})
                assert runs == [("a", tool)]
        assert mesh.arrived(a) == 1
        assert healthy(mesh) == ["b"]


async def test_the_circuit_opens_on_a_failure_and_a_probe_closes_it_once_the_instance_answers() -> None:
    from mesh.discovery.feeds import probe

    runs: list[tuple[str, str]] = []
    async with InProcessMesh() as mesh:
        a, _ = await replicas(mesh, ["a", "b"], runs)
        mesh.fault(a, "down")
        async with mesh.pool() as pool:
            assert await pool.call("crm", "lookup", {"name": "ada"}) == "ada found by b"
            opened = mesh.directory.get("crm", "a")
            assert opened is not None
            assert opened.failures == 1
            assert healthy(mesh) == ["b"]
            # Open: calls go to the healthy replica only, never to the one that failed.
            assert await pool.call("crm", "lookup", {"name": "bob"}) == "bob found by b"
            assert pool.after_failure[a.key] == 0

            def only_a(inst: Instance) -> bool:
                return inst.instance == "a"

            # Half-open: a probe asks it directly; still down, it stays out and backs off further.
            await probe(mesh.directory, pool.hop, only_unleased=False, only=only_a, urgent=True)
            still = mesh.directory.get("crm", "a")
            assert still is not None
            assert still.failures == 2
            assert still.down_until > opened.down_until
            assert healthy(mesh) == ["b"]

            mesh.fault(a, "up")
            await probe(mesh.directory, pool.hop, only_unleased=False, only=only_a, urgent=True)
            assert healthy(mesh) == ["a", "b"]
            # Closed again: with no latency known for `a` yet, it takes the next call.
            assert await pool.call("crm", "lookup", {"name": "cy"}) == "cy found by a"
            assert pool.after_failure[a.key] == 1
        assert mesh.sent() == ["a", "b", "b", "a", "a", "a"]


async def test_the_time_left_travels_with_the_call_and_an_inherited_deadline_bounds_it() -> None:
    async with InProcessMesh() as mesh:
        await replicas(mesh, ["a"], [])
        async with mesh.pool(default_timeout=30.0) as pool:
            own = await pool.call("crm", "budget", timeout=2.0)
            assert 0 < own <= 2000
            token = deadline_var.set(time.monotonic() + 5.0)  # this call serves a caller with 5 s left
            try:
                inherited = await pool.call("crm", "budget")
            finally:
                deadline_var.reset(token)
            assert 0 < inherited <= 5000


async def test_a_spent_budget_sends_nothing_and_a_slow_peer_ends_in_deadline_exceeded() -> None:
    release = anyio.Event()
    server = MCPServer("slow")

    @server.tool()
    async def wait() -> str:
        await release.wait()
        return "done"

    async with InProcessMesh() as mesh:
        slow = await mesh.serve("slow", server, instance="s")
        async with mesh.pool() as pool:
            token = deadline_var.set(time.monotonic() - 1.0)
            try:
                with pytest.raises(DeadlineExceeded, match=r"deadline passed before any instance answered"):
                    await pool.call("slow", "wait")
            finally:
                deadline_var.reset(token)
            assert mesh.sent() == []
            with anyio.fail_after(20):
                with pytest.raises(DeadlineExceeded, match=r"gave no answer within its deadline"):
                    await pool.call("slow", "wait", timeout=0.2)
            assert mesh.sent() == ["s"]
            assert mesh.directory.instances("slow") == []  # a timed-out instance is out until it answers
            assert mesh.arrived(slow) == 1
        release.set()


def notifying() -> MCPServer:
    server = MCPServer("notify")

    @server.tool()
    async def work(steps: int, ctx: Context) -> int:
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps, f"step {step}")
        request = ctx.request_context  # a log message on this request's own stream, as agents send them
        said = LoggingMessageNotificationParams(level="info", data="all steps done")
        await request.session.send_notification(
            LoggingMessageNotification(params=said), related_request_id=request.request_id
        )
        return steps

    return server


@pytest.mark.parametrize("json_response", [True, False], ids=["json", "sse"])
async def test_the_hop_reads_the_sdk_servers_json_and_event_stream_answers(json_response: bool) -> None:
    async with InProcessMesh() as mesh:
        inst = await mesh.serve("notify", notifying(), json_response=json_response)
        async with mesh.pool() as pool:
            hop = pool.hop(inst)
            # Unasked, the tool still logs (any MCP server may): the lean path skips that notice in the stream.
            assert (await hop.call_tool("work", {"steps": 2}, timeout=10)).value == 2
            assert [t["name"] for t in await hop.list_tools()] == ["work"]
            with pytest.raises(PeerRejected, match=r"^notify rejected 'no/such' \(.*code -32601\): Method not found$"):
                await hop.request("no/such", {"_meta": hop.envelope()}, timeout=10)

            notices = RecordingNotices(log_level="info")
            token = sink_var.set(notices)
            try:
                assert await pool.call("notify", "work", {"steps": 3}) == 3
            finally:
                sink_var.reset(token)
    if json_response:  # one JSON body has no room for notices: the answer alone comes back
        assert (notices.progress_seen, notices.logs_seen) == ([], [])
    else:
        assert notices.progress_seen == [(1.0, 3.0, "step 1"), (2.0, 3.0, "step 2"), (3.0, 3.0, "step 3")]
        assert [(level, data) for level, data, _ in notices.logs_seen] == [("info", "all steps done")]
