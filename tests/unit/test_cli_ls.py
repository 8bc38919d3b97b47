"""`mesh ls`'s spans column: never silent about spans that were dropped or are waiting."""

from __future__ import annotations

from mesh.cli.ls import span_health


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
