"""Span stitching: spans from many processes, late, duplicated and out of order, become one tree.

Rules, in the order they apply:
1. Spans collapse by span_id; of several copies the most complete one wins (the last on a tie).
2. The root is the parentless span that starts first. Other parentless spans, spans whose
   parent is missing and spans caught in a parent cycle hang under the root with `orphan=True`
   (under a synthetic root when there is no parentless span) and make the trace incomplete.
3. Clock skew: each agent instance has its own clock. A child that starts before its parent, or
   on another clock ends after it, moves (with its whole subtree) into the parent: centred
   when it fits, start-aligned when it does not. The shift is recorded as `skew_ms`.
4. An MCP client span with no server span beneath it (the callee died, or never exported)
   makes the trace incomplete. Children are sorted by start; times become float seconds.
5. An incomplete trace whose latest span arrived less than a grace ago is in progress: its other
   spans, the root last (it ends last), are probably on their way.
A trace's status is its root's outcome, with what failed beside it counted (`mesh.tracing.outcome`).

Pure functions over wire models: no I/O, no clock (the caller says when spans arrived and what
time it is), no storage, no rendering.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from mesh.tracing.outcome import beside_root, outcome_of
from mesh.wire import Decision, SpanRecord, SpanStatus, TraceNode, TraceRoot, TraceSummary, TraceTree

SENT_ATTRIBUTE = "mesh.request.sent"
"""Client-span attribute: False when the mesh refused the call before sending it."""

__all__ = [
    "SENT_ATTRIBUTE",
    "DECISION_EVENT",
    "IN_PROGRESS_GRACE",
    "SYNTHETIC_ROOT_ID",
    "decisions_of",
    "stitch",
    "summarize",
    "tool_of",
]

DECISION_EVENT: Final = "mesh.decision"
"""The span event name that carries a decision (DESIGN §5)."""

SYNTHETIC_ROOT_ID: Final = "0" * 16
"""The span id of the stand-in root of a trace whose root span is missing (never a real id)."""

IN_PROGRESS_GRACE: Final = 5.0
"""Seconds after its latest span arrived that an incomplete trace is shown in progress, then incomplete:
room for a few of the agents' export batches (`OTEL_BSP_SCHEDULE_DELAY` apart), the root's the last."""


def stitch(
    trace_id: str,
    spans: Sequence[SpanRecord],
    *,
    arrived: float | None = None,
    now: float | None = None,
    grace: float = IN_PROGRESS_GRACE,
) -> TraceTree:
    """Stitch the spans of one trace into its tree (DESIGN §4 `mesh traces show --json`).

    `arrived`: when the latest of them reached the store; `now`: the time by that same clock. An
    incomplete trace is in progress while `now` is less than `grace` seconds after `arrived`.
    """
    unique = _dedupe(spans)
    if not unique:
        empty = _Layout(None, 0, 0, 0, 0)
        return TraceTree(
            trace_id=trace_id,
            complete=False,
            root=_synthetic_node([], empty, {}),
            incomplete_reasons=["the trace has no spans"],
        )
    children: dict[str, list[SpanRecord]] = {}
    parentless: list[SpanRecord] = []
    missing: dict[str, list[SpanRecord]] = {}
    for span in unique.values():
        parent = span.parent_id
        if parent is None:
            parentless.append(span)
        elif parent == span.span_id or parent not in unique:
            missing.setdefault(parent, []).append(span)
        else:
            children.setdefault(parent, []).append(span)
    parentless.sort(key=_start_key)
    root = parentless[0] if parentless else None
    reasons: list[str] = []
    attached: list[SpanRecord] = list(parentless[1:])
    reasons.extend(f"span {span.span_id} is a second root" for span in parentless[1:])
    for parent, lost in missing.items():
        attached.extend(lost)
        reasons.append(f"parent span {parent} is missing ({len(lost)} orphan span(s))")
    _break_cycles(unique, children, root, attached, reasons)
    if root is None:
        reasons.insert(0, "the root span is missing")
    flagged = {span.span_id for span in attached}

    layout: dict[str, _Layout] = {}
    if root is not None:
        top = layout[root.span_id] = _Layout(_clock(root), 0, 0, root.start_ns, _end(root))
        _place_subtree(root, layout, children)
    else:
        top = _Layout(None, 0, 0, min(s.start_ns for s in attached), max(_end(s) for s in attached))
    for span in attached:
        _place_one(span, layout, top)
        _place_subtree(span, layout, children)

    reasons.extend(_unanswered_clients(unique.values(), children))
    root_children = [*children.get(root.span_id, ()), *attached] if root is not None else attached
    nodes = _build_nodes(unique, children, layout, flagged)
    root_node = (
        nodes[root.span_id].model_copy(update={"children": _sorted(nodes, root_children)})
        if root is not None
        else _synthetic_node(attached, top, nodes)
    )
    # Beside the root; without one (not arrived yet), every span's failure is counted.
    _, denied, errors = beside_root(outcome_of(root) if root else "ok", map(outcome_of, unique.values()))
    return TraceTree(
        trace_id=trace_id,
        complete=not reasons,
        root=root_node,
        incomplete_reasons=reasons,
        span_count=len(unique),
        denied=denied,
        errors=errors,
        in_progress=bool(reasons) and arrived is not None and now is not None and now - arrived < grace,
    )


def summarize(spans: Sequence[SpanRecord]) -> TraceSummary:
    """The `mesh traces ls` row of one trace, from its raw (uncorrected) spans."""
    unique = list(_dedupe(spans).values())
    if not unique:
        raise ValueError("cannot summarize a trace without spans")
    root = _lead(unique)
    tool = tool_of(root)
    if tool is None:
        tooled = [span for span in unique if tool_of(span) is not None]
        tool = tool_of(min(tooled, key=_start_key)) if tooled else None
    start = min(span.start_ns for span in unique)
    end = max(span.end_ns for span in unique)
    status, denied, errors = _outcome(unique)
    return TraceSummary(
        trace_id=unique[0].trace_id,
        root=TraceRoot(agent=root.agent, tool=tool),
        agents=sorted({span.agent for span in unique}),
        span_count=len(unique),
        start=start / 1e9,
        duration_ms=max(0, end - start) / 1e6,
        status=status,
        denied=denied,
        errors=errors,
    )


def decisions_of(span: SpanRecord, *, shift_ns: int = 0) -> list[Decision]:
    """The `mesh.decision` events of a span, as decisions (times moved by `shift_ns`)."""
    decisions: list[Decision] = []
    for event in span.events:
        if event.name != DECISION_EVENT:
            continue
        attributes = event.attributes
        kind = attributes.get("mesh.decision.kind")
        decisions.append(
            Decision(
                kind=str(kind) if kind is not None else "decision",
                choice=_text(attributes.get("mesh.decision.choice")),
                reason=_text(attributes.get("mesh.decision.reason")),
                confidence=_number(attributes.get("mesh.decision.confidence")),
                alternatives=_alternatives(attributes.get("mesh.decision.alternatives")),
                time=(event.time_ns + shift_ns) / 1e9,
                attributes={key: value for key, value in attributes.items() if key not in _DECISION_KEYS},
            )
        )
    return decisions


def tool_of(span: SpanRecord) -> str | None:
    """The MCP tool a span calls or serves: from a `tools/call X` name, else `gen_ai.tool.name`."""
    at = span.name.find(_TOOL_CALL)
    if at >= 0:
        return span.name[at + len(_TOOL_CALL) :] or None
    tool = span.attributes.get("gen_ai.tool.name")
    return str(tool) if tool else None


# -- private helpers ---------------------------------------------------------------------------

_TOOL_CALL: Final = "tools/call "
_DECISION_KEYS: Final = frozenset(
    f"mesh.decision.{key}" for key in ("kind", "choice", "reason", "confidence", "alternatives")
)
_MCP_CLIENT_KEYS: Final = ("mcp.method.name", "gen_ai.tool.name")
_PEER_KEYS: Final = ("mesh.peer.agent", "peer.service")


@dataclass(slots=True)
class _Layout:
    """Where a span lands once skew is corrected: its clock and its total shift."""

    clock: tuple[str, str | None] | None
    shift_ns: int
    skew_ns: int
    start_ns: int
    end_ns: int


def _start_key(span: SpanRecord) -> tuple[int, str]:
    return (span.start_ns, span.span_id)


def _lead(spans: Iterable[SpanRecord]) -> SpanRecord:
    """The root: the earliest parentless span, else (the root has not arrived) the earliest span."""
    return min(spans, key=lambda span: (span.parent_id is not None, span.start_ns, span.span_id))


def _outcome(spans: Collection[SpanRecord]) -> tuple[SpanStatus, int, int]:
    """(status, denied, errors): the root's outcome, and what failed beside it."""
    return beside_root(outcome_of(_lead(spans)), map(outcome_of, spans))


def _end(span: SpanRecord) -> int:
    return max(span.end_ns, span.start_ns)


def _clock(span: SpanRecord) -> tuple[str, str | None]:
    return (span.agent, span.instance)


def _completeness(span: SpanRecord) -> tuple[bool, bool, int, int]:
    return (span.end_ns >= span.start_ns > 0, span.status != "unset", len(span.events), len(span.attributes))


def _dedupe(spans: Iterable[SpanRecord]) -> dict[str, SpanRecord]:
    unique: dict[str, SpanRecord] = {}
    for span in spans:
        seen = unique.get(span.span_id)
        if seen is None or _completeness(span) >= _completeness(seen):
            unique[span.span_id] = span
    return unique


def _break_cycles(
    unique: dict[str, SpanRecord],
    children: dict[str, list[SpanRecord]],
    root: SpanRecord | None,
    attached: list[SpanRecord],
    reasons: list[str],
) -> None:
    # Spans unreachable from the root and the attached spans sit on a parent cycle: cut each
    # cycle at its earliest span, which then hangs under the root like an orphan.
    reached: set[str] = set()
    frontier = [root.span_id] if root is not None else []
    frontier.extend(span.span_id for span in attached)
    while True:
        while frontier:
            span_id = frontier.pop()
            if span_id not in reached:
                reached.add(span_id)
                frontier.extend(child.span_id for child in children.get(span_id, ()))
        stuck = [span for span in unique.values() if span.span_id not in reached]
        if not stuck:
            return
        cut = min(stuck, key=_start_key)
        siblings = children[cut.parent_id or ""]
        siblings.remove(cut)
        attached.append(cut)
        reasons.append(f"span {cut.span_id} is on a parent cycle")
        frontier.append(cut.span_id)


def _place_subtree(span: SpanRecord, layout: dict[str, _Layout], children: dict[str, list[SpanRecord]]) -> None:
    stack = [span]
    while stack:
        parent = stack.pop()
        for child in children.get(parent.span_id, ()):
            _place_one(child, layout, layout[parent.span_id])
            stack.append(child)


def _place_one(span: SpanRecord, layout: dict[str, _Layout], parent: _Layout) -> _Layout:
    clock = _clock(span)
    start = span.start_ns + parent.shift_ns
    end = _end(span) + parent.shift_ns
    skew = 0
    if parent.clock is not None and clock != parent.clock:
        if start < parent.start_ns or end > parent.end_ns:
            room = parent.end_ns - parent.start_ns - (end - start)
            skew = parent.start_ns + room // 2 - start if room >= 0 else parent.start_ns - start
    elif start < parent.start_ns:
        skew = parent.start_ns - start
    placed = _Layout(clock, parent.shift_ns + skew, skew, start + skew, end + skew)
    layout[span.span_id] = placed
    return placed


def _unanswered_clients(spans: Iterable[SpanRecord], children: dict[str, list[SpanRecord]]) -> list[str]:
    reasons: list[str] = []
    for span in spans:
        if _is_mcp_client(span) and not _reaches_server(span, children):
            peer = next((str(span.attributes[key]) for key in _PEER_KEYS if span.attributes.get(key)), None)
            tool = tool_of(span) or span.name
            target = f"{peer}.{tool}" if peer else tool
            reasons.append(f"client span {span.span_id} ({span.agent}→{target}) has no server span")
    return reasons


def _is_mcp_client(span: SpanRecord) -> bool:
    # Only MCP calls promise a server span: an HTTP call to an outside API never has one.
    if span.kind != "client" or span.attributes.get(SENT_ATTRIBUTE) is False:
        return False  # a call refused before it left the caller (policy, discovery) expects no server span
    return _TOOL_CALL in span.name or any(key in span.attributes for key in _MCP_CLIENT_KEYS)


def _reaches_server(span: SpanRecord, children: dict[str, list[SpanRecord]]) -> bool:
    stack = list(children.get(span.span_id, ()))
    while stack:
        child = stack.pop()
        if child.kind == "server":
            return True
        stack.extend(children.get(child.span_id, ()))
    return False


def _build_nodes(
    unique: dict[str, SpanRecord],
    children: dict[str, list[SpanRecord]],
    layout: dict[str, _Layout],
    flagged: set[str],
) -> dict[str, TraceNode]:
    # Post-order without recursion: deep traces must not hit the interpreter's recursion limit.
    nodes: dict[str, TraceNode] = {}
    order: list[SpanRecord] = []
    nested = {child.span_id for siblings in children.values() for child in siblings}
    stack = [span for span in unique.values() if span.span_id not in nested]
    while stack:
        span = stack.pop()
        order.append(span)
        stack.extend(children.get(span.span_id, ()))
    for span in reversed(order):
        placed = layout[span.span_id]
        nodes[span.span_id] = TraceNode(
            span_id=span.span_id,
            parent_id=span.parent_id,
            agent=span.agent,
            name=span.name,
            kind=span.kind,
            start=(span.start_ns + placed.shift_ns) / 1e9,
            end=(span.end_ns + placed.shift_ns) / 1e9,
            status=span.status,
            status_message=span.status_message,
            attributes=span.attributes,
            decisions=decisions_of(span, shift_ns=placed.shift_ns),
            children=_sorted(nodes, children.get(span.span_id, ())),
            orphan=span.span_id in flagged,
            skew_ms=placed.skew_ns / 1e6,
        )
    return nodes


def _sorted(nodes: dict[str, TraceNode], spans: Iterable[SpanRecord]) -> list[TraceNode]:
    return sorted((nodes[span.span_id] for span in spans), key=lambda node: (node.start, node.span_id))


def _synthetic_node(attached: list[SpanRecord], top: _Layout, nodes: dict[str, TraceNode]) -> TraceNode:
    agents = {span.agent for span in attached}
    return TraceNode(
        span_id=SYNTHETIC_ROOT_ID,
        parent_id=None,
        agent=agents.pop() if len(agents) == 1 else "unknown",
        name="(missing root span)",
        kind="internal",
        start=top.start_ns / 1e9,
        end=top.end_ns / 1e9,
        status="unset",
        attributes={},
        decisions=[],
        children=_sorted(nodes, attached),
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _alternatives(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(item) for item in value]  # pyright: ignore[reportUnknownVariableType]
    return [part.strip() for part in str(value).split(",") if part.strip()]
