"""The map of the mesh: who calls whom, drawn from the inventory and the recent traces.

Owns `GET /api/map?since=15m&limit=200` and the pure `mesh_map` behind it. Nodes are the
inventory's agents (live ones, and lapsed ones still seen in calls) plus callers from outside
the inventory (the CLI, a client with a token); an agent is governed when its record names an
owner. Edges are caller → callee with their calls, errors, policy denials (and the policies'
ids), latency and recent traces, read from CLIENT spans (the caller's view, which also sees a
call refused before it left) and from SERVER spans no CLIENT span of ours leads to (`mesh.caller`
names who called). Reads the stores only through their public queries; owns no storage.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

import anyio
from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mesh.tracing.stitch import decisions_of, tool_of
from mesh.wire import AgentRecord, SpanRecord, TraceSummary
from registry.trace_api import parse_since

__all__ = ["MapEdge", "MapNode", "MeshMap", "install_mesh_map", "mesh_map"]

DEFAULT_SINCE: Final = "15m"
DEFAULT_LIMIT: Final = 200
MAX_LIMIT: Final = 1000
RECENT_TRACES: Final = 10
"""How many of an edge's latest trace ids the map keeps (clicking an edge lists them)."""

NodeState = Literal["healthy", "late", "lapsed", "outside"]
"""`late`: its lease is more than half spent; `outside`: a caller the inventory does not hold."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class MapNode(_Model):
    """One agent (all its instances) or an outside caller."""

    name: str
    state: NodeState
    instances: int = 0
    governed: bool = False
    """The inventory names an owner for it."""
    owner: str | None = None
    jurisdiction: str | None = None
    data_class: str | None = None
    approval_tools: list[str] = Field(default_factory=list[str])
    """Its tools that wait for a person."""


class MapEdge(_Model):
    """Calls from `source` to `target` in the window."""

    source: str
    target: str
    calls: int
    errors: int
    """Calls that failed, denials included."""
    denied: int
    """Calls a policy refused (on either end)."""
    policies: list[str]
    """The ids of the policies that refused them."""
    tools: dict[str, int]
    p50_ms: float
    p99_ms: float
    last: float
    """When the latest call started (epoch seconds)."""
    traces: list[str]
    """The latest traces holding a call on this edge, newest first."""


class MeshMap(_Model):
    """`GET /api/map`: the nodes and edges of the window [since, now]."""

    since: float
    until: float
    traces: int
    """How many traces the edges were read from (at most the `limit` asked)."""
    nodes: list[MapNode]
    edges: list[MapEdge]


class Agents(Protocol):
    """What the map reads of the inventory."""

    def alive(self, now: float) -> list[AgentRecord]: ...

    def all(self) -> list[AgentRecord]: ...


class Traces(Protocol):
    """What the map reads of the trace store."""

    def list_traces(
        self,
        agent: str | None = None,
        tool: str | None = None,
        status: str | None = None,
        since: float | None = None,
        min_duration_ms: float | None = None,
        limit: int = 50,
    ) -> list[TraceSummary]: ...

    def get_trace(self, trace_id: str) -> list[SpanRecord]: ...


def mesh_map(
    alive: Sequence[AgentRecord],
    known: Sequence[AgentRecord],
    traces: Iterable[tuple[str, Sequence[SpanRecord]]],
    *,
    since: float,
    now: float,
) -> MeshMap:
    """The map from live records, every record (for lapsed agents still called) and (trace id, spans) pairs."""
    edges: dict[tuple[str, str], _Edge] = {}
    read = 0
    for trace_id, spans in traces:
        read += 1
        for call in _calls(spans):
            edge = edges.setdefault((call.source, call.target), _Edge())
            edge.add(call, trace_id)
    named = {name for pair in edges for name in pair}
    nodes = _nodes(alive, known, named, now)
    return MeshMap(
        since=since,
        until=now,
        traces=read,
        nodes=nodes,
        edges=[edge.model(source, target) for (source, target), edge in sorted(edges.items())],
    )


def install_mesh_map(server: MCPServer, inventory: Agents, store: Traces) -> None:
    """Serve `GET /api/map` on `server` (read access as the other `/api/` reads)."""

    async def show_map(request: Request) -> Response:
        query = request.query_params
        now = time.time()
        try:
            since = parse_since(query.get("since") or DEFAULT_SINCE, now)
            limit = int(query.get("limit") or DEFAULT_LIMIT)
        except ValueError as exc:
            return JSONResponse({"error": str(exc) if "since" in str(exc) else "limit must be a number"}, 400)
        if not 1 <= limit <= MAX_LIMIT:
            return JSONResponse({"error": f"limit must be between 1 and {MAX_LIMIT}"}, 400)

        def build() -> MeshMap:
            summaries = store.list_traces(since=since, limit=limit)
            spans = ((s.trace_id, store.get_trace(s.trace_id)) for s in summaries)
            return mesh_map(inventory.alive(now), inventory.all(), spans, since=since, now=now)

        found = await anyio.to_thread.run_sync(build)
        return Response(found.model_dump_json(), media_type="application/json", headers={"Cache-Control": "no-store"})

    server.custom_route("/api/map", methods=["GET"])(show_map)


# -- private helpers ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Call:
    source: str
    target: str
    tool: str | None
    start: float
    duration_ms: float
    error: bool
    denied_by: tuple[str, ...] | None
    """None: not denied; else the ids of the policies that denied it (possibly none known)."""


@dataclass(slots=True)
class _Edge:
    calls: int = 0
    errors: int = 0
    denied: int = 0
    policies: set[str] = field(default_factory=set[str])
    tools: Counter[str] = field(default_factory=Counter[str])
    durations: list[float] = field(default_factory=list[float])
    last: float = 0.0
    traces: dict[str, float] = field(default_factory=dict[str, float])

    def add(self, call: _Call, trace_id: str) -> None:
        self.calls += 1
        self.errors += call.error
        if call.denied_by is not None:
            self.denied += 1
            self.policies.update(call.denied_by)
        if call.tool:
            self.tools[call.tool] += 1
        self.durations.append(call.duration_ms)
        self.last = max(self.last, call.start)
        self.traces[trace_id] = max(self.traces.get(trace_id, 0.0), call.start)

    def model(self, source: str, target: str) -> MapEdge:
        ordered = sorted(self.durations)
        newest = sorted(self.traces, key=lambda t: self.traces[t], reverse=True)[:RECENT_TRACES]
        return MapEdge(
            source=source,
            target=target,
            calls=self.calls,
            errors=self.errors,
            denied=self.denied,
            policies=sorted(self.policies),
            tools=dict(self.tools.most_common()),
            p50_ms=round(_quantile(ordered, 0.5), 3),
            p99_ms=round(_quantile(ordered, 0.99), 3),
            last=self.last,
            traces=newest,
        )


def _calls(spans: Sequence[SpanRecord]) -> Iterable[_Call]:
    """The calls between parties in one trace: each CLIENT span, and each SERVER span no CLIENT span leads to."""
    children: dict[str, list[SpanRecord]] = {}
    kinds = {s.span_id: s.kind for s in spans}
    for span in spans:
        if span.parent_id:
            children.setdefault(span.parent_id, []).append(span)
    for span in spans:
        if span.kind == "client":
            served = [c for c in children.get(span.span_id, []) if c.kind == "server"]
            target = served[0].agent if served else str(span.attributes.get("mesh.peer.agent") or "")
            if not target or target == "*":
                continue  # no agent was found to call: a route decision, not an edge
            yield _call(span.agent, target, span, [span, *served])
        elif span.kind == "server" and kinds.get(span.parent_id or "") != "client":
            caller = str(span.attributes.get("mesh.caller") or "outside")
            yield _call(caller, span.agent, span, [span])


def _call(source: str, target: str, span: SpanRecord, involved: Sequence[SpanRecord]) -> _Call:
    denied: tuple[str, ...] | None = None
    for each in involved:
        for decision in decisions_of(each):
            if decision.kind == "policy" and decision.choice == "deny":
                denied = (*(denied or ()), *_ids(decision.attributes.get("mesh.policy.ids")))
    return _Call(
        source=source,
        target=target,
        tool=str(span.attributes.get("gen_ai.tool.name") or tool_of(span) or "") or None,
        start=span.start_ns / 1e9,
        duration_ms=max(0, span.end_ns - span.start_ns) / 1e6,
        error=any(s.status == "error" for s in involved),
        denied_by=denied,
    )


def _ids(value: Any) -> list[str]:
    if isinstance(value, str):
        return [part for part in value.split(",") if part]
    if isinstance(value, list | tuple):
        return [str(part) for part in value]  # pyright: ignore[reportUnknownVariableType]
    return []


def _nodes(alive: Sequence[AgentRecord], known: Sequence[AgentRecord], named: set[str], now: float) -> list[MapNode]:
    by_name: dict[str, list[AgentRecord]] = {}
    for record in alive:
        by_name.setdefault(record.name, []).append(record)
    lapsed = {r.name: r for r in known if r.name not in by_name and r.name in named}
    nodes = [_node(name, records, _state(records, now)) for name, records in by_name.items()]
    nodes += [_node(name, [record], "lapsed") for name, record in lapsed.items()]
    nodes += [MapNode(name=name, state="outside") for name in named - by_name.keys() - lapsed.keys()]
    return sorted(nodes, key=lambda n: n.name)


def _node(name: str, records: Sequence[AgentRecord], state: NodeState) -> MapNode:
    meta: Mapping[str, Any] = records[0].metadata.model_dump(exclude_none=True)
    approval = sorted({t.name for r in records for t in r.tools if t.approval})
    return MapNode(
        name=name,
        state=state,
        instances=len(records) if state != "lapsed" else 0,
        governed=bool(meta.get("owner")),
        owner=meta.get("owner"),
        jurisdiction=meta.get("jurisdiction"),
        data_class=meta.get("data_class"),
        approval_tools=approval,
    )


def _state(records: Sequence[AgentRecord], now: float) -> NodeState:
    """Healthy while one instance has more than half its lease left (as the agents view shows health)."""
    return "healthy" if any(r.expires_at - now >= r.lease_seconds / 2 for r in records) else "late"


def _quantile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank quantile of sorted values (0 for none)."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
