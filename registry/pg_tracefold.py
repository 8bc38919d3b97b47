"""What a batch folds into the PostgreSQL store's `traces` rows: per-trace figures, and the statements.

`summarize` reduces a batch's rows to one `TraceFigures` per trace, in Python, before any
connection is taken; `fold` adds them to the stored rows in one statement (making the rows of
new traces), `pin` makes and locks the rows without figures, for a batch written in two steps.
The figures keep what the listing shows without reading spans: counts, times, denied and failed
spans (`registry.trace_outcomes`), the names, when the batch arrived, and the span that is the root
by the rules of `mesh.tracing.stitch.summarize`, with its outcome. Owns no COPY, no queries and no
schema (`registry.pg_tracestore`, `registry.pg_traceschema`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final, LiteralString, final

import psycopg

from registry.otlp import SpanRow
from registry.trace_outcomes import DENIED, ERROR, OK, outcome_code

__all__ = ["TraceFigures", "summarize", "fold", "pin", "plain", "no_nul"]


@final
class TraceFigures:
    """A trace's share of one batch: the figures folded into its `traces` row."""

    __slots__ = (
        "agents",
        "denied",
        "end",
        "failed",
        "lead",
        "lead_agent",
        "lead_outcome",
        "lead_tool",
        "spans",
        "start",
        "tool",
        "tooled",
        "tools",
    )

    def __init__(self, span: int, root: int, agent: str, start: int, end: int, outcome: int, tool: str) -> None:
        self.spans = 1
        self.start = start
        self.end = end
        self.denied = int(outcome == DENIED)
        self.failed = int(outcome == ERROR)
        self.lead = (1 - root, start, span)
        """The root is the span with the least (0 if parentless else 1, start, span id)."""
        self.lead_agent = agent
        self.lead_tool = tool
        self.lead_outcome = outcome
        self.tooled = (start, span) if tool else None
        """(start, span id) of the earliest span naming a tool, whose `tool` stands in for a root naming none."""
        self.tool = tool or None
        self.agents = {agent}
        self.tools = {tool} if tool else set[str]()

    def add(self, span: int, root: int, agent: str, start: int, end: int, outcome: int, tool: str) -> None:
        self.spans += 1
        if start < self.start:
            self.start = start
        if end > self.end:
            self.end = end
        if outcome:
            self.denied += outcome == DENIED
            self.failed += outcome == ERROR
        lead = (1 - root, start, span)
        if lead < self.lead:
            self.lead, self.lead_agent, self.lead_tool, self.lead_outcome = lead, agent, tool, outcome
        self.agents.add(agent)
        if tool:
            self.tools.add(tool)
            if self.tooled is None or (start, span) < self.tooled:
                self.tooled, self.tool = (start, span), tool


def summarize(rows: Sequence[SpanRow]) -> dict[bytes, TraceFigures]:
    """Each trace's figures in `rows`, by trace id."""
    traces: dict[bytes, TraceFigures] = {}
    for row in rows:
        trace_id, span, root, agent, _, start, end, status, tool, _ = row
        outcome = OK if status != 2 else outcome_code(row)
        found = traces.get(trace_id)
        if found is None:
            traces[trace_id] = TraceFigures(span, root, agent, start, end, outcome, tool)
        else:
            found.add(span, root, agent, start, end, outcome, tool)
    return traces


def fold(
    conn: psycopg.Connection[Any], traces: dict[bytes, TraceFigures], proposed: dict[bytes, int], arrived: int
) -> dict[bytes, int]:
    """Fold each trace's figures into its row (made with the proposed day if new); trace id -> its day.

    `arrived`: when the batch came, in ns since the epoch. Rows are taken in trace id order, so two
    transactions folding the same traces never deadlock.
    """
    ids = sorted(traces)
    figures = [traces[trace_id] for trace_id in ids]
    tooled = [t.tooled or (None, None) for t in figures]
    columns = [
        arrived,  # one value for every row
        _uuid_array(ids),
        _int_array([proposed[trace_id] for trace_id in ids]),
        _int_array([t.spans for t in figures]),
        _int_array([t.start for t in figures]),
        _int_array([t.end for t in figures]),
        _int_array([t.denied for t in figures]),
        _int_array([t.failed for t in figures]),
        _int_array([t.lead_outcome for t in figures]),
        _text_array([_joined(t.agents) for t in figures]),
        _text_array([_joined(t.tools) for t in figures]),
        _int_array([t.lead[0] for t in figures]),
        _int_array([t.lead[1] for t in figures]),
        _int_array([t.lead[2] for t in figures]),
        _text_array([no_nul(t.lead_agent) for t in figures]),
        _text_array([no_nul(t.lead_tool) for t in figures]),
        _int_array([start for start, _ in tooled]),
        _int_array([span for _, span in tooled]),
        _text_array([None if t.tool is None else no_nul(t.tool) for t in figures]),
    ]
    return dict(conn.execute(_FOLD, columns, binary=True).fetchall())


def pin(conn: psycopg.Connection[Any], trace_ids: Iterable[bytes], proposed: dict[bytes, int]) -> dict[bytes, int]:
    """Make the rows of the traces not stored yet (which any fold then fills), lock them all; trace id -> its day."""
    ids = sorted(trace_ids)
    found = conn.execute(_PIN, [_uuid_array(ids), _int_array([proposed[trace_id] for trace_id in ids])], binary=True)
    return dict(found.fetchall())


def plain(name: str) -> str:
    """A name as the `traces` name arrays hold it: no NUL (PostgreSQL text refuses it), no unit separator.

    The SQLite store joins names with the unit separator and keeps one found in a name as a
    space: this store does the same, so both answer a filter alike.
    """
    return name.replace("\x1f", " ").replace("\x00", "\ufffd")


def no_nul(text: str) -> str:
    """`text` as PostgreSQL text can hold it: a NUL made U+FFFD."""
    return text.replace("\x00", "\ufffd")


# -- private helpers ---------------------------------------------------------------------------

# The fold's columns travel as array literals: psycopg adapts a list element by element in
# Python, several times slower than joining their text here and parsing it in the server.


def _int_array(values: Sequence[int | None]) -> str:
    if None in values:
        return "{" + ",".join("NULL" if value is None else str(value) for value in values) + "}"
    return "{" + ",".join(map(str, values)) + "}"


def _uuid_array(values: Sequence[bytes]) -> str:
    return "{" + ",".join([value.hex() for value in values]) + "}"


def _text_array(values: Sequence[str | None]) -> str:
    """Elements quoted, a quote or backslash in them escaped; None as NULL. They hold no NUL (`plain`)."""
    quoted = (
        "NULL" if value is None else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' for value in values
    )
    return "{" + ",".join(quoted) + "}"


def _joined(names: set[str]) -> str:
    # `_FOLD` splits them again: a text[] per trace cannot travel in one array parameter.
    return "\x1f".join(map(plain, names))


def _lead_wins(column: LiteralString) -> LiteralString:
    lead = "(excluded.lead_rank, excluded.lead_start, excluded.lead_span) < (t.lead_rank, t.lead_start, t.lead_span)"
    return f"{column} = CASE WHEN {lead} THEN excluded.{column} ELSE t.{column} END"


def _tool_wins(column: LiteralString) -> LiteralString:
    earlier = "(excluded.tool_start, excluded.tool_span) < (t.tool_start, t.tool_span)"
    wins = f"excluded.tool_start IS NOT NULL AND (t.tool_start IS NULL OR {earlier})"
    return f"{column} = CASE WHEN {wins} THEN excluded.{column} ELSE t.{column} END"


def _merged(column: LiteralString) -> LiteralString:
    union = f"ARRAY(SELECT DISTINCT unnest(t.{column} || excluded.{column}))"
    return f"{column} = CASE WHEN t.{column} @> excluded.{column} THEN t.{column} ELSE {union} END"


_FOLD: Final = f"""
INSERT INTO traces AS t (trace_id, day, span_count, start_ns, end_ns, denied, failed, lead_outcome, arrived_ns,
    agents, tools, lead_rank, lead_start, lead_span, lead_agent, lead_tool, tool_start, tool_span, tool)
SELECT i, d, n, s, e, x, f, lo, %s::int8,
    string_to_array(a, chr(31)), string_to_array(o, chr(31)), lr, ls, lp, la, lt, ts, tp, tn
FROM unnest(%s::uuid[], %s::int4[], %s::int4[], %s::int8[], %s::int8[], %s::int4[], %s::int4[], %s::int2[],
    %s::text[], %s::text[], %s::int2[], %s::int8[], %s::int8[], %s::text[], %s::text[], %s::int8[], %s::int8[],
    %s::text[]) AS b(i, d, n, s, e, x, f, lo, a, o, lr, ls, lp, la, lt, ts, tp, tn)
ORDER BY i
ON CONFLICT (trace_id) DO UPDATE SET
    span_count = t.span_count + excluded.span_count,
    start_ns = least(t.start_ns, excluded.start_ns),
    end_ns = greatest(t.end_ns, excluded.end_ns),
    denied = t.denied + excluded.denied,
    failed = t.failed + excluded.failed,
    arrived_ns = greatest(t.arrived_ns, excluded.arrived_ns),
    {_lead_wins("lead_outcome")},
    {_merged("agents")},
    {_merged("tools")},
    {_lead_wins("lead_rank")},
    {_lead_wins("lead_start")},
    {_lead_wins("lead_span")},
    {_lead_wins("lead_agent")},
    {_lead_wins("lead_tool")},
    {_tool_wins("tool_start")},
    {_tool_wins("tool_span")},
    {_tool_wins("tool")}
RETURNING uuid_send(trace_id), day
"""
"""Fold a batch's figures into `traces`, a row per trace, and give each trace's day (its own if stored before)."""
_PIN: Final = """
INSERT INTO traces AS t (trace_id, day, span_count, start_ns, end_ns, denied, failed, lead_outcome, agents, tools,
    lead_rank, lead_start, lead_span, lead_agent, lead_tool)
SELECT i, d, 0, 9223372036854775807, -9223372036854775808, 0, 0, 0, '{}', '{}', 2, 0, 0, '', ''
FROM unnest(%s::uuid[], %s::int4[]) AS b(i, d) ORDER BY i
ON CONFLICT (trace_id) DO UPDATE SET day = t.day
RETURNING uuid_send(trace_id), day
"""
"""Make rows that any fold replaces for traces not stored yet, lock all, and give each trace's day."""
