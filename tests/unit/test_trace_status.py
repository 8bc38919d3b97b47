"""A trace's status is its root's outcome, with what failed beside it counted; a trace whose root has
not arrived is in progress for a moment, then incomplete. The rules, both stores, both store upgrades,
the HTTP list and the terminal renderings."""

from __future__ import annotations

import io
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import psycopg
import pytest
from mcp.server.mcpserver import MCPServer
from rich.console import Console

from mesh.tracing.outcome import outcome_of
from mesh.tracing.render import render_summaries, render_tree
from mesh.tracing.stitch import IN_PROGRESS_GRACE, stitch, summarize
from mesh.wire import SpanEventRecord, SpanRecord, TraceSummary, TraceTree
from registry.trace_api import install_trace_api
from registry.trace_stores import TraceStore
from registry.tracestore import SqliteTraceStore
from tests.unit.test_tracestore import BACKENDS, DENY, chain, failing, open_store, rows


def ticket(trace: int = 1, *, root_failed: bool = False) -> list[SpanRecord]:
    """A ticket handled by triage: crm answers, analytics is refused by the policy (triage goes on
    without it), kb's call fails and is retried; the root call to triage ends ok unless `root_failed`."""
    root, crm, analytics, kb = chain(trace, ["triage", "crm", "analytics", "kb"], start_ms=trace * 10)
    siblings = [span.model_copy(update={"parent_id": root.span_id}) for span in (crm, analytics, kb)]
    crm, analytics, kb = siblings
    root = failing(root, "error") if root_failed else root
    return [root, crm, failing(analytics, "denied"), failing(kb, "error")]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TraceStore]:
    location = str(tmp_path / "traces.sqlite3") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    opened = open_store(location)
    yield opened
    opened.close()


# -- the rules -----------------------------------------------------------------------------------


def test_a_span_that_did_not_fail_is_ok_whatever_it_decided() -> None:
    span = chain(1, ["a"])[0]
    decided = span.model_copy(update={"events": [SpanEventRecord(name="mesh.decision", time_ns=1, attributes=DENY)]})
    assert [outcome_of(span.model_copy(update={"status": s})) for s in ("unset", "ok")] == ["ok", "ok"]
    assert outcome_of(decided) == "ok"  # a refusal recorded on a span that went on: nothing was refused there


def test_a_failed_span_is_denied_where_a_policy_or_a_person_refused_the_call_and_an_error_otherwise() -> None:
    span = chain(1, ["a"])[0].model_copy(update={"status": "error"})

    def deciding(kind: str, choice: str) -> SpanRecord:
        attributes = {"mesh.decision.kind": kind, "mesh.decision.choice": choice}
        return span.model_copy(
            update={"events": [SpanEventRecord(name="mesh.decision", time_ns=1, attributes=attributes)]}
        )

    assert outcome_of(deciding("policy", "deny")) == "denied"
    assert [outcome_of(deciding("approval", choice)) for choice in ("denied", "expired", "refused")] == ["denied"] * 3
    assert outcome_of(deciding("approval", "cancelled")) == "error"  # the call stopped waiting for another reason
    assert outcome_of(deciding("policy", "allow")) == "error"
    assert outcome_of(span) == "error"


def test_a_refusal_seen_on_both_ends_of_a_call_is_counted_once_where_it_was_decided() -> None:
    root, client, server = chain(1, ["cli", "triage", "crm"])
    spans = [root, failing(client, "relayed"), failing(server, "denied")]
    assert outcome_of(spans[1]) == "relayed"
    summary = summarize(spans)
    assert (summary.status, summary.denied, summary.errors) == ("ok", 1, 0)


def test_a_handled_denial_leaves_the_trace_ok_and_a_failed_root_makes_it_an_error() -> None:
    handled = summarize(ticket())
    assert (handled.status, handled.denied, handled.errors) == ("ok", 1, 1)
    failed = summarize(ticket(root_failed=True))
    assert (failed.status, failed.denied, failed.errors) == ("error", 1, 1)  # the root's own failure is its status
    refused = summarize([failing(chain(1, ["a"])[0], "denied")])
    assert (refused.status, refused.denied, refused.errors) == ("error", 0, 0)


# -- in progress -----------------------------------------------------------------------------------


def test_a_trace_without_its_root_is_in_progress_for_a_grace_after_its_latest_span_arrived() -> None:
    children = ticket()[1:]
    assert stitch("0" * 31 + "1", children, arrived=100.0, now=100.5).in_progress
    assert stitch("0" * 31 + "1", children, arrived=100.0, now=100.0 + IN_PROGRESS_GRACE - 0.01).in_progress
    late = stitch("0" * 31 + "1", children, arrived=100.0, now=100.0 + IN_PROGRESS_GRACE)
    assert (late.in_progress, late.complete, late.incomplete_reasons[0]) == (False, False, "the root span is missing")
    assert not stitch("0" * 31 + "1", children, arrived=100.0, now=103.0, grace=2.0).in_progress
    assert not stitch("0" * 31 + "1", children).in_progress  # nobody said when they arrived


def test_a_complete_trace_is_never_in_progress_and_counts_what_failed_beside_its_root() -> None:
    tree = stitch(f"{1:032x}", ticket(), arrived=100.0, now=100.0)
    assert (tree.complete, tree.in_progress, tree.denied, tree.errors) == (True, False, 1, 1)


# -- the stores ------------------------------------------------------------------------------------


def test_a_successful_ticket_with_a_denied_side_call_is_listed_ok_with_one_denied(store: TraceStore) -> None:
    store.ingest(rows(ticket(1)))
    store.ingest(rows(ticket(2, root_failed=True)))
    store.ingest(rows(chain(3, ["a", "b"], start_ms=500)))

    def ids(**filters: Any) -> list[int]:
        return [int(summary.trace_id, 16) for summary in store.list_traces(**filters)]

    [other, failed, handled] = store.list_traces()
    assert (handled.status, handled.denied, handled.errors) == ("ok", 1, 1)
    assert (failed.status, failed.denied, failed.errors) == ("error", 1, 1)
    assert (other.status, other.denied, other.errors) == ("ok", 0, 0)
    assert [handled, failed] == [summarize(ticket(1)), summarize(ticket(2, root_failed=True))]
    assert ids(status="ok") == [3, 1]
    assert ids(status="error") == [2]
    assert ids(denied=True) == [2, 1]
    assert ids(denied=False) == [3]
    assert ids(status="ok", denied=True) == [1]
    assert ids(errors=True, status="error") == [2]


def test_the_root_decides_the_status_once_it_arrives_and_the_trace_is_no_longer_in_progress(
    store: TraceStore,
) -> None:
    spans = ticket(1)
    before = time.time()
    store.ingest(rows([failing(spans[1], "error"), *spans[2:]]))  # the children first: the root ends last
    [waiting] = store.list_traces(in_progress_after=before)
    assert waiting.in_progress
    assert (waiting.root.agent, waiting.status) == ("crm", "error")  # the earliest span stands in, for now
    after = time.time()
    assert not store.list_traces(in_progress_after=after)[0].in_progress  # nothing arrived since
    assert not store.list_traces()[0].in_progress
    store.ingest(rows(spans[:1]))
    [done] = store.list_traces(in_progress_after=before)
    assert (done.in_progress, done.root.agent, done.status, done.denied, done.errors) == (False, "triage", "ok", 1, 2)


def test_a_store_knows_when_the_latest_span_of_a_trace_arrived(store: TraceStore) -> None:
    spans = ticket(1)
    before = time.time()
    store.ingest(rows(spans[1:]))
    first = store.last_arrival(f"{1:032x}")
    store.ingest(rows(spans[:1]))
    latest = store.last_arrival(f"{1:032x}")
    after = time.time()
    assert first is not None
    assert latest is not None
    assert before - 0.001 <= first <= latest <= after + 0.001  # the float of a ns clock rounds
    assert store.last_arrival(f"{2:032x}") is None
    assert store.last_arrival("not-hex") is None


# -- upgrades of stores written before ----------------------------------------------------------------


def test_a_sqlite_store_of_the_third_layout_is_brought_up_to_date_with_each_traces_outcome(tmp_path: Path) -> None:
    path = tmp_path / "traces.sqlite3"
    traces = [ticket(1), ticket(2, root_failed=True), chain(3, ["a", "b"], start_ms=500)]
    written = SqliteTraceStore(path)
    for spans in traces:
        written.ingest(rows(spans))
    written.close()
    with sqlite3.connect(path) as conn:  # back to layout 2, as an older agentplex left it
        conn.executescript(
            """
            DROP INDEX traces_failed_by_start;
            DROP INDEX traces_denied_by_start;
            ALTER TABLE traces ADD COLUMN error INTEGER NOT NULL DEFAULT 0;
            UPDATE traces SET error = EXISTS (SELECT 1 FROM spans WHERE trace_seq = seq AND status = 2);
            CREATE INDEX traces_errors_by_start ON traces (start_ns) WHERE error = 1;
            ALTER TABLE traces DROP COLUMN denied;
            ALTER TABLE traces DROP COLUMN failed;
            ALTER TABLE traces DROP COLUMN lead_rank;
            ALTER TABLE traces DROP COLUMN lead_start;
            ALTER TABLE traces DROP COLUMN lead_span;
            ALTER TABLE traces DROP COLUMN lead_outcome;
            ALTER TABLE traces DROP COLUMN arrived_ns;
            PRAGMA user_version = 2;
            """
        )
    conn.close()
    store = SqliteTraceStore(path)
    assert store.list_traces() == [summarize(spans) for spans in reversed(traces)]
    assert [int(t.trace_id, 16) for t in store.list_traces(denied=True)] == [2, 1]
    assert store.last_arrival(f"{1:032x}") is None  # stored before arrival times were kept
    late = chain(1, ["triage", "late"])[1].model_copy(update={"span_id": f"{1:08x}{9:08x}"})
    store.ingest(rows([late]))  # a late span of a trace stored before
    assert store.last_arrival(f"{1:032x}") is not None
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (3,)
        assert "error" not in {row[1] for row in conn.execute("PRAGMA table_info(traces)")}
    conn.close()


def test_a_postgresql_store_of_the_first_schema_is_brought_up_to_date_with_each_traces_outcome(pg_url: str) -> None:
    traces = [ticket(1), ticket(2, root_failed=True), chain(3, ["a", "b"], start_ms=500)]
    written = open_store(pg_url)
    for spans in traces:
        written.ingest(rows(spans))
    written.close()
    failed = [bytes.fromhex(spans[0].trace_id) for spans in traces[:2]]
    with psycopg.connect(pg_url, autocommit=True) as conn:  # back to schema 1, as an older agentplex left it
        conn.execute("ALTER TABLE traces ADD COLUMN error boolean NOT NULL DEFAULT false")
        conn.execute("UPDATE traces SET error = uuid_send(trace_id) = ANY(%s)", [failed])
        conn.execute("ALTER TABLE traces ALTER COLUMN error DROP DEFAULT")
        conn.execute("CREATE INDEX traces_errors_by_start ON traces (start_ns) WHERE error")
        conn.execute("ALTER TABLE traces DROP COLUMN denied, DROP COLUMN failed, DROP COLUMN lead_outcome")
        conn.execute("ALTER TABLE traces DROP COLUMN arrived_ns")
        conn.execute("UPDATE trace_store_schema SET version = 1")
    store = open_store(pg_url)
    try:
        assert store.list_traces() == [summarize(spans) for spans in reversed(traces)]
        assert [int(t.trace_id, 16) for t in store.list_traces(status="error")] == [2]
        assert store.last_arrival(f"{1:032x}") is None
    finally:
        store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT version FROM trace_store_schema").fetchall() == [(2,)]


# -- the HTTP list and the tree ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_http_api_filters_by_what_failed_beside_the_root_and_says_in_progress_by_its_clock() -> None:
    store = SqliteTraceStore(":memory:")
    store.ingest(rows(ticket(1)))
    store.ingest(rows(ticket(2)[1:]))  # its root has not arrived
    arrived = store.last_arrival(f"{2:032x}")
    assert arrived is not None
    now = [arrived + 1.0]
    server = MCPServer("traces")
    install_trace_api(server, store, dict, clock=lambda: now[0])
    transport = httpx2.ASGITransport(app=server.streamable_http_app(json_response=True))
    async with httpx2.AsyncClient(transport=transport, base_url="http://t") as client:

        async def listed(**params: str) -> list[tuple[int, str, int, int, bool]]:
            found = (await client.get("/api/traces", params=params)).json()
            return [(int(t["trace_id"], 16), t["status"], t["denied"], t["errors"], t["in_progress"]) for t in found]

        async def tree(trace: int) -> TraceTree:
            return TraceTree.model_validate((await client.get(f"/api/traces/{trace:032x}")).json())

        assert await listed() == [(2, "ok", 1, 1, True), (1, "ok", 1, 1, False)]
        assert await listed(denied="true", errors="1") == [(2, "ok", 1, 1, True), (1, "ok", 1, 1, False)]
        assert await listed(denied="false") == []
        assert (await tree(2)).in_progress
        assert not (await tree(1)).in_progress
        now[0] = arrived + IN_PROGRESS_GRACE + 0.01
        assert await listed(status="ok") == [(2, "ok", 1, 1, False), (1, "ok", 1, 1, False)]
        late = await tree(2)
        assert (late.in_progress, late.complete) == (False, False)
        wrong = await client.get("/api/traces", params={"denied": "maybe"})
    assert (wrong.status_code, wrong.json()) == (400, {"error": "denied must be true or false, not 'maybe'"})
    store.close()


def printed(renderable: Any, width: int = 120) -> str:
    console = Console(width=width, file=io.StringIO(), record=True)
    console.print(renderable)
    return console.export_text()


def test_the_listing_shows_the_roots_outcome_with_what_failed_beside_it_on_its_lines_when_narrow() -> None:
    handled = summarize(ticket(1))
    waiting = summarize(ticket(2)[1:]).model_copy(update={"in_progress": True})
    failed = summarize(ticket(3, root_failed=True)).model_copy(update={"errors": 2, "denied": 0})
    found: list[TraceSummary] = [handled, waiting, failed]
    wide = [line.split("│")[-1].strip() for line in printed(render_summaries(found), width=250).splitlines()[2:]]
    assert wide == ["ok · 1 denied · 1 error", "in progress · 1 denied · 1 error", "error · 2 errors"]
    narrow = printed(render_summaries(found, width=80), width=80).splitlines()[2:]
    assert [line.split("│")[-1].strip() for line in narrow] == [
        "ok", "· 1 denied", "· 1 error", "in progress", "· 1 denied", "· 1 error", "error", "· 2 errors",
    ]  # fmt: skip
    assert "triage" in narrow[0]  # the root keeps its room
    assert "crm-tool" in narrow[3]


def test_a_tree_in_progress_says_so_instead_of_listing_its_gaps_and_says_incomplete_once_the_grace_is_over() -> None:
    children = ticket(1)[1:]
    waiting = printed(render_tree(stitch(f"{1:032x}", children, arrived=100.0, now=101.0)))
    assert "in progress" in waiting.splitlines()[0]
    assert "⚠" not in waiting
    late = printed(render_tree(stitch(f"{1:032x}", children, arrived=100.0, now=200.0)))
    assert "incomplete" in late.splitlines()[0]
    assert "⚠ the root span is missing" in late
    done = printed(render_tree(stitch(f"{1:032x}", ticket(1))))
    assert done.splitlines()[0].endswith("4 spans  ok · 1 denied · 1 error  complete")


def test_spans_arriving_one_batch_each_and_again_are_counted_once(store: TraceStore) -> None:
    spans = ticket(1)
    spans.append(failing(spans[3].model_copy(update={"span_id": f"{1:08x}{9:08x}", "agent": "kb2"}), "error"))
    for span in [*reversed(spans), *spans]:  # the root last, then every span redelivered
        store.ingest(rows([span]))
    [summary] = store.list_traces()
    assert summary == summarize(spans)
    assert (summary.status, summary.denied, summary.errors) == ("ok", 1, 2)
