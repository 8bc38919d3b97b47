"""The map of the mesh: agents as nodes, calls as edges with their counts, denials and latency."""

from __future__ import annotations

from typing import Any

from mesh.wire import AgentRecord, SpanEventRecord, SpanRecord
from registry.mesh_map import mesh_map

NOW = 1_700_000_000.0
T0 = int((NOW - 60) * 1e9)


def record(name: str, *, owner: str | None = "team", approval: tuple[str, ...] = (), left: float = 9.0) -> AgentRecord:
    return AgentRecord.model_validate(
        {
            "name": name,
            "instance": f"{name}-1",
            "url": f"http://127.0.0.1:1/{name}",
            "tools": [{"name": tool, "approval": True} for tool in approval] + [{"name": "plain"}],
            "metadata": {"owner": owner, "jurisdiction": "eu"} if owner else {"jurisdiction": "eu"},
            "lease_seconds": 10.0,
            "first_seen": NOW - 100,
            "last_seen": NOW - 1,
            "expires_at": NOW + left,
        }
    )


def span(
    span_id: str,
    agent: str,
    kind: str,
    *,
    parent: str | None = None,
    tool: str = "relay",
    ms: float = 10.0,
    status: str = "ok",
    attributes: dict[str, Any] | None = None,
    denied_by: str | None = None,
    start_ms: float = 0.0,
) -> SpanRecord:
    events = []
    if denied_by is not None:
        decision = {"mesh.decision.kind": "policy", "mesh.decision.choice": "deny", "mesh.policy.ids": [denied_by]}
        events.append(SpanEventRecord(name="mesh.decision", time_ns=T0, attributes=decision))
    start = T0 + int(start_ms * 1e6)
    peer = (attributes or {}).get("mesh.peer.agent")
    return SpanRecord(
        trace_id="ab" * 16,
        span_id=span_id,
        parent_id=parent,
        name=f"tools/call {peer}.{tool}" if kind == "client" else f"tools/call {tool}",
        kind=kind,  # pyright: ignore[reportArgumentType]
        agent=agent,
        start_ns=start,
        end_ns=start + int(ms * 1e6),
        status=status,  # pyright: ignore[reportArgumentType]
        attributes={"gen_ai.tool.name": tool, **(attributes or {})} if kind == "client" else attributes or {},
        events=events,
    )


def chain(trace_id: str, ms: float = 10.0) -> tuple[str, list[SpanRecord]]:
    """The CLI calls a; a calls b (answered); b calls c (c's policy denies it)."""
    return (
        trace_id,
        [
            span("s1", "a", "server", attributes={"mesh.caller": "mesh-cli"}, ms=3 * ms),
            span("c1", "a", "client", parent="s1", attributes={"mesh.peer.agent": "b"}, ms=2 * ms),
            span("s2", "b", "server", parent="c1", ms=ms),
            span("c2", "b", "client", parent="s2", attributes={"mesh.peer.agent": "c"}, status="error"),
            span("s3", "c", "server", parent="c2", status="error", denied_by="no-confidential-abroad"),
        ],
    )


def test_calls_become_edges_from_the_cli_through_each_hop() -> None:
    found = mesh_map([record("a"), record("b"), record("c")], [], [chain("t1")], since=NOW - 900, now=NOW)

    edges = {(e.source, e.target): e for e in found.edges}
    assert set(edges) == {("mesh-cli", "a"), ("a", "b"), ("b", "c")}
    assert (edges["a", "b"].calls, edges["a", "b"].errors, edges["a", "b"].denied) == (1, 0, 0)
    assert (edges["b", "c"].errors, edges["b", "c"].denied) == (1, 1)
    assert edges["b", "c"].policies == ["no-confidential-abroad"]
    assert edges["a", "b"].tools == {"relay": 1}
    assert edges["b", "c"].tools == {"relay": 1}  # the client span is named "tools/call c.relay"
    assert edges["a", "b"].traces == ["t1"]
    assert found.traces == 1


def test_nodes_are_the_live_agents_and_the_callers_from_outside() -> None:
    agents = [record("a"), record("b", owner=None), record("c", approval=("wipe",), left=2.0)]

    found = mesh_map(agents, [], [chain("t1")], since=NOW - 900, now=NOW)

    nodes = {n.name: n for n in found.nodes}
    assert set(nodes) == {"a", "b", "c", "mesh-cli"}
    assert (nodes["a"].governed, nodes["b"].governed) == (True, False)
    assert (nodes["a"].state, nodes["c"].state, nodes["mesh-cli"].state) == ("healthy", "late", "outside")
    assert nodes["c"].approval_tools == ["wipe"]
    assert nodes["a"].jurisdiction == "eu"


def test_a_lapsed_agent_that_was_called_stays_on_the_map_and_an_idle_lapsed_one_does_not() -> None:
    found = mesh_map([record("a")], [record("b"), record("c"), record("old")], [chain("t1")], since=0, now=NOW)

    states = {n.name: n.state for n in found.nodes}
    assert states == {"a": "healthy", "b": "lapsed", "c": "lapsed", "mesh-cli": "outside"}


def test_counts_and_latency_add_up_over_traces_and_the_newest_trace_comes_first() -> None:
    traces = [chain(f"t{i}", ms=float(i)) for i in range(1, 101)]

    found = mesh_map([], [], traces, since=0, now=NOW)

    edge = next(e for e in found.edges if (e.source, e.target) == ("a", "b"))
    assert edge.calls == 100
    assert edge.p50_ms == 100.0  # a's client span lasts 2 * i ms
    assert edge.p99_ms == 198.0
    assert len(edge.traces) == 10


def test_a_retried_call_is_one_call_and_a_call_refused_before_it_left_is_still_an_edge() -> None:
    spans = [
        span("c1", "a", "client", attributes={"mesh.peer.agent": "b"}),
        span("s1", "b", "server", parent="c1", status="error"),
        span("s2", "b", "server", parent="c1"),
        span("c2", "a", "client", attributes={"mesh.peer.agent": "d"}, status="error", denied_by="caller-side"),
        span("c3", "a", "client", attributes={"mesh.peer.agent": "*"}, status="error"),
    ]

    found = mesh_map([], [], [("t", spans)], since=0, now=NOW)

    edges = {(e.source, e.target): e for e in found.edges}
    assert set(edges) == {("a", "b"), ("a", "d")}
    assert (edges["a", "b"].calls, edges["a", "b"].errors) == (1, 1)
    assert edges["a", "d"].policies == ["caller-side"]


def test_no_traces_is_a_map_of_nodes_only() -> None:
    found = mesh_map([record("a")], [], [], since=0, now=NOW)

    assert [n.name for n in found.nodes] == ["a"]
    assert found.edges == []
