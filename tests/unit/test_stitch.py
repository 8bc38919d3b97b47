"""Stitching spans into decision traces: properties over random traces, then worked examples."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.tracing.stitch import SENT_ATTRIBUTE, SYNTHETIC_ROOT_ID, decisions_of, stitch, summarize, tool_of
from mesh.wire import SpanEventRecord, SpanKind, SpanRecord, SpanStatus, TraceNode

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def span(
    span_id: str,
    parent_id: str | None,
    agent: str,
    start_ms: float,
    end_ms: float,
    *,
    name: str = "work",
    kind: SpanKind = "internal",
    status: SpanStatus = "unset",
    attributes: dict[str, Any] | None = None,
    events: list[SpanEventRecord] | None = None,
) -> SpanRecord:
    return SpanRecord(
        trace_id=TRACE,
        span_id=span_id,
        parent_id=parent_id,
        name=name,
        kind=kind,
        agent=agent,
        start_ns=T0 + int(start_ms * MS),
        end_ns=T0 + int(end_ms * MS),
        status=status,
        attributes=attributes or {},
        events=events or [],
    )


def walk(node: TraceNode, parent: TraceNode | None = None) -> Iterator[tuple[TraceNode, TraceNode | None]]:
    stack = [(node, parent)]
    while stack:
        here, above = stack.pop()
        yield here, above
        stack.extend((child, here) for child in here.children)


def sid(n: int) -> str:
    return f"{n + 1:016x}"


# -- properties --------------------------------------------------------------------------------


@st.composite
def messy_traces(draw: st.DrawFn) -> tuple[list[SpanRecord], set[str], dict[str, int]]:
    """A consistent random trace, then: per-agent clock skew, dropped spans, duplicates, shuffling."""
    size = draw(st.integers(1, 40))
    agents = ["a", "b", "c", "d"]
    skew = {agent: draw(st.integers(-2_000, 2_000)) * MS for agent in agents}
    true: list[tuple[int | None, str, int, int]] = []
    for i in range(size):
        if i == 0:
            parent, start, end = None, T0, T0 + 1_000 * MS
        else:
            parent = draw(st.integers(0, i - 1))
            _, _, p_start, p_end = true[parent]
            start = draw(st.integers(p_start, p_end))
            end = draw(st.integers(start, p_end))
        true.append((parent, draw(st.sampled_from(agents)), start, end))
    kinds: list[SpanKind] = ["internal", "server", "client"]
    spans = [
        SpanRecord(
            trace_id=TRACE,
            span_id=sid(i),
            parent_id=None if parent is None else sid(parent),
            name=f"op{i}",
            kind=draw(st.sampled_from(kinds)),
            agent=agent,
            start_ns=start + skew[agent],
            end_ns=end + skew[agent],
            status=draw(st.sampled_from(["unset", "ok", "error"])),
        )
        for i, (parent, agent, start, end) in enumerate(true)
    ]
    dropped = draw(st.sets(st.integers(0, size - 1), max_size=size - 1))
    kept = [s for i, s in enumerate(spans) if i not in dropped]
    copies = draw(st.lists(st.sampled_from(kept), max_size=10))
    messy = kept + copies
    random.Random(draw(st.integers(0, 2**32))).shuffle(messy)
    return messy, {s.span_id for s in kept}, {s.span_id: s.start_ns for s in kept}


@settings(max_examples=300, deadline=None)
@given(messy_traces())
def test_stitching_never_loses_or_duplicates_a_span(
    trace: tuple[list[SpanRecord], set[str], dict[str, int]],
) -> None:
    spans, kept, _ = trace
    tree = stitch(TRACE, spans)
    ids = [node.span_id for node, _ in walk(tree.root) if node.span_id != SYNTHETIC_ROOT_ID]
    assert sorted(ids) == sorted(kept)
    assert tree.span_count == len(kept)


@settings(max_examples=300, deadline=None)
@given(messy_traces())
def test_every_failed_span_counts_once_as_the_roots_status_or_beside_it(
    trace: tuple[list[SpanRecord], set[str], dict[str, int]],
) -> None:
    spans, _, _ = trace
    tree, summary = stitch(TRACE, spans), summarize(spans)
    failed = len({span.span_id for span in spans if span.status == "error"})
    if tree.root.span_id == SYNTHETIC_ROOT_ID:  # no root yet: every failure is beside it
        assert tree.denied + tree.errors == failed
    else:
        assert summary.status == ("error" if tree.root.status == "error" else "ok")
        assert (summary.denied, summary.errors) == (tree.denied, tree.errors)
        assert (summary.status == "error") + tree.denied + tree.errors == failed


@settings(max_examples=300, deadline=None)
@given(messy_traces())
def test_every_child_sits_under_its_parent_and_orphans_are_flagged(
    trace: tuple[list[SpanRecord], set[str], dict[str, int]],
) -> None:
    spans, kept, _ = trace
    tree = stitch(TRACE, spans)
    for node, parent in walk(tree.root):
        if parent is None:
            continue
        if node.parent_id in kept:
            assert node.parent_id == parent.span_id
            assert not node.orphan
        else:
            assert node.orphan
            assert parent is tree.root
            assert not tree.complete


@settings(max_examples=300, deadline=None)
@given(messy_traces())
def test_no_child_starts_before_its_parent_and_one_clock_keeps_its_offsets(
    trace: tuple[list[SpanRecord], set[str], dict[str, int]],
) -> None:
    spans, _, raw_start = trace
    tree = stitch(TRACE, spans)
    for node, parent in walk(tree.root):
        if parent is None:
            continue
        assert node.start >= parent.start
        assert [c.start for c in node.children] == sorted(c.start for c in node.children)
        if parent.span_id != SYNTHETIC_ROOT_ID and node.agent == parent.agent and not node.orphan:
            assert node.skew_ms == 0.0
            raw_gap = raw_start[node.span_id] - raw_start[parent.span_id]
            assert abs((node.start - parent.start) * 1e9 - raw_gap) < 1_000


# -- examples ----------------------------------------------------------------------------------


def call_chain() -> list[SpanRecord]:
    """A script calls A, A calls B, B calls C; each hop is a client span and a server span."""
    return [
        span("c1", None, "client", 0, 100, name="MCP send tools/call triage", kind="client"),
        span("a1", "c1", "a", 5, 95, name="tools/call triage", kind="server"),
        span("a2", "a1", "a", 10, 80, name="MCP send tools/call lookup", kind="client"),
        span("b1", "a2", "b", 15, 75, name="tools/call lookup", kind="server"),
        span("b2", "b1", "b", 20, 70, name="MCP send tools/call search", kind="client"),
        span("c2", "b2", "c", 25, 65, name="tools/call search", kind="server"),
    ]


def test_a_call_chain_across_three_agents_becomes_one_complete_tree() -> None:
    spans = call_chain()
    tree = stitch(TRACE, list(reversed(spans)))
    assert tree.complete
    assert tree.incomplete_reasons == []
    chain: list[tuple[str, str]] = []
    node = tree.root
    while True:
        chain.append((node.span_id, node.agent))
        if not node.children:
            break
        (node,) = node.children
    assert chain == [("c1", "client"), ("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b"), ("c2", "c")]
    assert tree.root.start == spans[0].start_ns / 1e9


def test_a_killed_callee_leaves_the_trace_incomplete_with_the_reason() -> None:
    spans = [s for s in call_chain() if s.agent != "c"]
    tree = stitch(TRACE, spans)
    assert not tree.complete
    assert tree.incomplete_reasons == ["client span b2 (b→search) has no server span"]


def test_the_reason_names_the_callee_when_the_client_span_does() -> None:
    caller = span("a2", None, "a", 0, 10, name="call", kind="client", attributes={"mesh.peer.agent": "crm"})
    caller = caller.model_copy(update={"attributes": {**caller.attributes, "gen_ai.tool.name": "lookup"}})
    tree = stitch(TRACE, [caller])
    assert tree.incomplete_reasons == ["client span a2 (a→crm.lookup) has no server span"]


def test_a_call_refused_before_it_was_sent_needs_no_server_span() -> None:
    refused = span("a2", "r", "a", 1, 2, name="MCP send tools/call lookup", kind="client")
    refused = refused.model_copy(update={"attributes": {SENT_ATTRIBUTE: False}})
    assert stitch(TRACE, [span("r", None, "a", 0, 10), refused]).complete


def test_a_plain_http_client_span_needs_no_server_span() -> None:
    tree = stitch(TRACE, [span("r", None, "a", 0, 10), span("h", "r", "a", 1, 9, name="GET", kind="client")])
    assert tree.complete


def test_decisions_sit_on_the_span_that_made_them() -> None:
    decision = SpanEventRecord(
        name="mesh.decision",
        time_ns=T0 + 50 * MS,
        attributes={
            "mesh.decision.kind": "route",
            "mesh.decision.choice": "billing",
            "mesh.decision.alternatives": ["billing", "tech"],
            "mesh.decision.reason": "invoice keyword",
            "mesh.decision.confidence": 0.82,
            "ticket": 7,
        },
    )
    spans = call_chain()
    spans[3] = spans[3].model_copy(update={"events": [decision]})
    tree = stitch(TRACE, spans)
    by_id = {node.span_id: node for node, _ in walk(tree.root)}
    assert [d.choice for d in by_id["b1"].decisions] == ["billing"]
    (made,) = by_id["b1"].decisions
    assert (made.kind, made.reason, made.confidence, made.alternatives) == (
        "route",
        "invoice keyword",
        0.82,
        ["billing", "tech"],
    )
    assert made.attributes == {"ticket": 7}
    assert all(not node.decisions for node in by_id.values() if node.span_id != "b1")


def test_a_callee_whose_clock_runs_late_is_moved_inside_its_caller_with_its_subtree() -> None:
    spans = call_chain()
    late = 2_000  # ms: host b's clock is two seconds ahead
    spans[3] = span("b1", "a2", "b", 15 + late, 75 + late, name="tools/call lookup", kind="server")
    spans[4] = span("b2", "b1", "b", 20 + late, 70 + late, name="MCP send tools/call search", kind="client")
    tree = stitch(TRACE, spans)
    by_id = {node.span_id: node for node, _ in walk(tree.root)}
    b1, b2, a2 = by_id["b1"], by_id["b2"], by_id["a2"]
    assert a2.start <= b1.start
    assert b1.end <= a2.end
    assert b1.skew_ms == -2_000.0
    assert b2.skew_ms == 0.0
    assert abs((b2.start - b1.start) - 0.005) < 1e-6
    assert by_id["c2"].start >= b2.start


def test_without_a_root_orphans_hang_under_a_synthetic_root() -> None:
    spans = [s for s in call_chain() if s.span_id not in ("c1", "a2")]
    tree = stitch(TRACE, spans)
    assert tree.root.span_id == SYNTHETIC_ROOT_ID
    assert {child.span_id for child in tree.root.children} == {"a1", "b1"}
    assert all(child.orphan for child in tree.root.children)
    assert tree.incomplete_reasons[0] == "the root span is missing"
    assert "parent span a2 is missing (1 orphan span(s))" in tree.incomplete_reasons


def test_a_redelivered_span_collapses_to_its_most_complete_copy() -> None:
    bare = span("r", None, "a", 0, 10)
    full = bare.model_copy(update={"status": "error", "status_message": "boom"})
    tree = stitch(TRACE, [full, bare, bare])
    assert tree.span_count == 1
    assert (tree.root.status, tree.root.status_message) == ("error", "boom")


def test_a_parent_cycle_is_cut_instead_of_losing_its_spans() -> None:
    spans = [span("r", None, "a", 0, 10), span("x", "y", "a", 1, 9), span("y", "x", "a", 2, 8)]
    tree = stitch(TRACE, spans)
    assert sorted(n.span_id for n, _ in walk(tree.root)) == ["r", "x", "y"]
    assert "span x is on a parent cycle" in tree.incomplete_reasons


def test_a_trace_without_spans_is_an_empty_incomplete_tree() -> None:
    tree = stitch(TRACE, [])
    assert (tree.complete, tree.span_count, tree.root.children) == (False, 0, [])


def test_summarize_names_the_root_call_its_outcome_and_what_failed_beside_it() -> None:
    spans = call_chain()
    spans[5] = spans[5].model_copy(update={"status": "error"})
    summary = summarize(spans + spans[:2])
    assert summary.root.agent == "client"
    assert summary.root.tool == "triage"
    assert summary.agents == ["a", "b", "c", "client"]
    assert (summary.span_count, summary.status, summary.errors, summary.duration_ms) == (6, "ok", 1, 100.0)
    spans[0] = spans[0].model_copy(update={"status": "error"})
    assert (summarize(spans).status, summarize(spans).errors) == ("error", 1)


def test_tool_of_reads_the_span_name_then_the_genai_attribute() -> None:
    assert tool_of(span("s", None, "a", 0, 1, name="tools/call lookup")) == "lookup"
    assert tool_of(span("s", None, "a", 0, 1, attributes={"gen_ai.tool.name": "draft"})) == "draft"
    assert tool_of(span("s", None, "a", 0, 1)) is None


def test_decision_attributes_in_loose_shapes_still_read() -> None:
    event = SpanEventRecord(
        name="mesh.decision",
        time_ns=T0,
        attributes={"mesh.decision.alternatives": "a, b", "mesh.decision.confidence": "high"},
    )
    (decision,) = decisions_of(span("s", None, "a", 0, 1, events=[event]))
    assert (decision.kind, decision.alternatives, decision.confidence) == ("decision", ["a", "b"], None)
