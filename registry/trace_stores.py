"""The trace store seam: the `TraceStore` Protocol, and `open_trace_store`, which picks its backend.

A `postgresql://` URL opens the PostgreSQL store (`registry.pg_tracestore`, imported only then),
anything else a SQLite file (`registry.tracestore`), the embedded default. Both keep the same
contracts: ingest is idempotent by (trace_id, span_id), a trace is listed with the summary
`mesh.tracing.stitch.summarize` gives it, and `prune` drops whole traces past the retention.
Owns no storage itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from mesh.errors import ConfigError
from mesh.wire import SpanRecord, TraceSummary
from registry.otlp import SpanRow
from registry.tracestore import SqliteTraceStore

__all__ = ["TraceStore", "open_trace_store", "is_postgres_url"]


class TraceStore(Protocol):
    """Spans and per-trace summaries, safe to call from any thread."""

    @property
    def location(self) -> str | None:
        """Where another process opens this same store (a file path or a URL); None: this process only."""
        ...

    @property
    def retain(self) -> float | None:
        """Seconds a trace is kept after its start (`prune` drops older ones); None: for ever."""
        ...

    def ingest(self, rows: Sequence[SpanRow]) -> int:
        """Store rows in one transaction, durable on return; how many were not stored before."""
        ...

    def get_trace(self, trace_id: str) -> list[SpanRecord]:
        """Every stored span of one trace (hex id), in no particular order; [] if unknown."""
        ...

    def last_arrival(self, trace_id: str) -> float | None:
        """When the latest span of one trace (hex id) was stored, in epoch seconds by this host's clock, if known."""
        ...

    def trace_ids_starting(self, prefix: str, limit: int = 2) -> list[str]:
        """Up to `limit` stored trace ids beginning with the hex `prefix`, in id order."""
        ...

    def list_traces(
        self,
        agent: str | None = None,
        tool: str | None = None,
        status: str | None = None,
        since: float | None = None,
        min_duration_ms: float | None = None,
        limit: int = 50,
        *,
        denied: bool | None = None,
        errors: bool | None = None,
        in_progress_after: float | None = None,
    ) -> list[TraceSummary]:
        """The latest traces first, filtered: an agent or tool anywhere in the trace, the root's status
        (ok or error), start, duration, and whether a call was denied (`denied`) or a span failed
        (`errors`) beside the root: True, at least one; False, none.

        A trace whose root has not arrived and whose latest span was stored after `in_progress_after`
        (epoch seconds, this host's clock) is marked in progress; None marks none. Raises ValueError
        for a status other than ok or error.
        """
        ...

    def span_count(self) -> int:
        """How many distinct spans are stored."""
        ...

    def checkpoint(self) -> None:
        """Housekeeping the tracer runs in the background every few thousand spans stored."""
        ...

    def prune(self, now: float) -> int:
        """Drop the traces that started more than `retain` seconds before `now`; how many went."""
        ...

    def close(self) -> None:
        """Release connections and files; the store cannot be used afterwards."""
        ...


def is_postgres_url(db: str | None) -> bool:
    """True for a `postgresql://` (or `postgres://`) URL, which selects the PostgreSQL store."""
    return db is not None and db.startswith(("postgresql://", "postgres://"))


def open_trace_store(
    db: str | None, default_path: Path, *, retain: float | None = None, connections: int = 8
) -> TraceStore:
    """The store `db` names: a PostgreSQL URL, a SQLite file; None: the SQLite file at `default_path`.

    `retain` is in seconds (None keeps everything); `connections` bounds the PostgreSQL pool.
    ConfigError, in one line, for a bad retention, a database that cannot be reached or one
    written by a newer agentplex.
    """
    if retain is not None and not retain > 0:
        raise ConfigError(f"the retention must be a positive duration, not {retain:g} s")
    if is_postgres_url(db):
        assert db is not None
        from registry.pg_tracestore import PgTraceStore

        return PgTraceStore(db, retain=retain, connections=connections)
    return SqliteTraceStore(db or default_path, retain=retain)
