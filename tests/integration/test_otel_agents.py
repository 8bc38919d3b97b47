"""Agents' telemetry plugs into OpenTelemetry: the stock SDK provider stitches the same trace, the console
exporter prints beside the mesh's export, and a user's own span processor gets every span."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mesh.runtime.node import MeshNode
from mesh.testing import AgentProcess, RegistryProcess
from tests.integration.helpers import until

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RELAY = str(FIXTURES / "relay.py")
EXPORTING = str(FIXTURES / "relay_exporting.py")
FAST = {"OTEL_BSP_SCHEDULE_DELAY": "200"}


async def _traces(base: str, **params: str) -> list[dict[str, Any]]:
    async with httpx2.AsyncClient(base_url=base) as http:
        return (await http.get("/api/traces", params=params)).json()


async def _tree(base: str, trace_id: str) -> dict[str, Any]:
    async with httpx2.AsyncClient(base_url=base) as http:
        return (await http.get(f"/api/traces/{trace_id}")).json()


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node["children"] for n in _walk(child))]


@pytest.mark.parametrize("providers", [("sdk", "sdk", "sdk"), ("sdk", "mesh", "sdk")], ids=["sdk", "mixed"])
async def test_with_the_stock_sdk_provider_a_chain_is_one_complete_trace(
    mesh_env: dict[str, str], providers: tuple[str, str, str]
) -> None:
    a, b, c = ({"MESH_TRACING": mode, **FAST} for mode in providers)
    async with (
        RegistryProcess() as registry,
        AgentProcess(RELAY, "--name", "c", "--registry", registry.base_url, env=c),
        AgentProcess(RELAY, "--name", "b", "--meta", "next=c", "--registry", registry.base_url, env=b),
        AgentProcess(RELAY, "--name", "a", "--meta", "next=b", "--registry", registry.base_url, env=a),
        MeshNode("client", registry=registry.base_url) as node,
    ):
        await node.settle()
        assert await node.call("a", "relay", {"text": "t"}) == "t>a>b>c"
        [summary] = await until(
            lambda: _traces(registry.base_url, agent="a"), lambda found: len(found) == 1 and found[0]["span_count"] == 5
        )
        tree = await _tree(registry.base_url, summary["trace_id"])
    assert tree["complete"] is True
    nodes = _walk(tree["root"])
    assert [(n["agent"], n["kind"]) for n in nodes] == [
        ("a", "server"), ("a", "client"), ("b", "server"), ("b", "client"), ("c", "server"),
    ]  # fmt: skip
    for parent, child in itertools.pairwise(nodes):
        assert child["parent_id"] == parent["span_id"]
    routes = [(n["agent"], d["choice"]) for n in nodes for d in n["decisions"] if d["kind"] == "route"]
    assert ("a", "b") in routes
    assert ("c", "answer") in routes
    assert len([d for n in nodes for d in n["decisions"] if d["kind"] == "policy"]) == 5


async def test_otlp_and_console_print_the_spans_and_still_send_them_to_the_registry(mesh_env: dict[str, str]) -> None:
    env = {"OTEL_TRACES_EXPORTER": "otlp,console", **FAST}
    async with (
        RegistryProcess() as registry,
        AgentProcess(RELAY, "--name", "solo", "--registry", registry.base_url, env=env) as agent,
        MeshNode("client", registry=registry.base_url) as node,
    ):
        await node.settle()
        assert await node.call("solo", "relay", {"text": "t"}) == "t>solo"
        [summary] = await until(lambda: _traces(registry.base_url, agent="solo"), lambda found: len(found) == 1)
        printed = await until(
            lambda: _printed(agent), lambda spans: any(s["name"] == "tools/call relay" for s in spans)
        )
    server = next(s for s in printed if s["name"] == "tools/call relay")
    assert server["kind"] == "SpanKind.SERVER"
    assert server["context"]["trace_id"] == f"0x{summary['trace_id']}"
    assert server["resource"]["attributes"]["service.name"] == "solo"
    assert any(e["name"] == "mesh.decision" for e in server["events"])


async def test_a_users_batch_span_processor_gets_every_span_the_registry_stores(
    mesh_env: dict[str, str], tmp_path: Path
) -> None:
    spans_file = tmp_path / "spans.jsonl"
    async with (
        RegistryProcess() as registry,
        AgentProcess(EXPORTING, "--name", "leaf", "--registry", registry.base_url, env={"SPANS_FILE": str(spans_file)}),
        AgentProcess(RELAY, "--name", "front", "--meta", "next=leaf", "--registry", registry.base_url),
        MeshNode("client", registry=registry.base_url) as node,
    ):
        await node.settle()
        for n in range(5):
            assert await node.call("front", "relay", {"text": str(n)}) == f"{n}>front>leaf"
        found = await until(
            lambda: _traces(registry.base_url, agent="front"),
            lambda found: len(found) == 5 and all(t["span_count"] == 3 for t in found),
        )
        stored = [n for t in found for n in _walk((await _tree(registry.base_url, t["trace_id"]))["root"])]
        leaf = {n["span_id"] for n in stored if n["agent"] == "leaf"}
        written = await until(lambda: _lines(spans_file), lambda lines: leaf <= {line["span_id"] for line in lines})
    assert len(leaf) == 5
    mine = [line for line in written if line["span_id"] in leaf]
    assert all(line["service"] == "leaf" and line["name"] == "tools/call relay" for line in mine)
    assert all("mesh.decision" in line["decisions"] for line in mine)  # the agent's decisions too


async def _printed(agent: AgentProcess) -> list[dict[str, Any]]:
    """The span objects the console exporter has printed on the agent's stderr so far."""
    await anyio.lowlevel.checkpoint()
    text, decoder, found = agent.stderr, json.JSONDecoder(), []
    at = text.find("{")
    while at >= 0:
        try:
            value, end = decoder.raw_decode(text, at)
        except ValueError:  # a span still being written
            break
        if isinstance(value, dict) and "context" in value:
            found.append(value)
        at = text.find("{", end)
    return found


async def _lines(path: Path) -> list[dict[str, Any]]:
    """The records the user's exporter has written so far."""
    text = await anyio.Path(path).read_text() if await anyio.Path(path).exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]
