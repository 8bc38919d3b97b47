"""The trace store: spans in SQLite (WAL), idempotent by (trace_id, span_id), with per-trace summaries.

Owns the schema, ingestion and the two queries (one trace by id; the trace listing). A trace
gets a sequence number (its rowid in `traces`) on first sight and spans are unique by (sequence,
span_id), so a batch appends rather than scattering writes and a trace is one index range. Each
batch's spans are summarised per trace before the write lock is taken, and the summaries folded
into `traces`, `trace_agents` and `trace_tools` under it (a batch holding duplicates is folded
from its new rows in SQL instead), so listing never scans spans. Owns no decoding
(`registry.otlp`), stitching or HTTP.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import sqlite3
import threading
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Final, NamedTuple, cast, final

from mesh.wire import SpanRecord, TraceRoot, TraceSummary
from registry.otlp import SpanRow, span_record

__all__ = ["TraceStore"]


@final
class TraceStore:
    """Spans and trace summaries in one SQLite file (or ":memory:"); parent directories are created.

    Thread-safe: call it from any thread (the tracer uses `anyio.to_thread`). Writes go through
    one connection under a lock, reads through a second under their own lock and checkpoints
    through a third, so a query never waits behind an ingest (WAL lets them run side by side).
    Several processes may write one file (the tracer's ingest workers): a transaction holds an
    advisory lock on "<file>-lock", which hands over at once where SQLite's busy handler would
    sleep for milliseconds. A committed batch survives the process being killed (WAL,
    synchronous=NORMAL), not a power cut.
    """

    def __init__(self, path: str | Path) -> None:
        memory = str(path) == ":memory:"
        target = ":memory:" if memory else str(Path(path).expanduser())
        self.path: Final = None if memory else Path(target)
        """The database file; None for ":memory:"."""
        if not memory:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        # Its own file: closing any descriptor of the database would drop SQLite's POSIX locks.
        self._lock_file = None if memory else open(f"{target}-lock", "ab")  # noqa: SIM115 (closed in close())
        self._writer = _connect(target)
        self._writer.executescript(_SCHEMA)
        self._reader = self._writer if memory else _connect(target)
        self._checkpointer = None if memory else _connect(target)
        self._write_lock = threading.Lock()
        self._read_lock = self._write_lock if memory else threading.Lock()
        self._checkpoint_lock = threading.Lock()

    def ingest(self, rows: Sequence[SpanRow]) -> int:
        """Store rows in one transaction and return how many were new; they are durable on return."""
        if not rows:
            return 0
        # Python's share of the work happens before the locks: writers queue for them, not for it.
        flat: list[object] = []
        extend = flat.extend
        for row in rows:
            extend(row)
        summary = _summarize(rows)
        with self._write_lock, self._across_processes():
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                fresh = self._insert(conn, flat, summary)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return fresh

    def get_trace(self, trace_id: str) -> list[SpanRecord]:
        """Every stored span of one trace (hex id), in no particular order; [] if unknown."""
        key = _trace_key(trace_id)
        if key is None:
            return []
        with self._read_lock:
            rows = self._reader.execute(_GET_TRACE, (key,)).fetchall()
        hex_id = key.hex()
        return [span_record(hex_id, agent, instance or None, body) for agent, instance, body in rows]

    def list_traces(
        self,
        agent: str | None = None,
        tool: str | None = None,
        status: str | None = None,
        since: float | None = None,
        min_duration_ms: float | None = None,
        limit: int = 50,
    ) -> list[TraceSummary]:
        """The latest traces first, filtered: an agent or tool anywhere in the trace, status, start, duration."""
        where: list[str] = []
        params: list[object] = []
        if agent is not None:
            where.append("EXISTS (SELECT 1 FROM trace_agents WHERE agent = ? AND trace_seq = t.seq)")
            params.append(agent)
        if tool is not None:
            where.append("EXISTS (SELECT 1 FROM trace_tools WHERE tool = ? AND trace_seq = t.seq)")
            params.append(tool)
        if status is not None:
            if status not in ("ok", "error"):
                raise ValueError(f"status must be 'ok' or 'error', not {status!r}")
            where.append("t.error = 1" if status == "error" else "t.error = 0")
        if since is not None:
            where.append("t.start_ns >= ?")
            params.append(int(since * 1e9))
        if min_duration_ms is not None:
            where.append("t.end_ns - t.start_ns >= ?")
            params.append(int(min_duration_ms * 1e6))
        params.append(max(0, limit))
        with self._read_lock:
            rows = self._reader.execute(_LIST.format(where=" AND ".join(where) or "1"), params).fetchall()
            marks = ",".join("?" * len(rows))
            roots: dict[int, tuple[str, str]] = {
                rowid: (root_agent, root_tool)
                for rowid, root_agent, root_tool in self._reader.execute(
                    _ROOTS.format(marks=marks), [row[6] for row in rows]
                )
            }
            first_tools: dict[int, str] = {}
            for row in rows:
                if not roots[row[6]][1]:
                    found = self._reader.execute(_FIRST_TOOL, (row[1],)).fetchone()
                    first_tools[row[1]] = found[0] if found else ""
        return [
            TraceSummary(
                trace_id=trace_id.hex(),
                root=TraceRoot(agent=roots[root][0], tool=roots[root][1] or first_tools.get(seq) or None),
                agents=sorted(agents.split("\x1f")),
                span_count=span_count,
                start=start_ns / 1e9,
                duration_ms=max(0, end_ns - start_ns) / 1e6,
                status="error" if error else "ok",
            )
            for trace_id, seq, span_count, start_ns, end_ns, error, root, agents in rows
        ]

    def span_count(self) -> int:
        """How many distinct spans are stored."""
        with self._read_lock:
            return self._reader.execute("SELECT coalesce(sum(span_count), 0) FROM traces").fetchone()[0]

    def _insert(self, conn: sqlite3.Connection, flat: list[object], summary: _Summary) -> int:
        # `flat`: the rows' values one after another, the trace id (bytes) where the sequence goes.
        row_traces = cast("list[bytes]", flat[0::_SPAN_COLUMNS])
        trace_ids = list(summary.traces)
        keys = [bytearray(trace_id) for trace_id in trace_ids]  # bytearray: bound without adapter lookups
        seqs: dict[bytes, int] = {}
        for at, size in _chunks(len(keys)):
            seqs.update(conn.execute(_select_seqs(size), keys[at : at + size]))
        if len(seqs) < len(trace_ids):
            last = conn.execute("SELECT coalesce(max(seq), 0) FROM traces").fetchone()[0]
            new = [(trace_id, last + at) for at, trace_id in enumerate((t for t in trace_ids if t not in seqs), 1)]
            flat_new = [value for trace_id, seq in new for value in (bytearray(trace_id), seq)]
            for at, size in _chunks(len(new)):
                conn.execute(_insert_values("traces (trace_id, seq)", 2, size), flat_new[at * 2 : (at + size) * 2])
            seqs.update(new)
        before = conn.execute("SELECT coalesce(max(rowid), 0) FROM spans").fetchone()[0]
        changes = conn.total_changes
        # Many rows per statement, not executemany: one GIL release per chunk instead of per row, so
        # SQLite's work runs beside the event loop instead of trading the GIL with it 512 times.
        flat[0::_SPAN_COLUMNS] = [seqs[trace_id] for trace_id in row_traces]
        for at, size in _chunks(len(row_traces)):
            conn.execute(
                _insert_values("spans", _SPAN_COLUMNS, size), flat[at * _SPAN_COLUMNS : (at + size) * _SPAN_COLUMNS]
            )
        fresh = conn.total_changes - changes
        if fresh == len(row_traces):
            _fold_summary(conn, summary, seqs)
        elif fresh:
            for fold in _FOLDS:
                conn.execute(fold, (before,))
        return fresh

    @contextlib.contextmanager
    def _across_processes(self) -> Generator[None]:
        if self._lock_file is None:
            yield
            return
        fcntl.flock(self._lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)

    def checkpoint(self) -> None:
        """Copy committed pages from the WAL into the database without blocking ingest or queries.

        Call it in the background every few commits; otherwise the writer does it itself once the
        WAL passes ~32 MB, and ingest then waits for the disk.
        """
        if self._checkpointer is not None:
            with self._checkpoint_lock:
                self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def close(self) -> None:
        """Close every connection; the store cannot be used afterwards."""
        with self._checkpoint_lock:
            if self._checkpointer is not None:
                self._checkpointer.close()
        with self._write_lock:
            self._writer.close()
            if self._lock_file is not None:
                self._lock_file.close()
        if self._reader is not self._writer:
            with self._read_lock:
                self._reader.close()


# -- private helpers ---------------------------------------------------------------------------

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS traces (
    seq INTEGER PRIMARY KEY,  -- rowid: the order traces were first seen
    trace_id BLOB NOT NULL UNIQUE,
    span_count INTEGER NOT NULL DEFAULT 0,
    start_ns INTEGER,
    end_ns INTEGER,
    error INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS traces_by_start ON traces (start_ns);
CREATE INDEX IF NOT EXISTS traces_errors_by_start ON traces (start_ns) WHERE error = 1;
CREATE TABLE IF NOT EXISTS spans (
    trace_seq INTEGER NOT NULL,
    span_id INTEGER NOT NULL,  -- registry.otlp.span_key: signed, in the order of the id's bytes
    root INTEGER NOT NULL,  -- 1: the span has no parent
    agent TEXT NOT NULL,
    instance TEXT NOT NULL,  -- '' when unknown
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    status INTEGER NOT NULL,  -- OTLP enum: 0 unset, 1 ok, 2 error
    tool TEXT NOT NULL,  -- '' when the span names none
    body BLOB NOT NULL,  -- the OTLP Span message as received: ids, name, kind, attributes, events, links
    UNIQUE (trace_seq, span_id)
);
CREATE INDEX IF NOT EXISTS spans_roots ON spans (trace_seq, start_ns, span_id) WHERE root = 1;
CREATE TABLE IF NOT EXISTS trace_agents (
    trace_seq INTEGER NOT NULL, agent TEXT NOT NULL, PRIMARY KEY (trace_seq, agent)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS trace_agents_by_agent ON trace_agents (agent, trace_seq);
CREATE TABLE IF NOT EXISTS trace_tools (
    tool TEXT NOT NULL, trace_seq INTEGER NOT NULL, PRIMARY KEY (tool, trace_seq)
) WITHOUT ROWID;
"""
_SPAN_COLUMNS: Final = 10
_CHUNK_SIZES: Final = (256, 128, 64, 32, 16, 8, 4, 2, 1)


class _Summary(NamedTuple):
    """A batch summarised per trace, for when every span in it is new."""

    traces: dict[bytes, list[int]]  # trace id -> [spans, earliest start, latest end, 1 if an error]
    agents: set[tuple[bytes, str]]  # (trace id, agent)
    tools: set[tuple[str, bytes]]  # (tool, trace id)


def _summarize(rows: Sequence[SpanRow]) -> _Summary:
    summary = _Summary({}, set(), set())
    traces, add_agent, add_tool = summary.traces, summary.agents.add, summary.tools.add
    for trace_id, _, _, agent, _, start, end, status, tool, _ in rows:
        add_agent((trace_id, agent))
        if tool:
            add_tool((tool, trace_id))
        found = traces.get(trace_id)
        if found is None:
            traces[trace_id] = [1, start, end, 1 if status == 2 else 0]
            continue
        found[0] += 1
        if start < found[1]:
            found[1] = start
        if end > found[2]:
            found[2] = end
        if status == 2:
            found[3] = 1
    return summary


def _fold_summary(conn: sqlite3.Connection, summary: _Summary, seqs: dict[bytes, int]) -> None:
    flat: list[object] = []
    for trace_id, (spans, start, end, error) in summary.traces.items():
        flat += (seqs[trace_id], spans, start, end, error)
    for at, size in _chunks(len(summary.traces)):
        conn.execute(_fold_values(size), flat[at * 5 : (at + size) * 5])
    flat = [value for trace_id, agent in summary.agents for value in (seqs[trace_id], agent)]
    for at, size in _chunks(len(summary.agents)):
        conn.execute(_insert_values("trace_agents", 2, size), flat[at * 2 : (at + size) * 2])
    flat = [value for tool, trace_id in summary.tools for value in (tool, seqs[trace_id])]
    for at, size in _chunks(len(summary.tools)):
        conn.execute(_insert_values("trace_tools", 2, size), flat[at * 2 : (at + size) * 2])


_FOLD_TRACES: Final = """
UPDATE traces SET
    span_count = traces.span_count + f.n,
    start_ns = min(coalesce(traces.start_ns, f.start_ns), f.start_ns),
    end_ns = max(coalesce(traces.end_ns, f.end_ns), f.end_ns),
    error = max(traces.error, f.error)
FROM ({per_trace}) AS f
WHERE traces.seq = f.trace_seq
"""
"""Fold per-trace figures (trace_seq, n, start_ns, end_ns, error) into `traces`."""
# For a batch holding duplicates, its new spans are those past its starting rowid (an ignored
# duplicate takes none); each fold below reads that rowid range in SQLite. NOT INDEXED keeps the
# planner on the range instead of walking a whole index.
_FOLDS: Final = (
    _FOLD_TRACES.format(
        per_trace="SELECT trace_seq, count(*) AS n, min(start_ns) AS start_ns, max(end_ns) AS end_ns,"
        " max(status = 2) AS error FROM spans NOT INDEXED WHERE rowid > ? GROUP BY trace_seq"
    ),
    "INSERT OR IGNORE INTO trace_agents SELECT DISTINCT trace_seq, agent FROM spans NOT INDEXED WHERE rowid > ?",
    "INSERT OR IGNORE INTO trace_tools"
    " SELECT DISTINCT tool, trace_seq FROM spans NOT INDEXED WHERE rowid > ? AND tool != ''",
)
_GET_TRACE: Final = (
    "SELECT s.agent, s.instance, s.body FROM traces t JOIN spans s ON s.trace_seq = t.seq WHERE t.trace_id = ?"
)
# The root is the earliest parentless span, else the earliest span; its tool is its own, else that
# of the earliest span naming one: the rules of `mesh.tracing.stitch.summarize`. The fallbacks scan
# the trace's spans, but only for a listed trace whose root is missing or names no tool.
_LIST: Final = """
SELECT t.trace_id, t.seq, t.span_count, t.start_ns, t.end_ns, t.error,
    coalesce(
        (SELECT s.rowid FROM spans s INDEXED BY spans_roots
         WHERE s.trace_seq = t.seq AND s.root = 1 ORDER BY s.start_ns, s.span_id LIMIT 1),
        (SELECT s.rowid FROM spans s WHERE s.trace_seq = t.seq ORDER BY s.start_ns, s.span_id LIMIT 1)
    ) AS root,
    (SELECT group_concat(a.agent, char(31)) FROM trace_agents a WHERE a.trace_seq = t.seq) AS agents
FROM traces t WHERE {where} ORDER BY t.start_ns DESC LIMIT ?
"""
_ROOTS: Final = "SELECT rowid, agent, tool FROM spans WHERE rowid IN ({marks})"
_FIRST_TOOL: Final = "SELECT tool FROM spans WHERE trace_seq = ? AND tool != '' ORDER BY start_ns, span_id LIMIT 1"


def _connect(target: str) -> sqlite3.Connection:
    conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    # WAL + NORMAL: a commit survives the process being killed (not a power cut) and costs no fsync.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA cache_size = -65536")
    # Checkpoints belong in the background (`TraceStore.checkpoint`): their fsyncs would stall ingest.
    conn.execute("PRAGMA wal_autocheckpoint = 8192")
    return conn


def _chunks(total: int) -> Iterator[tuple[int, int]]:
    # Power-of-two statement sizes: any batch reuses the same nine prepared statements.
    at = 0
    for size in _CHUNK_SIZES:
        while total - at >= size:
            yield at, size
            at += size


@functools.cache
def _insert_values(table: str, columns: int, rows: int) -> str:
    row = "(" + ", ".join("?" * columns) + ")"
    return f"INSERT OR IGNORE INTO {table} VALUES " + ", ".join([row] * rows)


@functools.cache
def _fold_values(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?)"] * rows)
    return _FOLD_TRACES.format(
        per_trace="SELECT column1 AS trace_seq, column2 AS n, column3 AS start_ns, column4 AS end_ns,"
        f" column5 AS error FROM (VALUES {values})"
    )


@functools.cache
def _select_seqs(rows: int) -> str:
    return f"SELECT trace_id, seq FROM traces WHERE trace_id IN ({', '.join('?' * rows)})"


def _trace_key(trace_id: str) -> bytes | None:
    try:
        key = bytes.fromhex(trace_id)
    except ValueError:
        return None
    return key if len(key) == 16 else None
