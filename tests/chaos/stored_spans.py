"""What a registry's trace store holds, per agent: the other side of "spans acknowledged" and "spans emitted".

Reads the store file through the store's own API (`registry.trace_stores`), as any reader would,
while the registry runs or after it stopped.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Final

from mesh.wire import SpanRecord
from registry.trace_stores import open_trace_store

__all__ = ["stored_spans"]

_MAX_TRACES: Final = 30_000
"""More traces than a bounded test makes; the listing is asked for all of them at once."""


def stored_spans(path: Path) -> tuple[Counter[str], list[SpanRecord]]:
    """Spans stored in the SQLite trace store at `path`: a count per agent (`service.name`), and every span."""
    store = open_trace_store(None, path)
    try:
        traces = store.list_traces(limit=_MAX_TRACES)
        if len(traces) >= _MAX_TRACES:
            raise RuntimeError(f"the store holds {_MAX_TRACES} traces or more: too many for this count")
        spans = [span for summary in traces for span in store.get_trace(summary.trace_id)]
        if len(spans) != store.span_count():  # every stored span belongs to a listed trace
            raise RuntimeError(f"read {len(spans)} spans through the traces, the store counts {store.span_count()}")
    finally:
        store.close()
    return Counter(span.agent for span in spans), spans
