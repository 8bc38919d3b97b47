"""Renderings of decision traces: a rich tree, a rich table of summaries, and plain text for an LLM.

Pure functions from wire models to renderables or strings; printing, paging and colour
detection are the caller's. Owns no stitching (see `mesh.tracing.stitch`) and no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date, datetime
from typing import Final

from rich.console import JustifyMethod
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from mesh.tracing.stitch import SYNTHETIC_ROOT_ID
from mesh.wire import Decision, SpanStatus, TraceNode, TraceSummary, TraceTree

__all__ = [
    "AGENTS_FROM",
    "SHORT_ID",
    "WHOLE_IDS_FROM",
    "decision_line",
    "explain",
    "render_summaries",
    "render_tree",
    "status_cell",
]

SHORT_ID: Final = 16
"""Hex digits of a trace id shown in a narrow terminal: the mesh's ids begin with the 256th of a
second they were made in (`mesh.tracing.spans.trace_id_at`), so 16 digits leave 24 random bits to
tell apart the traces of one such moment (as many as 32 bits did for a whole second)."""
WHOLE_IDS_FROM: Final = 160
"""Terminal columns from which `render_summaries` shows whole trace ids and start times."""
AGENTS_FROM: Final = 110
"""Terminal columns from which `render_summaries` lists each trace's agents."""


def render_tree(tree: TraceTree) -> Tree:
    """The trace as a tree: agent, span, duration, status; decisions and errors as sub-lines.

    The header says how the root call ended, what failed beside it, and whether the trace is
    complete; one in progress (spans still arriving) lists no gaps, as they are expected.
    """
    parts = [f"[bold]trace {tree.trace_id}[/]", f"{tree.span_count} spans"]
    outcome = "" if tree.root.span_id == SYNTHETIC_ROOT_ID else _outcome(tree.root.status)  # no root: not known yet
    parts.append((outcome + _beside(tree.denied, tree.errors)).removeprefix(" · "))
    if tree.in_progress:
        parts.append("[cyan]in progress[/] [dim](spans still arriving)[/]")
    else:
        parts.append("[green]complete[/]" if tree.complete else "[yellow]incomplete[/]")
    header = "  ".join(part for part in parts if part)
    if not tree.in_progress:
        header += "".join(f"\n[yellow]⚠ {escape(reason)}[/]" for reason in tree.incomplete_reasons)
    top = Tree(header, guide_style="dim")
    stack: list[tuple[Tree, TraceNode]] = [(top, tree.root)]
    while stack:
        parent, node = stack.pop()
        branch = parent.add(_node_label(node, tree.root.start))
        for decision in node.decisions:
            line, alternatives = _decision_parts(decision)
            branch.add(Text.assemble(("◆ ", "magenta"), line, (alternatives, "dim")))
        if node.status == "error" and node.status_message:
            branch.add(Text(f"✗ {node.status_message}", style="red"))
        stack.extend((branch, child) for child in reversed(node.children))
    return top


def render_summaries(
    summaries: Sequence[TraceSummary], *, width: int | None = None, today: date | None = None
) -> Table:
    """`mesh traces ls` as a table, one trace per row, laid out for a terminal `width` columns wide.

    Narrower than `WHOLE_IDS_FROM`, ids are cut to their first `SHORT_ID` hex digits (which
    `mesh traces show` takes) and start times to the clock for `today` (default: the local date
    now), to day and minute before, and a status's counts to lines of their own; narrower than
    `AGENTS_FROM`, the agents column is left out (`traces show` has them) so that the root keeps its
    room. No width: everything, in full.
    """
    narrow = width is not None and width < WHOLE_IDS_FROM
    columns: list[tuple[str, JustifyMethod]] = [
        (name, justify) for name, justify, room in _COLUMNS if width is None or width >= room
    ]
    table = Table(show_edge=False, header_style="bold")
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=name not in ("root", "agents"))
    today = (today or date.today()) if narrow else None
    for summary in summaries:
        cells = {
            "trace": summary.trace_id[:SHORT_ID] if narrow else summary.trace_id,
            "started": _started(summary.start, today),
            "root": escape(f"{summary.root.agent} {summary.root.tool or ''}".rstrip()),  # as `mesh call` takes them
            "agents": escape(", ".join(summary.agents)),
            "spans": str(summary.span_count),
            "ms": f"{summary.duration_ms:.1f}",
            "status": status_cell(summary, narrow=narrow),
        }
        table.add_row(*(cells[name] for name, _ in columns))
    return table


def status_cell(summary: TraceSummary, *, narrow: bool = False) -> str:
    """A trace's status as `mesh traces ls` shows it (rich markup): "ok · 1 denied", "in progress", ...

    `narrow`: each count on a line of its own, so the cell takes the room of "in progress" at most.
    """
    shown = "[cyan]in progress[/]" if summary.in_progress else _outcome(summary.status)
    return (shown + _beside(summary.denied, summary.errors)).replace(" · ", "\n· " if narrow else " · ")


def decision_line(decision: Decision) -> str:
    """One decision as a line: "decision route → billing (0.82): invoice keyword; alternatives: refunds"."""
    return "".join(_decision_parts(decision))


def explain(tree: TraceTree, span_id: str | None = None) -> str:
    """The decisions of a trace (or of one span) as plain text: who decided what, why, and on which call."""
    lines = [_trace_line(tree)]
    lines.extend(f"Incomplete: {reason}." for reason in tree.incomplete_reasons)
    found = [(path, node) for path, node in _paths(tree.root) if span_id is None or node.span_id == span_id]
    if span_id is not None and not found:
        return "\n".join([*lines, f"No span {span_id} in this trace."])
    decided = [(path, node) for path, node in found if node.decisions]
    if not decided:
        lines.append("No decisions were recorded" + (f" on span {span_id}." if span_id else " in this trace."))
    for path, node in decided:
        for decision in node.decisions:
            lines.append("")
            lines.append(f"Agent {node.agent} decided {decision.kind} in {node.name} (span {node.span_id}).")
            lines.append(f"  Call path: {' → '.join(path)}")
            lines.append(f"  Choice: {decision.choice if decision.choice is not None else '(none recorded)'}")
            if decision.alternatives:
                lines.append(f"  Alternatives: {', '.join(decision.alternatives)}")
            lines.append(f"  Reason: {decision.reason or '(none recorded)'}")
            if decision.confidence is not None:
                lines.append(f"  Confidence: {decision.confidence:.2f}")
            lines.append(f"  At: {_clock(decision.time)}")
            for key, value in decision.attributes.items():
                lines.append(f"  {key}: {value}")
    errors = [node for _, node in found if node.status == "error"]
    if errors:
        lines.append("")
        for node in errors:
            lines.append(f"Error in {node.agent} {node.name} (span {node.span_id}): {node.status_message or 'failed'}")
    return "\n".join(lines)


# -- private helpers ---------------------------------------------------------------------------

_STATUS_STYLE: Final[dict[SpanStatus, str]] = {"ok": "green", "error": "bold red", "unset": "dim"}
_COLUMNS: Final[tuple[tuple[str, JustifyMethod, int], ...]] = (  # name, justify, terminal columns to be shown
    ("trace", "left", 0),
    ("started", "left", 0),
    ("root", "left", 0),
    ("agents", "left", AGENTS_FROM),
    ("spans", "right", 0),
    ("ms", "right", 0),
    ("status", "left", 0),
)


def _decision_parts(decision: Decision) -> tuple[str, str]:
    """A decision's line, and the alternatives it passed over as its end ("" if none): the tree dims them."""
    line = f"decision {decision.kind}"
    if decision.choice is not None:
        line += f" → {decision.choice}"
    if decision.confidence is not None:
        line += f" ({decision.confidence:.2f})"
    if decision.reason:
        line += f": {decision.reason}"
    alternatives = [alternative for alternative in decision.alternatives if alternative != decision.choice]
    return line, f"; alternatives: {', '.join(alternatives)}" if alternatives else ""


def _outcome(status: SpanStatus) -> str:
    shown = "error" if status == "error" else "ok"  # OpenTelemetry's unset: nothing went wrong
    return f"[{_STATUS_STYLE[shown]}]{shown}[/]"


def _beside(denied: int, errors: int) -> str:
    """What failed beside the root, as " · 1 denied · 2 errors" (nothing when nothing did)."""
    counts = ""
    if denied:
        counts += f" · [yellow]{denied} denied[/]"
    if errors:
        counts += f" · [red]{errors} error{'s' if errors != 1 else ''}[/]"
    return counts


def _node_label(node: TraceNode, origin: float) -> str:
    duration = max(0.0, node.end - node.start) * 1000
    offset = (node.start - origin) * 1000
    label = (
        f"[cyan]{escape(node.agent)}[/] {escape(node.name)}  [dim]{node.kind}[/]  "
        f"{duration:.1f} ms [dim]@+{offset:.1f}[/]"
    )
    if node.span_id != SYNTHETIC_ROOT_ID:  # a stand-in has no outcome of its own
        label += f"  {_outcome(node.status)}"
    if node.orphan:
        label += "  [yellow](orphan)[/]"
    if node.skew_ms:
        label += f"  [dim](clock skew {node.skew_ms:+.1f} ms corrected)[/]"
    return label


def _started(epoch: float, today: date | None) -> str:
    # In full; or, given the day it is (a narrow table), the clock alone for today, no seconds before.
    started = datetime.fromtimestamp(epoch)
    if today is None:
        return started.strftime("%Y-%m-%d %H:%M:%S")
    return started.strftime("%H:%M:%S" if started.date() == today else "%m-%d %H:%M")


def _trace_line(tree: TraceTree) -> str:
    root = tree.root
    state = "in progress" if tree.in_progress else "complete" if tree.complete else "incomplete"
    beside = [f"{tree.denied} call(s) denied"] if tree.denied else []
    beside += [f"{tree.errors} span(s) failed"] if tree.errors else []
    if root.span_id != SYNTHETIC_ROOT_ID:
        state += ", " + ("error" if root.status == "error" else "ok")
    if beside:
        state += f" ({' and '.join(beside)} beside the root)"
    duration = max(0.0, root.end - root.start) * 1000
    return (
        f"Trace {tree.trace_id}: {root.agent} {root.name}, {tree.span_count} spans, "
        f"{duration:.1f} ms, {state}, started {_clock(root.start)}."
    )


def _paths(root: TraceNode) -> Iterator[tuple[list[str], TraceNode]]:
    stack: list[tuple[list[str], TraceNode]] = [([_step(root)], root)]
    while stack:
        path, node = stack.pop()
        yield path, node
        stack.extend(([*path, _step(child)], child) for child in reversed(node.children))


def _step(node: TraceNode) -> str:
    return f"{node.agent}:{node.name}"


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).isoformat(timespec="milliseconds")
