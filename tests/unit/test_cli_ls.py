"""`mesh ls`'s spans column: never silent about spans that were dropped or are waiting."""

from __future__ import annotations

import io

from rich.console import Console

from mesh.cli.ls import ADDRESSES_FROM, GOVERNANCE_FROM, peer_table, span_health
from mesh.wire import PeerView


def test_the_spans_column_names_drops_and_spooled_batches() -> None:
    counters = {"exported_spans": 5, "pending_batches": 2, "dropped_spans": 3, "dropped_batches": 1}
    shown = span_health(counters)
    assert "3 spans dropped" in shown
    assert "1 batches dropped" in shown
    assert "2 batches spooled" in shown


def test_a_healthy_exporter_shows_what_it_sent_and_unknown_or_off_say_so() -> None:
    assert "7 sent" in span_health({"exported_spans": 7, "dropped_spans": 0, "pending_batches": 0})
    assert "?" in span_health(None)
    assert "off" in span_health({})


def rendered(width: int | None) -> str:
    view = PeerView(
        name="support-triage",
        instance="339554dc",
        url="http://127.0.0.1:40105/mcp",
        tools=["handle", "escalate"],
        sources=["mdns", "registry"],
        healthy=True,
        metadata={"owner": "support-team", "jurisdiction": "eu", "data_class": "confidential"},
        verified=True,
        spans={"exported_spans": 12, "dropped_spans": 0},
    )
    console = Console(width=width or 250, file=io.StringIO(), record=True)
    console.print(peer_table([view], "mesh support-desk", width=width))
    return console.export_text()


def test_at_80_columns_the_essential_columns_keep_whole_words() -> None:
    narrow = rendered(80)
    for word in ("support-triage", "339554dc", "handle", "escalate", "healthy", "12 sent"):
        assert word in narrow
    for left_to_json in ("support-team", "confidential", "127.0.0.1", "registry"):
        assert left_to_json not in narrow


def test_wider_terminals_add_governance_then_addresses() -> None:
    medium = rendered(GOVERNANCE_FROM)
    assert "support-team" in medium
    assert "confidential" in medium
    assert "127.0.0.1" not in medium
    for wide in (rendered(ADDRESSES_FROM), rendered(None)):
        for word in ("support-team", "confidential", "http://127.0.0.1:40105/mcp", "mdns, registry"):
            assert word in wide


def test_an_agent_with_no_owner_is_flagged_ungoverned_in_the_table_and_the_json() -> None:
    plain = PeerView(
        name="plain",
        instance="0badc0de",
        url="http://127.0.0.1:40106/mcp",
        tools=["add"],
        sources=["registry"],
        healthy=True,
        metadata={"ungoverned": "true"},
    )
    owned = plain.model_copy(update={"name": "kb", "metadata": {"owner": "support-team"}})
    console = Console(width=80, file=io.StringIO(), record=True)
    console.print(peer_table([plain, owned], "mesh t", width=80))
    shown = console.export_text()
    assert "plain (ungoverned)" in shown
    assert "kb (ungoverned)" not in shown
    assert (plain.governed, owned.governed) == (False, True)
    assert plain.model_dump(mode="json")["governed"] is False
    assert owned.model_dump(mode="json")["governed"] is True
