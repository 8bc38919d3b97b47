"""Decision traces: one stitched tree per call chain, durable through a tracer outage, honest about gaps."""

from __future__ import annotations

import itertools
import json
import os
import signal
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mesh.errors import MeshError
from mesh.identity import MeshKeys
from mesh.runtime.node import MeshNode
from mesh.testing import AgentProcess, MeshProcess, RegistryProcess, free_port
from mesh.tracing.export import SPANS_AUDIENCE
from tests.integration.helpers import child_pids, mesh_cli, until

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

RELAY = str(Path(__file__).resolve().parent / "fixtures" / "relay.py")


async def _traces(base: str, **params: str) -> list[dict[str, Any]]:
    async with httpx2.AsyncClient(base_url=base) as http:
        return (await http.get("/api/traces", params=params)).json()


async def _tree(base: str, trace_id: str) -> dict[str, Any]:
    async with httpx2.AsyncClient(base_url=base) as http:
        return (await http.get(f"/api/traces/{trace_id}")).json()


def _admin() -> dict[str, str]:
    """The header of an admin token of this test's mesh for sending spans, as the operator sends them."""
    return {"authorization": f"Bearer {MeshKeys.load().mint('operator', SPANS_AUDIENCE, role='admin')}"}


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node["children"] for n in _walk(child))]


async def test_a_chain_becomes_one_complete_trace_with_its_decisions(mesh_env: dict[str, str]) -> None:
    async with (
        RegistryProcess() as registry,
        AgentProcess(RELAY, "--name", "c", "--registry", registry.base_url),
        AgentProcess(RELAY, "--name", "b", "--meta", "next=c", "--registry", registry.base_url),
        AgentProcess(RELAY, "--name", "a", "--meta", "next=b", "--registry", registry.base_url),
        MeshNode("client", registry=registry.base_url) as node,
    ):
        await node.settle()
        assert await node.call("a", "relay", {"text": "t"}) == "t>a>b>c"
        [summary] = await until(
            lambda: _traces(registry.base_url, agent="a"), lambda found: len(found) == 1 and found[0]["span_count"] == 5
        )
        tree = await _tree(registry.base_url, summary["trace_id"])
        listed = await anyio.to_thread.run_sync(
            lambda: mesh_cli("traces", "ls", "--agent", "c", "--json", "--registry", registry.base_url)
        )
        table = await anyio.to_thread.run_sync(lambda: mesh_cli("traces", "ls", "--registry", registry.base_url))
        shown = await anyio.to_thread.run_sync(  # by the start of its id, as a narrow `ls` shows it
            lambda: mesh_cli("traces", "show", summary["trace_id"][:16], "--registry", registry.base_url)
        )
        unknown = await anyio.to_thread.run_sync(
            lambda: mesh_cli("traces", "show", "0" * 32, "--registry", registry.base_url)
        )
    assert [t["trace_id"] for t in json.loads(listed.stdout)] == [summary["trace_id"]]
    assert summary["trace_id"][:16] in table.stdout  # not a terminal: 80 columns
    assert summary["trace_id"] not in table.stdout
    assert shown.returncode == 0, shown.stderr
    assert f"trace {summary['trace_id']}" in shown.stdout
    assert "decision route → b" in shown.stdout
    assert unknown.returncode != 0
    assert unknown.stderr.startswith("mesh: error: ")
    assert unknown.stderr.count("\n") == 1
    assert tree["complete"] is True
    assert summary["root"] == {"agent": "a", "tool": "relay"}
    assert sorted(summary["agents"]) == ["a", "b", "c"]
    nodes = _walk(tree["root"])
    assert [(n["agent"], n["kind"]) for n in nodes] == [
        ("a", "server"), ("a", "client"), ("b", "server"), ("b", "client"), ("c", "server"),
    ]  # fmt: skip
    for parent, child in itertools.pairwise(nodes):
        assert child["parent_id"] == parent["span_id"]
        assert child["start"] >= parent["start"]
    routes = [(n["agent"], d["choice"]) for n in nodes for d in n["decisions"] if d["kind"] == "route"]
    assert ("a", "b") in routes  # the agent's own decision, on its server span
    assert ("c", "answer") in routes
    policies = [d for n in nodes for d in n["decisions"] if d["kind"] == "policy"]
    assert len(policies) == 5  # both ends of the two inner hops, and the callee end of the first


async def test_a_tracer_outage_loses_no_span(mesh_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "tracer.sqlite3"
    tracer_args = ["tracer", "--port", str(port), "--db", str(db), "--no-mdns"]
    env = {"MESH_TRACER": f"http://127.0.0.1:{port}"}
    async with (
        AgentProcess(RELAY, "--name", "leaf", env=env),
        AgentProcess(RELAY, "--name", "root", "--meta", "next=leaf", env=env) as root,
        MeshNode("client") as node,
    ):
        del root
        await node.settle()
        async with MeshProcess(tracer_args) as tracer:
            await node.call("root", "relay", {"text": "before"})
            await until(lambda: _traces(tracer.base_url), lambda found: len(found) == 1)
        for n in range(10):  # the tracer is down: spans go to the spool
            await node.call("root", "relay", {"text": f"during {n}"})
        listed = await until(  # and `mesh ls` says so
            lambda: anyio.to_thread.run_sync(lambda: json.loads(mesh_cli("ls", "--json", "--wait", "3").stdout)),
            lambda views: any(v["name"] == "root" and (v["spans"] or {}).get("pending_batches") for v in views),
        )
        async with MeshProcess(tracer_args) as tracer:
            found = await until(
                lambda: _traces(tracer.base_url, limit="100"),
                lambda found: len(found) == 11 and all(t["span_count"] == 3 for t in found),
            )
    assert len({t["trace_id"] for t in found}) == 11
    assert all(v["spans"]["dropped_spans"] == 0 for v in listed if v["name"] in ("root", "leaf"))


async def test_a_killed_callee_leaves_an_incomplete_trace(mesh_env: dict[str, str]) -> None:
    async with (
        RegistryProcess() as registry,
        AgentProcess(RELAY, "--name", "victim", "--registry", registry.base_url) as victim,
        AgentProcess(RELAY, "--name", "front", "--meta", "next=victim", "--registry", registry.base_url),
        MeshNode("client", registry=registry.base_url) as node,
    ):
        await node.settle()
        await node.call("front", "relay", {"text": "ok"})
        victim.signal(signal.SIGKILL)
        with pytest.raises(MeshError):
            await node.call("front", "relay", {"text": "lost"}, timeout=5)
        [failed] = await until(lambda: _traces(registry.base_url, status="error"), lambda found: len(found) == 1)
        tree = await _tree(registry.base_url, failed["trace_id"])
    assert tree["complete"] is False
    assert any("has no server span" in reason for reason in tree["incomplete_reasons"])
    client = next(n for n in _walk(tree["root"]) if n["kind"] == "client")
    assert client["status"] == "error"
    assert client["children"] == []


async def test_malformed_otlp_is_refused_and_redelivery_never_duplicates(mesh_env: dict[str, str]) -> None:
    from mesh.wire import SpanRecord
    from registry.otlp import encode_spans

    span = SpanRecord(
        trace_id="ab" * 16, span_id="cd" * 8, name="tools/call x", kind="server", agent="x", start_ns=1, end_ns=2
    )
    batch = encode_spans([span])
    async with RegistryProcess() as registry, httpx2.AsyncClient(base_url=registry.base_url, headers=_admin()) as http:
        garbage = await http.post(
            "/v1/traces", content=b"\x0a\xff\xff", headers={"content-type": "application/x-protobuf"}
        )
        bad_json = await http.post(
            "/v1/traces", content=b'{"resourceSpans": 5}', headers={"content-type": "application/json"}
        )
        first = await http.post("/v1/traces", content=batch, headers={"content-type": "application/x-protobuf"})
        again = await http.post("/v1/traces", content=batch, headers={"content-type": "application/x-protobuf"})
        stored = (await http.get(f"/api/traces/{'ab' * 16}")).json()
        stats = (await http.get("/api/tracer/stats")).json()
    assert garbage.status_code == 400
    assert bad_json.status_code == 400
    assert "\n" not in garbage.text.strip()
    assert first.status_code == again.status_code == 200
    assert stored["span_count"] == 1
    assert stats["duplicates"] == 1
    assert json.loads(json.dumps(stats))["stored"] == 1


async def test_a_tracer_killed_mid_ingest_keeps_what_it_acknowledged_and_leaves_no_worker(
    mesh_env: dict[str, str], tmp_path: Path
) -> None:
    from mesh.wire import SpanRecord
    from registry.otlp import encode_spans

    batches = [
        encode_spans(
            SpanRecord(
                trace_id=f"{batch + 1:032x}",
                span_id=f"{n + 1:016x}",
                name="tools/call x",
                kind="server",
                agent="x",
                start_ns=1_700_000_000_000_000_000 + n,
                end_ns=1_700_000_000_000_000_000 + n + 1,
            )
            for n in range(200)
        )
        for batch in range(60)
    ]
    port = free_port()
    tracer_args = ["tracer", "--port", str(port), "--db", str(tmp_path / "tracer.sqlite3"), "--no-mdns"]
    acknowledged: list[int] = []
    async with MeshProcess(tracer_args) as tracer:
        workers = await until(lambda: anyio.to_thread.run_sync(child_pids, tracer.pid), lambda found: len(found) == 2)

        async def send(batch: int) -> None:
            async with httpx2.AsyncClient(base_url=tracer.base_url, timeout=10, headers=_admin()) as http:
                try:
                    answer = await http.post(
                        "/v1/traces", content=batches[batch], headers={"content-type": "application/x-protobuf"}
                    )
                except httpx2.TransportError:  # killed before it answered: not acknowledged
                    return
                if answer.status_code == 200:
                    acknowledged.append(batch)

        async with anyio.create_task_group() as tg:
            for batch in range(len(batches)):
                tg.start_soon(send, batch)
                if batch == 30:
                    await tracer.stop(signal.SIGKILL)
                await anyio.sleep(0.01)
        gone = await until(
            lambda: anyio.to_thread.run_sync(lambda: {pid for pid in workers if Path(f"/proc/{pid}").exists()}),
            lambda alive: not alive,
            timeout=10,
        )
    assert gone == set()
    assert acknowledged
    async with MeshProcess(tracer_args) as tracer, httpx2.AsyncClient(base_url=tracer.base_url) as http:
        for batch in acknowledged:
            stored = (await http.get(f"/api/traces/{batch + 1:032x}")).json()
            assert stored["span_count"] == 200, batch


async def test_a_tracers_ingest_workers_run_at_a_lower_priority_than_it(tmp_path: Path) -> None:
    # Agents on the same host serve calls first; storing spans takes what is left of the cores.
    from registry.ingest_worker import NICENESS

    port = free_port()
    async with MeshProcess(["tracer", "--port", str(port), "--db", str(tmp_path / "t.sqlite3"), "--no-mdns"]) as tracer:
        workers = await until(lambda: anyio.to_thread.run_sync(child_pids, tracer.pid), lambda found: len(found) == 2)
        expected = [min(os.getpriority(os.PRIO_PROCESS, tracer.pid) + NICENESS, 19)] * 2

        async def priorities() -> list[int]:  # a worker lowers its own as it starts
            return [os.getpriority(os.PRIO_PROCESS, pid) for pid in workers]

        assert await until(priorities, lambda found: found == expected, timeout=10) == expected
