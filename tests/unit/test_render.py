"""Renderings of traces for people: the `mesh traces ls` table in wide and narrow terminals, a decision's line."""

from __future__ import annotations

import io
from datetime import date, datetime

from rich.console import Console

from mesh.tracing.render import AGENTS_FROM, SHORT_ID, WHOLE_IDS_FROM, decision_line, render_summaries
from mesh.wire import Decision, TraceRoot, TraceSummary

TODAY = date(2026, 12, 2)
TRACE = "6b0f7bb63fa9c2d17b8e4a6f01c2d3e4"
OTHER = "ab" * 16


def table(width: int | None) -> str:
    """The table as `mesh traces ls` prints it in a terminal `width` columns wide (None: no limit)."""
    found = [
        TraceSummary(
            trace_id=trace_id,
            root=TraceRoot(agent="support-triage", tool="handle_ticket"),
            agents=["crm", "support-billing", "support-triage"],
            span_count=14,
            start=started.timestamp(),
            duration_ms=1234.5,
            status="ok",
        )
        for trace_id, started in ((TRACE, datetime(2026, 12, 2, 9, 5, 7)), (OTHER, datetime(2026, 11, 30, 23, 59, 58)))
    ]
    console = Console(width=width or 250, file=io.StringIO(), record=True)
    console.print(render_summaries(found, width=width, today=TODAY))
    return console.export_text()


def test_at_80_columns_the_ids_are_cut_and_the_root_keeps_its_room() -> None:
    narrow = table(80)
    assert TRACE[:SHORT_ID] in narrow
    assert TRACE not in narrow
    assert "09:05:07" in narrow  # today: the clock alone
    assert "2026-12-02" not in narrow
    assert "11-30 23:59" in narrow  # an earlier day: the day, to the minute
    assert "support-triage" in narrow
    assert "handle_ticket" in narrow
    assert "support-billing" not in narrow  # the agents are left to `traces show`


def test_a_medium_terminal_lists_the_agents_beside_short_ids() -> None:
    medium = table(AGENTS_FROM)
    assert TRACE[:SHORT_ID] in medium
    assert TRACE not in medium
    assert "support-billing" in medium


def test_a_wide_terminal_shows_whole_ids_and_dates() -> None:
    for width in (WHOLE_IDS_FROM, None):
        wide = table(width)
        assert TRACE in wide
        assert OTHER in wide
        assert "2026-12-02 09:05:07" in wide
        assert "2026-11-30 23:59:58" in wide
        assert "support-billing" in wide


def test_a_decision_line_shows_its_confidence_and_the_alternatives_it_passed_over() -> None:
    route = Decision(
        kind="route",
        choice="general",
        reason="no route keyword found",
        confidence=0.2,
        alternatives=["billing", "refunds", "general"],
        time=1.0,
    )
    assert decision_line(route) == (
        "decision route → general (0.20): no route keyword found; alternatives: billing, refunds"
    )  # the choice is not its own alternative
    assert decision_line(Decision(kind="fallback", choice="skip analytics", time=1.0)) == (
        "decision fallback → skip analytics"
    )
