"""Spans are taken only from authenticated senders, and an agent only for itself (issue 21).

The attack: `POST /v1/traces` took any batch from anyone (open to the network with `--lan`), so
a forged span carrying a `policy → allow` decision, grafted onto a real trace, showed in
`mesh traces show` as if the callee's policy had allowed a call; and an agent could write spans
in another agent's name. Now a POST needs a mesh token for the spans audience: an agent's token
sends spans of its own service only, an admin's any, a client's or approver's none.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from google.rpc.status_pb2 import Status
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mesh.identity import MeshKeys
from mesh.runtime.http import bind, serve
from mesh.runtime.node import MeshNode
from mesh.testing import AgentProcess, RegistryProcess
from mesh.tracing.export import SPANS_AUDIENCE
from mesh.wire import SpanEventRecord, SpanRecord
from registry.otlp import encode_spans
from tests.integration.helpers import mesh_cli, sdk_client, until

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

RELAY = str(Path(__file__).resolve().parents[1] / "integration" / "fixtures" / "relay.py")
PROTOBUF = {"content-type": "application/x-protobuf"}


def forged_allow(trace_id: str, parent_id: str | None, agent: str = "kb", tool: str = "wire_funds") -> SpanRecord:
    """A span of `agent` saying its policy allowed `tool`, to be grafted under `parent_id`."""
    allow = {"mesh.decision.kind": "policy", "mesh.decision.choice": "allow", "mesh.policy.side": "callee"}
    return SpanRecord(
        trace_id=trace_id,
        span_id="f0f0f0f0f0f0f0f0" if tool == "wire_funds" else "c0c0c0c0c0c0c0c0",
        parent_id=parent_id,
        name=f"tools/call {tool}",
        kind="server",
        agent=agent,
        start_ns=1_700_000_000_000_000_000,
        end_ns=1_700_000_000_001_000_000,
        events=[SpanEventRecord(name="mesh.decision", time_ns=1_700_000_000_000_500_000, attributes=allow)],
    )


def spans_token(caller: str, **options: Any) -> dict[str, str]:
    """The header of a token of this test's mesh for the spans audience."""
    return {"authorization": f"Bearer {MeshKeys.load().mint(caller, SPANS_AUDIENCE, **options)}"}


async def test_spans_without_a_token_of_this_mesh_or_from_a_client_are_refused_and_never_stored(
    mesh_env: dict[str, str],
) -> None:
    trace_id = "ab" * 16
    batch = encode_spans([forged_allow(trace_id, None)])
    other_mesh = MeshKeys(b"another secret", "another-mesh").mint("kb", SPANS_AUDIENCE)
    async with RegistryProcess() as registry, httpx2.AsyncClient(base_url=registry.base_url) as http:
        anonymous = await http.post("/v1/traces", content=batch, headers=PROTOBUF)
        foreign = await http.post(
            "/v1/traces", content=batch, headers={**PROTOBUF, "authorization": f"Bearer {other_mesh}"}
        )
        client = await http.post(
            "/v1/traces", content=batch, headers={**PROTOBUF, **spans_token("ann", role="client", person="ann")}
        )
        stored = await http.get(f"/api/traces/{trace_id}")
        operator = await http.post("/v1/traces", content=batch, headers={**PROTOBUF, **spans_token("op", role="admin")})
        stored_by_operator = await http.get(f"/api/traces/{trace_id}")
    assert anonymous.status_code == 401
    assert "no mesh token" in Status.FromString(anonymous.content).message
    assert foreign.status_code == 401
    assert "another-mesh" in Status.FromString(foreign.content).message
    assert client.status_code == 403
    assert stored.status_code == 404
    assert operator.status_code == 200  # the operator (and a sidecar tracer forwarding) sends anyone's
    assert stored_by_operator.json()["span_count"] == 1


async def test_an_agent_cannot_graft_a_decision_onto_another_agents_trace_but_its_own_spans_arrive(
    mesh_env: dict[str, str],
) -> None:
    async with (
        RegistryProcess() as registry,
        AgentProcess(RELAY, "--name", "kb", "--registry", registry.base_url),
        MeshNode("client", registry=registry.base_url) as node,
        httpx2.AsyncClient(base_url=registry.base_url) as http,
    ):
        await node.settle()
        assert await node.call("kb", "relay", {"text": "t"}) == "t>kb"

        async def traces() -> list[dict[str, Any]]:
            return (await http.get("/api/traces", params={"agent": "kb"})).json()

        [summary] = await until(traces, lambda found: len(found) == 1)
        trace_id = summary["trace_id"]
        listed = await anyio.to_thread.run_sync(lambda: mesh_cli("traces", "ls", "--registry", registry.base_url))
        real = (await http.get(f"/api/traces/{trace_id}")).json()
        root = real["root"]["span_id"]

        forged = encode_spans([forged_allow(trace_id, root)])
        grafted = await http.post("/v1/traces", content=forged, headers={**PROTOBUF, **spans_token("crm")})
        own = encode_spans([forged_allow(trace_id, root, agent="crm", tool="lookup")])
        legitimate = await http.post("/v1/traces", content=own, headers={**PROTOBUF, **spans_token("crm")})
        after = (await http.get(f"/api/traces/{trace_id}")).json()
        shown = await anyio.to_thread.run_sync(
            lambda: mesh_cli("traces", "show", trace_id, "--registry", registry.base_url)
        )
    assert trace_id[:16] in listed.stdout  # the agent's real spans arrived, with its own token
    assert grafted.status_code == 403
    assert "spans of service 'kb'" in Status.FromString(grafted.content).message
    assert legitimate.status_code == 200  # crm's token still sends crm's spans
    assert after["span_count"] == real["span_count"] + 1
    assert [node["name"] for node in _walk(after["root"]) if node["agent"] == "kb"] == ["tools/call relay"]
    assert shown.returncode == 0, shown.stderr
    assert "relay" in shown.stdout
    assert "lookup" in shown.stdout
    assert "wire_funds" not in shown.stdout


async def test_an_agent_sends_no_mesh_token_to_the_users_own_otlp_endpoint(mesh_env: dict[str, str]) -> None:
    async with backend() as (url, received), RegistryProcess() as registry:
        env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": url}
        async with (
            AgentProcess(RELAY, "--name", "kb", "--registry", registry.base_url, env=env) as agent,
            sdk_client(agent.url) as client,
        ):
            await client.call_tool("relay", {"text": "t"})
            with anyio.fail_after(20):
                await received.wait()
        assert received.headers
        assert all(headers.get("authorization") is None for headers in received.headers)


class Received:
    """What the user's own OTLP endpoint got: each request's headers."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self._got = anyio.Event()

    def add(self, headers: dict[str, str]) -> None:
        self.headers.append(headers)
        self._got.set()

    async def wait(self) -> None:
        await self._got.wait()


@asynccontextmanager
async def backend() -> AsyncGenerator[tuple[str, Received]]:
    """An OTLP/HTTP endpoint of the user's (not of the mesh) that takes everything and keeps the headers."""
    received = Received()

    async def traces(request: Request) -> Response:
        received.add(dict(request.headers))
        return Response(b"", media_type="application/x-protobuf")

    sock = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/traces"
    async with anyio.create_task_group() as tg:
        tg.start_soon(serve, Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])]), sock)
        try:
            yield url, received
        finally:
            tg.cancel_scope.cancel()


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node["children"] for n in _walk(child))]
