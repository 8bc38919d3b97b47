"""`mesh traces show` in a terminal: a long decision wraps under its branch instead of being cut off."""

from __future__ import annotations

import io

from rich.console import Console

from mesh.cli.traces import print_tree
from mesh.wire import Decision, TraceNode, TraceTree

REASON = "keywords invoice, charged, card, twice; top article KB-103 agrees with the billing queue's rules"


def tree() -> TraceTree:
    route = Decision(kind="route", choice="billing", reason=REASON, confidence=0.82, time=1.0)
    root = TraceNode(
        span_id="a" * 16,
        parent_id=None,
        agent="triage",
        name="tools/call handle",
        kind="server",
        start=1.0,
        end=1.2,
        status="ok",
        attributes={},
        decisions=[route],
        children=[],
    )
    return TraceTree(trace_id="6b" * 16, complete=True, root=root, span_count=1)


def test_a_long_decision_wraps_whole_within_an_80_column_terminal() -> None:
    # soft_wrap as the CLI's own console has it: the tree must still wrap.
    console = Console(width=80, file=io.StringIO(), record=True, soft_wrap=True)

    print_tree(tree(), console)

    lines = console.export_text().splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    assert " ".join(" ".join(line.split()) for line in lines).count("agrees with the billing queue's rules") == 1
