"""The span intake on a real MCPServer app, driven in process: OTLP in, queries and MCP tools out."""

from __future__ import annotations

import gzip
import json
import os
import signal
import sys
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from google.rpc.status_pb2 import Status
from mcp import Client
from mcp.server.mcpserver import MCPServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

from mesh.discovery.proof import bound
from mesh.identity import MeshKeys, Role
from mesh.tracing.export import SPANS_AUDIENCE
from mesh.wire import SpanEventRecord, SpanRecord, TraceSummary, TraceTree
from registry.otlp import decode_protobuf, encode_json, encode_spans
from registry.span_intake import SpanIntake, install_span_intake
from registry.trace_api import parse_since
from registry.trace_stores import TraceStore, open_trace_store
from registry.tracestore import SqliteTraceStore
from tests.integration.helpers import child_pids

KEYS = MeshKeys(b"tracer-test-secret", "tracer-test")
ADMIN = {"authorization": f"Bearer {KEYS.mint('operator', SPANS_AUDIENCE, 3600, role='admin')}"}
PROTOBUF = {"content-type": "application/x-protobuf"}
JSON = {"content-type": "application/json"}
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def spans() -> list[SpanRecord]:
    decision = SpanEventRecord(
        name="mesh.decision",
        time_ns=T0 + 20 * MS,
        attributes={
            "mesh.decision.kind": "route",
            "mesh.decision.choice": "billing",
            "mesh.decision.alternatives": ["billing", "tech"],
            "mesh.decision.reason": "invoice keyword",
            "mesh.decision.confidence": 0.82,
        },
    )
    common: dict[str, Any] = {"trace_id": TRACE, "status": "ok"}
    return [
        SpanRecord(
            span_id="00000000000000a1",
            name="MCP send tools/call triage",
            kind="client",
            agent="client",
            start_ns=T0,
            end_ns=T0 + 100 * MS,
            **common,
        ),
        SpanRecord(
            span_id="00000000000000b1",
            parent_id="00000000000000a1",
            name="tools/call triage",
            kind="server",
            agent="support-triage",
            start_ns=T0 + 10 * MS,
            end_ns=T0 + 90 * MS,
            events=[decision],
            **common,
        ),
    ]


def app_of(server: MCPServer) -> Starlette:
    return server.streamable_http_app(json_response=True)


@dataclass(frozen=True)
class Lanes:
    """Where an intake stores: a thread of its own process, or ingest worker processes."""

    store: Callable[[], TraceStore]
    writers: int


@pytest.fixture(params=["thread", "workers", "postgres"])
def lanes(request: pytest.FixtureRequest, tmp_path: Path) -> Lanes:
    if request.param == "thread":
        return Lanes(lambda: SqliteTraceStore(":memory:"), 0)
    if request.param == "postgres":  # ingest workers writing one PostgreSQL database
        url: str = request.getfixturevalue("pg_url")
        return Lanes(lambda: open_trace_store(url, tmp_path), 2)
    return Lanes(lambda: SqliteTraceStore(tmp_path / "traces.sqlite3"), 2)


THREAD = Lanes(lambda: SqliteTraceStore(":memory:"), 0)


@asynccontextmanager
async def running(
    lanes: Lanes = THREAD, intake_options: dict[str, Any] | None = None
) -> AsyncGenerator[tuple[httpx2.AsyncClient, SpanIntake]]:
    """An intake app with its lifespan running, and a client that talks to it in process."""
    store = lanes.store()
    holder: list[SpanIntake] = []

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncGenerator[None]:
        async with holder[0]:
            yield

    server = MCPServer("tracer-test", lifespan=lifespan)
    holder.append(install_span_intake(server, store, keys=KEYS, writers=lanes.writers, **(intake_options or {})))
    app = app_of(server)
    transport = httpx2.ASGITransport(app=app)
    with anyio.fail_after(30):
        async with (
            app.router.lifespan_context(app),
            httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1", headers=ADMIN) as client,
        ):
            yield client, holder[0]
    store.close()


@pytest.mark.anyio
async def test_a_protobuf_batch_is_acknowledged_then_listed_and_shown(lanes: Lanes) -> None:
    async with running(lanes) as (client, intake):
        answer = await client.post("/v1/traces", content=encode_spans(spans()), headers=PROTOBUF)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/x-protobuf"
        ExportTraceServiceResponse.FromString(answer.content)
        assert intake.store.span_count() == 2

        (summary,) = [TraceSummary.model_validate(row) for row in (await client.get("/api/traces")).json()]
        assert (summary.trace_id, summary.root.agent, summary.root.tool) == (TRACE, "client", "triage")
        assert summary.agents == ["client", "support-triage"]

        tree = TraceTree.model_validate_json((await client.get(f"/api/traces/{TRACE}")).content)
        assert tree.complete
        (server_span,) = tree.root.children
        assert [d.choice for d in server_span.decisions] == ["billing"]


@pytest.mark.anyio
async def test_a_json_batch_gets_a_json_answer(lanes: Lanes) -> None:
    async with running(lanes) as (client, intake):
        answer = await client.post("/v1/traces", content=encode_json(spans()), headers=JSON)
        assert (answer.status_code, answer.json()) == (200, {})
        assert intake.store.span_count() == 2


@pytest.mark.anyio
async def test_a_gzipped_batch_is_accepted(lanes: Lanes) -> None:
    async with running(lanes) as (client, intake):
        body = gzip.compress(encode_spans(spans()))
        answer = await client.post("/v1/traces", content=body, headers={**PROTOBUF, "content-encoding": "gzip"})
        assert answer.status_code == 200
        assert intake.store.span_count() == 2


@pytest.mark.anyio
async def test_a_redelivered_batch_is_acknowledged_and_never_duplicated(lanes: Lanes) -> None:
    async with running(lanes) as (client, intake):
        for _ in range(3):
            answer = await client.post("/v1/traces", content=encode_spans(spans()), headers=PROTOBUF)
            assert answer.status_code == 200
        assert intake.store.span_count() == 2
        stats = (await client.get("/api/tracer/stats")).json()
        assert (stats["received"], stats["stored"], stats["duplicates"]) == (6, 2, 4)


@pytest.mark.anyio
async def test_malformed_protobuf_gets_400_and_harms_nothing(lanes: Lanes) -> None:
    async with running(lanes) as (client, intake):
        await client.post("/v1/traces", content=encode_spans(spans()), headers=PROTOBUF)
        answer = await client.post("/v1/traces", content=b"\xff\xff\xff", headers=PROTOBUF)
        assert answer.status_code == 400
        assert "malformed OTLP protobuf" in Status.FromString(answer.content).message
        assert intake.store.span_count() == 2
        assert intake.stats.rejected == 1


@pytest.mark.anyio
async def test_malformed_json_gets_400_with_a_one_line_message_and_harms_nothing(lanes: Lanes) -> None:
    async with running(lanes) as (client, intake):
        bad = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "abc", "spanId": "1"}]}]}]})
        answer = await client.post("/v1/traces", content=bad, headers=JSON)
        assert answer.status_code == 400
        message = answer.json()["message"]
        assert "traceId" in message
        assert "\n" not in message
        assert intake.store.span_count() == 0


@pytest.mark.anyio
async def test_a_good_batch_beside_a_bad_one_is_still_stored(lanes: Lanes) -> None:
    async with running(lanes) as (client, intake):
        answers: dict[str, int] = {}

        async def post(name: str, body: bytes, headers: dict[str, str]) -> None:
            answers[name] = (await client.post("/v1/traces", content=body, headers=headers)).status_code

        async with anyio.create_task_group() as tg:
            tg.start_soon(post, "bad", b"{oops", JSON)
            tg.start_soon(post, "good", encode_spans(spans()), PROTOBUF)
        assert answers == {"bad": 400, "good": 200}
        assert intake.store.span_count() == 2


@pytest.mark.anyio
async def test_refusals_for_content_type_size_and_encoding() -> None:
    async with running(intake_options={"max_body_bytes": 100}) as (client, intake):
        assert (
            await client.post("/v1/traces", content=b"x", headers={"content-type": "text/plain"})
        ).status_code == 415
        big = await client.post("/v1/traces", content=encode_spans(spans()), headers=PROTOBUF)
        assert big.status_code == 413
        bomb = gzip.compress(b"\0" * 10_000)
        inflated = await client.post("/v1/traces", content=bomb, headers={**PROTOBUF, "content-encoding": "gzip"})
        assert inflated.status_code == 413
        broken = await client.post("/v1/traces", content=b"nope", headers={**PROTOBUF, "content-encoding": "gzip"})
        assert broken.status_code == 400
        brotli = await client.post("/v1/traces", content=b"x", headers={**PROTOBUF, "content-encoding": "br"})
        assert brotli.status_code == 415
        assert intake.store.span_count() == 0


@pytest.mark.anyio
async def test_a_full_intake_pushes_back_with_429_and_retry_after() -> None:
    async with running(intake_options={"max_pending": 0}) as (client, intake):
        answer = await client.post("/v1/traces", content=encode_spans(spans()), headers=PROTOBUF)
        assert (answer.status_code, answer.headers["retry-after"]) == (429, "1")
        assert intake.stats.throttled == 1
        assert intake.store.span_count() == 0


def bearer(token: str) -> dict[str, str]:
    """The header that sends `token` (in place of the test client's admin token)."""
    return {"authorization": f"Bearer {token}"}


def policy_span(span_id: str, choice: str, **attributes: Any) -> SpanRecord:
    """A server span of `support-triage` whose policy decided `choice` (and routed, which is no policy)."""
    policy = {
        "mesh.decision.kind": "policy",
        "mesh.decision.choice": choice,
        "mesh.decision.reason": f"rule says {choice}",
        "mesh.policy.side": "callee",
        "mesh.policy.ids": ["p1", "p2"],
    }
    route = {"mesh.decision.kind": "route", "mesh.decision.choice": "deny"}
    return SpanRecord(
        trace_id=TRACE,
        span_id=span_id,
        name="tools/call refund",
        kind="server",
        agent="support-triage",
        start_ns=T0,
        end_ns=T0 + MS,
        attributes={"gen_ai.tool.name": "refund", "mesh.caller": "front", **attributes},
        events=[
            SpanEventRecord(name="mesh.decision", time_ns=T0 + MS // 2, attributes=route),
            SpanEventRecord(name="mesh.decision", time_ns=T0 + MS // 2, attributes=policy),
        ],
    )


@pytest.mark.anyio
async def test_a_batch_without_a_live_token_of_this_mesh_gets_401_and_stores_nothing(lanes: Lanes) -> None:
    other_mesh = MeshKeys(b"tracer-test-secret", "another-mesh").mint("operator", SPANS_AUDIENCE, role="admin")
    expired = KEYS.mint("operator", SPANS_AUDIENCE, 60, role="admin", now=T0 / 1e9)
    forged = KEYS.mint("operator", SPANS_AUDIENCE, role="admin")[:-4] + "AAAA"
    wrong_audience = KEYS.mint("operator", "registry", role="admin")
    async with running(lanes) as (client, intake):
        refusals = [
            await client.post("/v1/traces", content=encode_spans(spans()), headers={**PROTOBUF, **headers})
            for headers in (
                {"authorization": ""},
                {"authorization": "Basic b3A6cHc="},
                bearer(other_mesh),
                bearer(expired),
                bearer(forged),
                bearer(wrong_audience),
            )
        ]
        anonymous = client.build_request("POST", "/v1/traces", content=encode_json(spans()), headers=JSON)
        del anonymous.headers["authorization"]
        unauthenticated = await client.send(anonymous)
        assert intake.store.span_count() == 0
        assert intake.stats.unauthorized == 7
    assert [answer.status_code for answer in refusals] == [401] * 6
    assert all(answer.headers["www-authenticate"].startswith("Bearer") for answer in refusals)
    messages = [Status.FromString(answer.content).message for answer in refusals]
    assert all(message and "\n" not in message for message in messages)
    assert "mesh 'another-mesh'" in messages[2]
    assert "expired" in messages[3]
    assert (unauthenticated.status_code, unauthenticated.json()["code"]) == (401, 16)
    assert "no mesh token" in unauthenticated.json()["message"]


@pytest.mark.anyio
@pytest.mark.parametrize("role", ["client", "approver"])
async def test_a_client_or_approver_token_may_not_send_spans(role: Role) -> None:
    token = KEYS.mint("support-triage", SPANS_AUDIENCE, role=role, person="ann")
    async with running() as (client, intake):
        answer = await client.post("/v1/traces", content=encode_spans(spans()), headers={**PROTOBUF, **bearer(token)})
        assert intake.store.span_count() == 0
    assert answer.status_code == 403
    assert f"role {role} may not send spans" in Status.FromString(answer.content).message


@pytest.mark.anyio
async def test_an_agent_token_sends_its_own_services_spans_and_nothing_of_anothers(lanes: Lanes) -> None:
    token = bearer(KEYS.mint("support-triage", SPANS_AUDIENCE))
    own = [span for span in spans() if span.agent == "support-triage"]
    async with running(lanes) as (client, intake):
        mixed = await client.post("/v1/traces", content=encode_spans(spans()), headers={**PROTOBUF, **token})
        as_json = await client.post("/v1/traces", content=encode_json(spans()), headers={**JSON, **token})
        assert intake.store.span_count() == 0
        mine = await client.post("/v1/traces", content=encode_spans(own), headers={**PROTOBUF, **token})
        assert intake.store.span_count() == 1
        assert intake.stats.unauthorized == 2
    assert (mixed.status_code, as_json.status_code, mine.status_code) == (403, 403, 200)
    assert "spans of service 'client'" in Status.FromString(mixed.content).message
    assert "'client'" in as_json.json()["message"]


@pytest.mark.anyio
async def test_policy_denials_and_approvals_are_handed_on_once_their_batch_is_durable(lanes: Lanes) -> None:
    handed: list[tuple[int, list[dict[str, Any]]]] = []
    holder: list[SpanIntake] = []

    def on_governance(records: Sequence[Mapping[str, Any]]) -> None:
        handed.append((holder[0].store.span_count(), [dict(record) for record in records]))

    batch = [
        policy_span("00000000000000c1", "deny", **{"mesh.person": "ann"}),
        policy_span("00000000000000c2", "allow"),
        policy_span("00000000000000c3", "approval"),
    ]
    async with running(lanes, {"on_governance": on_governance}) as (client, intake):
        holder.append(intake)
        for _ in range(2):  # redelivered: handed again, with the same keys
            answer = await client.post("/v1/traces", content=encode_spans(batch), headers=PROTOBUF)
            assert answer.status_code == 200
        await client.post("/v1/traces", content=encode_spans(spans()), headers=PROTOBUF)  # no policy verdicts
    assert [stored for stored, _ in handed] == [3, 3]
    assert handed[0][1] == handed[1][1]
    denied, approval = handed[0][1]
    assert denied == {
        "key": f"{TRACE}/00000000000000c1/1",
        "event": "policy deny",
        "at": (T0 + MS // 2) / 1e9,
        "trace_id": TRACE,
        "span_id": "00000000000000c1",
        "agent": "support-triage",
        "side": "callee",
        "policies": ["p1", "p2"],
        "reason": "rule says deny",
        "caller": "front",
        "tool": "refund",
        "person": "ann",
    }
    assert (approval["event"], approval["key"], approval["person"]) == (
        "policy approval",
        f"{TRACE}/00000000000000c3/1",
        None,
    )


@pytest.mark.anyio
async def test_a_governance_record_that_cannot_be_written_gets_503_so_the_spans_come_again() -> None:
    def on_governance(records: Sequence[Mapping[str, Any]]) -> None:
        raise OSError("disk full")

    async with running(intake_options={"on_governance": on_governance}) as (client, intake):
        denied = await client.post(
            "/v1/traces", content=encode_spans([policy_span("00000000000000c9", "deny")]), headers=PROTOBUF
        )
        plain = await client.post("/v1/traces", content=encode_spans(spans()), headers=PROTOBUF)
        assert intake.store.span_count() == 3
    assert (denied.status_code, denied.headers["retry-after"]) == (503, "1")
    assert plain.status_code == 200


@pytest.mark.anyio
async def test_an_intake_outside_its_lifespan_refuses_with_503() -> None:
    server = MCPServer("idle")
    install_span_intake(server, SqliteTraceStore(":memory:"), keys=KEYS)
    transport = httpx2.ASGITransport(app=app_of(server))
    async with httpx2.AsyncClient(transport=transport, base_url="http://t", headers=ADMIN) as client:
        answer = await client.post("/v1/traces", content=encode_spans(spans()), headers=PROTOBUF)
    assert answer.status_code == 503


@pytest.mark.anyio
async def test_queries_filter_and_refuse_bad_parameters() -> None:
    async with running() as (client, _):
        await client.post("/v1/traces", content=encode_spans(spans()), headers=PROTOBUF)
        assert len((await client.get("/api/traces", params={"agent": "support-triage"})).json()) == 1
        assert (await client.get("/api/traces", params={"tool": "nothing"})).json() == []
        assert (await client.get("/api/traces", params={"min_duration_ms": "1000"})).json() == []
        assert len((await client.get("/api/traces", params={"since": str(T0 // 10**9 - 1)})).json()) == 1
        for bad in ({"status": "fine"}, {"limit": "0"}, {"limit": "x"}, {"since": "later"}, {"min_duration_ms": "nan"}):
            answer = await client.get("/api/traces", params=bad)
            assert answer.status_code == 400, bad
            assert answer.json()["error"]
        assert (await client.get(f"/api/traces/{'0' * 31}1")).status_code == 404


@pytest.mark.anyio
async def test_a_trace_is_shown_by_the_start_of_its_id_unless_two_share_it() -> None:
    twin = [span.model_copy(update={"trace_id": TRACE[:16] + "0" * 16}) for span in spans()]
    async with running() as (client, _):
        await client.post("/v1/traces", content=encode_spans(spans()), headers=PROTOBUF)
        shown = await client.get(f"/api/traces/{TRACE[:16].upper()}")
        assert TraceTree.model_validate_json(shown.content).trace_id == TRACE
        await client.post("/v1/traces", content=encode_spans(twin), headers=PROTOBUF)
        ambiguous = await client.get(f"/api/traces/{TRACE[:12]}")
        assert ambiguous.status_code == 400
        assert ambiguous.json()["error"] == (
            f"trace id {TRACE[:12]} is the start of more than one trace ({twin[0].trace_id}, {TRACE}): give more of it"
        )
        assert (await client.get(f"/api/traces/{TRACE[:17]}")).json()["trace_id"] == TRACE
        assert (await client.get(f"/api/traces/{TRACE[:16]}1")).status_code == 404


def prove_as_tracer(server: MCPServer, keys: MeshKeys = KEYS) -> None:
    """Give `server` the `/healthz` a tracer of `keys`' mesh answers a challenge with."""

    async def healthz(request: Request) -> JSONResponse:
        challenge = bound(request.query_params.get("challenge", ""), request.url.port or 80)
        return JSONResponse(
            {"status": "ok", "name": "tracer", "mesh": keys.mesh, "proof": keys.prove(challenge, "tracer")}
        )

    server.custom_route("/healthz", methods=["GET"])(healthz)


@pytest.mark.anyio
async def test_batches_are_forwarded_after_they_are_stored(lanes: Lanes) -> None:
    target_store = SqliteTraceStore(":memory:")
    target = MCPServer("target")
    target_intake = install_span_intake(target, target_store, keys=KEYS)
    prove_as_tracer(target)
    target_app = app_of(target)
    async with target_intake:
        options = {
            "forward_url": "http://target/v1/traces",
            "forward_transport": httpx2.ASGITransport(app=target_app),
        }
        async with running(lanes, options) as (client, intake):
            await client.post("/v1/traces", content=encode_spans(spans()), headers=PROTOBUF)
            await client.post("/v1/traces", content=encode_json(spans()), headers=JSON)
        # Leaving the lifespan drains the forwarding backlog.
        assert (intake.stats.forwarded, intake.stats.forward_failures) == (4, 0)
    assert target_store.span_count() == 2
    assert target_intake.stats.duplicates == 2


@pytest.mark.anyio
async def test_only_a_forward_target_that_proves_it_is_of_this_mesh_gets_a_token() -> None:
    seen: list[str | None] = []

    def elsewhere(request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/healthz":  # an OTLP backend of the user's, or an impostor of another mesh
            other = MeshKeys(b"another-secret", KEYS.mesh)
            challenge = bound(request.url.params.get("challenge", ""), request.url.port or 80)
            return httpx2.Response(
                200, json={"name": "tracer", "mesh": KEYS.mesh, "proof": other.prove(challenge, "tracer")}
            )
        seen.append(request.headers.get("authorization"))
        return httpx2.Response(200)

    options = {"forward_url": "http://elsewhere/v1/traces", "forward_transport": httpx2.MockTransport(elsewhere)}
    async with running(intake_options=options) as (client, intake):
        assert (await client.post("/v1/traces", content=encode_spans(spans()), headers=PROTOBUF)).status_code == 200
    assert intake.stats.forwarded == 2
    assert seen == [None]


@pytest.mark.anyio
async def test_a_refusing_forward_endpoint_is_counted_and_never_blocks_ingest() -> None:
    options = {
        "forward_url": "http://elsewhere/v1/traces",
        "forward_transport": httpx2.MockTransport(lambda request: httpx2.Response(400)),
    }
    async with running(intake_options=options) as (client, intake):
        answer = await client.post("/v1/traces", content=encode_spans(spans()), headers=PROTOBUF)
        assert answer.status_code == 200
    assert (intake.stats.forwarded, intake.stats.forward_failures) == (0, 1)


def ingest_workers() -> set[int]:
    """The ingest worker processes this test process started: its only children in these tests."""
    return child_pids(os.getpid())


async def post_until_stored(client: httpx2.AsyncClient, body: bytes) -> list[int]:
    """POST a batch as an exporter does: retry while the answer is 503; the statuses seen."""
    statuses: list[int] = []
    with anyio.fail_after(20):
        while not statuses or statuses[-1] == 503:
            statuses.append((await client.post("/v1/traces", content=body, headers=PROTOBUF)).status_code)
    return statuses


@pytest.mark.anyio
async def test_killed_ingest_workers_are_replaced_and_lose_nothing(tmp_path: Path) -> None:
    async with running(Lanes(lambda: SqliteTraceStore(tmp_path / "traces.sqlite3"), 2)) as (client, intake):
        assert (await post_until_stored(client, encode_spans(spans()))) == [200]
        first = ingest_workers()
        assert len(first) == 2
        for pid in first:
            os.kill(pid, signal.SIGKILL)
        second = [span.model_copy(update={"trace_id": "f" * 32}) for span in spans()]
        statuses = await post_until_stored(client, encode_spans(second))
        assert statuses[-1] == 200
        assert set(statuses) <= {200, 503}
        assert intake.store.span_count() == 4
        replaced = ingest_workers()
        assert len(replaced) == 2
        assert not replaced & first
    assert ingest_workers() == set()


@pytest.mark.anyio
@pytest.mark.parametrize("python", ["/bin/false", "/nonexistent/python"])
async def test_a_worker_that_cannot_start_hands_its_lane_to_a_thread(
    python: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sys, "executable", python)
    async with running(Lanes(lambda: SqliteTraceStore(tmp_path / "traces.sqlite3"), 1)) as (client, intake):
        assert (await post_until_stored(client, encode_spans(spans()))) == [200]
        assert intake.store.span_count() == 2
    assert "storing in this process instead" in caplog.text


@pytest.mark.anyio
async def test_mcp_tools_search_show_and_explain_decisions() -> None:
    store = SqliteTraceStore(":memory:")
    server = MCPServer("tracer")
    intake = install_span_intake(server, store, keys=KEYS)
    store.ingest(decode_protobuf(encode_spans(spans())))
    async with intake, Client(server) as client:
        found = await client.call_tool("search_traces", {"agent": "support-triage"})
        assert not found.is_error
        assert TRACE in json.dumps(found.structured_content)

        shown = await client.call_tool("get_trace", {"trace_id": TRACE})
        assert TraceTree.model_validate(shown.structured_content).complete

        explained = await client.call_tool("explain_decision", {"trace_id": TRACE})
        text = explained.content[0].text  # type: ignore[union-attr]
        assert "Agent support-triage decided route" in text
        assert "Choice: billing" in text
        assert "Alternatives: billing, tech" in text
        assert "Reason: invoice keyword" in text
        assert "Confidence: 0.82" in text

        missing = await client.call_tool("get_trace", {"trace_id": "f" * 32})
        assert missing.is_error

        shortened = await client.call_tool("explain_decision", {"trace_id": TRACE[:8]})
        assert "Agent support-triage decided route" in shortened.content[0].text  # type: ignore[union-attr]
        store.ingest(decode_protobuf(encode_spans([spans()[0].model_copy(update={"trace_id": TRACE[:8] + "0" * 24})])))
        ambiguous = await client.call_tool("get_trace", {"trace_id": TRACE[:8]})
        assert ambiguous.is_error
        assert "is the start of more than one trace" in ambiguous.content[0].text  # type: ignore[union-attr]


def test_since_reads_durations_epoch_seconds_and_iso_times() -> None:
    assert parse_since("10m", 1000.0) == 400.0
    assert parse_since("1.5h", 10_000.0) == 10_000.0 - 5400.0
    assert parse_since("1700000000", 0.0) == 1_700_000_000.0
    assert parse_since("2023-11-14T22:13:20+00:00", 0.0) == 1_700_000_000.0
    with pytest.raises(ValueError, match="since"):
        parse_since("yesterday", 0.0)
