"""The trace store: spans in SQLite (WAL), idempotent by (trace_id, span_id), with per-trace summaries.

Owns the schema, ingestion and the two queries (one trace by id; the trace listing). A trace
gets a sequence number (its rowid in `traces`) on first sight and spans are unique by (sequence,
span_id), so a batch appends rather than scattering writes and a trace is one index range. Each
batch's spans are summarised per trace before the write lock is taken, and the summaries folded
into `traces` (figures, the root's outcome, agents and tools: the listing's filters) under it, so
listing never scans spans. A batch holding spans already stored (a redelivery) is rolled back and
written again without them. Retention deletes whole traces by their start, a few thousand per
transaction. The layout and its upgrades are `registry.sqlite_traceschema`. Owns no decoding
(`registry.otlp`), stitching or HTTP; `registry.trace_stores` is the seam.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple, cast, final

from mesh.wire import SpanRecord, TraceRoot, TraceSummary
from registry.otlp import SpanRow, span_record
from registry.sqlite_traceschema import prepare
from registry.trace_outcomes import DENIED, ERROR, OK, listed, outcome_code

__all__ = ["SqliteTraceStore", "TraceStore"]


@final
class SqliteTraceStore:
    """Spans and trace summaries in one SQLite file (or ":memory:"); parent directories are created.

    Thread-safe: call it from any thread (the tracer uses `anyio.to_thread`). Writes go through
    one connection under a lock, reads through a second under their own lock and checkpoints
    through a third, so a query never waits behind an ingest (WAL lets them run side by side).
    Several processes may write one file (the tracer's ingest workers): a transaction holds an
    advisory lock on "<file>-lock", which hands over at once where SQLite's busy handler would
    sleep for milliseconds. A committed batch survives the process being killed (WAL,
    synchronous=NORMAL), not a power cut.
    """

    def __init__(self, path: str | Path, *, retain: float | None = None) -> None:
        memory = str(path) == ":memory:"
        target = ":memory:" if memory else str(Path(path).expanduser())
        self.path: Final = None if memory else Path(target)
        """The database file; None for ":memory:"."""
        self.location: Final = None if memory else target
        """The file as a string, for ingest workers to open; None for ":memory:"."""
        self.retain: Final = retain
        """Seconds a trace is kept after its start (`prune`); None: for ever."""
        if not memory:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        # Its own file: closing any descriptor of the database would drop SQLite's POSIX locks.
        self._lock_file = None if memory else open(f"{target}-lock", "ab")  # noqa: SIM115 (closed in close())
        self._writer = _connect(target)
        try:
            with self._across_processes():
                prepare(self._writer, target)
        except BaseException:
            self._writer.close()
            if self._lock_file is not None:
                self._lock_file.close()
            raise
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
        flat = _flatten(rows)
        summary = _summarize(rows)
        arrived = time.time_ns()
        with self._write_lock, self._across_processes():
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                try:
                    fresh = _write(conn, flat, summary, arrived)
                except _Repeated:
                    # A redelivery: start again with only the spans not stored yet (rare, so slower).
                    conn.execute("ROLLBACK")
                    conn.execute("BEGIN IMMEDIATE")
                    rows = _unstored(conn, rows)
                    fresh = _write(conn, _flatten(rows), _summarize(rows), arrived) if rows else 0
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
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

    def last_arrival(self, trace_id: str) -> float | None:
        """When the latest span of one trace (hex id) was stored, in epoch seconds by this host's clock, if known."""
        key = _trace_key(trace_id)
        if key is None:
            return None
        with self._read_lock:
            found = self._reader.execute("SELECT arrived_ns FROM traces WHERE trace_id = ?", (key,)).fetchone()
        return None if found is None or found[0] is None else found[0] / 1e9

    def trace_ids_starting(self, prefix: str, limit: int = 2) -> list[str]:
        """The ids (hex) of up to `limit` stored traces whose id begins with the hex `prefix`, in id order.

        One range of the trace id index, so a short id from `mesh traces ls` finds its trace
        at once; [] for a prefix that is not 1 to 32 hex digits.
        """
        if not 1 <= len(prefix) <= 32 or not _HEX.fullmatch(prefix):
            return []
        # Ids are stored as 16-byte blobs, compared byte by byte: the prefix's range runs from
        # the prefix padded with 0s to the prefix padded with fs (a nibble included).
        low, high = bytes.fromhex(prefix.ljust(32, "0")), bytes.fromhex(prefix.ljust(32, "f"))
        with self._read_lock:
            found = self._reader.execute(_STARTING, (low, high, max(0, limit))).fetchall()
        return [trace_id.hex() for (trace_id,) in found]

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
        """The latest traces first, filtered as `registry.trace_stores.TraceStore.list_traces` says."""
        where: list[str] = []
        params: list[object] = []
        if agent is not None:
            where.append("instr(char(31) || t.agents || char(31), ?)")
            params.append(_token(agent))
        if tool is not None:
            where.append("instr(char(31) || t.tools || char(31), ?)")
            params.append(_token(tool))
        if status is not None:
            if status not in ("ok", "error"):
                raise ValueError(f"status must be 'ok' or 'error', not {status!r}")
            where.append("t.lead_outcome > 0" if status == "error" else "t.lead_outcome = 0")
        if denied is not None:  # the root's own refusal is its status, not counted beside it
            where.append(_DENIED if denied else f"NOT ({_DENIED})")
        if errors is not None:
            where.append(_FAILED if errors else f"NOT ({_FAILED})")
        if since is not None:
            where.append("t.start_ns >= ?")
            params.append(int(since * 1e9))
        if min_duration_ms is not None:
            where.append("t.end_ns - t.start_ns >= ?")
            params.append(int(min_duration_ms * 1e6))
        params.append(max(0, limit))
        params.insert(0, None if in_progress_after is None else int(in_progress_after * 1e9))
        with self._read_lock:
            rows = self._reader.execute(_LIST.format(where=" AND ".join(where) or "1"), params).fetchall()
            marks = ",".join("?" * len(rows))
            roots: dict[int, tuple[str, str]] = {
                rowid: (root_agent, root_tool)
                for rowid, root_agent, root_tool in self._reader.execute(
                    _ROOTS.format(marks=marks), [row[4] for row in rows]
                )
            }
            first_tools: dict[int, str] = {}
            for row in rows:
                if not roots[row[4]][1]:
                    found = self._reader.execute(_FIRST_TOOL, (row[1],)).fetchone()
                    first_tools[row[1]] = found[0] if found else ""
        summaries: list[TraceSummary] = []
        for trace_id, seq, span_count, start_ns, root, agents, end_ns, *outcome, in_progress in rows:
            shown, denied_beside, errors_beside = listed(*outcome)
            summaries.append(
                TraceSummary(
                    trace_id=trace_id.hex(),
                    root=TraceRoot(agent=roots[root][0], tool=roots[root][1] or first_tools.get(seq) or None),
                    agents=sorted(agents.split(_SEPARATOR)),
                    span_count=span_count,
                    start=start_ns / 1e9,
                    duration_ms=max(0, end_ns - start_ns) / 1e6,
                    status=shown,
                    denied=denied_beside,
                    errors=errors_beside,
                    in_progress=bool(in_progress),
                )
            )
        return summaries

    def span_count(self) -> int:
        """How many distinct spans are stored."""
        with self._read_lock:
            return self._reader.execute("SELECT coalesce(sum(span_count), 0) FROM traces").fetchone()[0]

    def prune(self, now: float) -> int:
        """Delete the traces that started more than `retain` seconds before `now`, spans and all; how many.

        A few thousand traces per transaction, so ingest waits for one chunk at most.
        """
        if self.retain is None:
            return 0
        cutoff = int((now - self.retain) * 1e9)
        pruned = 0
        while True:
            with self._write_lock, self._across_processes():
                conn = self._writer
                conn.execute("BEGIN IMMEDIATE")
                try:
                    seqs = [seq for (seq,) in conn.execute(_EXPIRED, (cutoff, _PRUNE_CHUNK))]
                    _chunked(conn, _delete_spans, seqs, 1)
                    _chunked(conn, _delete_traces, seqs, 1)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            pruned += len(seqs)
            if len(seqs) < _PRUNE_CHUNK:
                return pruned

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


TraceStore = SqliteTraceStore
"""The SQLite store's name before `registry.trace_stores.TraceStore` became the seam; kept for imports."""


# -- private helpers ---------------------------------------------------------------------------

_SPAN_COLUMNS: Final = 10
_PRUNE_CHUNK: Final = 2048  # traces deleted per transaction
_EXPIRED: Final = "SELECT seq FROM traces WHERE start_ns < ? ORDER BY start_ns LIMIT ?"
_CHUNK_SIZES: Final = (256, 128, 64, 32, 16, 8, 4, 2, 1)


class _Trace(NamedTuple):
    """A trace's share of one batch."""

    figures: list[int]  # [spans, earliest start, latest end, denied, failed, the root's rank, start, span, outcome]
    agents: set[str]
    tools: set[str]


class _Repeated(Exception):
    """A batch holding spans already stored, or one span twice: it is written again without them."""


def _flatten(rows: Sequence[SpanRow]) -> list[object]:
    # The rows' values one after another, as the spans INSERT binds them (the trace id where the
    # sequence goes, until `_write` knows it).
    flat: list[object] = []
    extend = flat.extend
    for row in rows:
        extend(row)
    return flat


def _summarize(rows: Sequence[SpanRow]) -> dict[bytes, _Trace]:
    traces: dict[bytes, _Trace] = {}
    for row in rows:
        trace_id, span, root, agent, _, start, end, status, tool, _ = row
        outcome = OK if status != 2 else outcome_code(row)
        found = traces.get(trace_id)
        if found is None:
            figures = [1, start, end, int(outcome == DENIED), int(outcome == ERROR), 1 - root, start, span, outcome]
            traces[trace_id] = _Trace(figures, {agent}, {tool} if tool else set())
            continue
        figures = found.figures
        figures[0] += 1
        if start < figures[1]:
            figures[1] = start
        if end > figures[2]:
            figures[2] = end
        if outcome:
            figures[3] += outcome == DENIED
            figures[4] += outcome == ERROR
        # The root, by `mesh.tracing.stitch`'s rule: the least (1 - root, start, span), compared
        # field by field so that no span pays for two tuples.
        rank, lead = 1 - root, figures[5]
        if rank < lead or (rank == lead and (start < figures[6] or (start == figures[6] and span < figures[7]))):
            figures[5:] = rank, start, span, outcome
        found.agents.add(agent)
        if tool:
            found.tools.add(tool)
    return traces


def _write(conn: sqlite3.Connection, flat: list[object], summary: dict[bytes, _Trace], arrived: int) -> int:
    """Insert the spans and fold the summary in; raises _Repeated (before any fold) unless every span is new."""
    known = _stored_traces(conn, summary)
    seqs = {trace_id: seq for trace_id, (seq, _, _) in known.items()}
    if len(known) < len(summary):
        last = conn.execute("SELECT coalesce(max(seq), 0) FROM traces").fetchone()[0]
        seqs.update((trace_id, seq) for seq, trace_id in enumerate((t for t in summary if t not in known), last + 1))
    flat[0::_SPAN_COLUMNS] = [seqs[trace_id] for trace_id in cast("list[bytes]", flat[0::_SPAN_COLUMNS])]
    changes = conn.total_changes
    _chunked(conn, functools.partial(_insert_values, "spans", _SPAN_COLUMNS), flat, _SPAN_COLUMNS)
    spans = len(flat) // _SPAN_COLUMNS
    if conn.total_changes - changes != spans:
        raise _Repeated
    created: list[object] = []  # new traces, whole: one INSERT each instead of an INSERT and an UPDATE
    folded: list[object] = []  # traces stored before: their figures folded in
    for trace_id, (figures, agents, tools) in summary.items():
        seq = seqs[trace_id]
        before = known.get(trace_id)
        if before is None:
            created += (seq, bytearray(trace_id), *figures, arrived, _joined(agents), _joined(tools))
        else:
            _, stored_agents, stored_tools = before
            folded += (seq, *figures, arrived, _joined(agents, stored_agents), _joined(tools, stored_tools))
    _chunked(conn, functools.partial(_insert_values, _NEW_TRACE, _NEW_COLUMNS), created, _NEW_COLUMNS)
    _chunked(conn, _fold_values, folded, _FOLD_COLUMNS)
    return spans


def _joined(names: set[str], stored: str = "") -> str:
    """The names as a `traces` column keeps them (with those it holds already): sorted, separated.

    A name holding the separator itself (OTLP allows any service name) keeps it as a space.
    """
    if stored:
        names = names.union(stored.split(_SEPARATOR))
    joined = _SEPARATOR.join(sorted(names))
    if names and joined.count(_SEPARATOR) >= len(names):  # one more than joining put there
        joined = _SEPARATOR.join(sorted(set(map(_plain, names))))
    return joined


def _token(name: str) -> str:
    """What `instr` looks for in a `traces` names column, framed by separators, to find one name."""
    return f"{_SEPARATOR}{_plain(name)}{_SEPARATOR}"


def _plain(name: str) -> str:
    """The name as a `traces` names column can hold it: the separator in it made a space."""
    return name.replace(_SEPARATOR, " ")


def _stored_traces(conn: sqlite3.Connection, trace_ids: Iterable[bytes]) -> dict[bytes, tuple[int, str, str]]:
    """Trace id -> (seq, agents, tools) of those among `trace_ids` stored before."""
    keys = [bytearray(trace_id) for trace_id in trace_ids]  # bytearray: bound without adapter lookups
    return {trace_id: (seq, agents, tools) for trace_id, seq, agents, tools in _chunked(conn, _known, keys, 1)}


def _unstored(conn: sqlite3.Connection, rows: Sequence[SpanRow]) -> list[SpanRow]:
    """The rows whose span is not stored yet, each span once (the first of its copies)."""
    firsts: dict[tuple[bytes, int], SpanRow] = {}
    for row in rows:
        firsts.setdefault((row[0], row[1]), row)
    seqs = {trace_id: seq for trace_id, (seq, _, _) in _stored_traces(conn, {t for t, _ in firsts}).items()}
    probes = [value for trace_id, span in firsts if trace_id in seqs for value in (seqs[trace_id], span)]
    by_seq = {seq: trace_id for trace_id, seq in seqs.items()}
    for seq, span in _chunked(conn, _stored_spans, probes, 2):
        del firsts[(by_seq[seq], span)]
    return list(firsts.values())


_SEPARATOR: Final = "\x1f"  # between the names in traces.agents and traces.tools
_NEW_TRACE: Final = (
    "traces (seq, trace_id, span_count, start_ns, end_ns, denied, failed,"
    " lead_rank, lead_start, lead_span, lead_outcome, arrived_ns, agents, tools)"
)
_NEW_COLUMNS: Final = 14
_LEAD_WINS: Final = "(f.column7, f.column8, f.column9) < (traces.lead_rank, traces.lead_start, traces.lead_span)"
_FOLD_TRACES: Final = f"""
UPDATE traces SET
    span_count = traces.span_count + f.column2,
    start_ns = min(traces.start_ns, f.column3),
    end_ns = max(traces.end_ns, f.column4),
    denied = traces.denied + f.column5,
    failed = traces.failed + f.column6,
    lead_rank = CASE WHEN {_LEAD_WINS} THEN f.column7 ELSE traces.lead_rank END,
    lead_start = CASE WHEN {_LEAD_WINS} THEN f.column8 ELSE traces.lead_start END,
    lead_span = CASE WHEN {_LEAD_WINS} THEN f.column9 ELSE traces.lead_span END,
    lead_outcome = CASE WHEN {_LEAD_WINS} THEN f.column10 ELSE traces.lead_outcome END,
    arrived_ns = max(coalesce(traces.arrived_ns, 0), f.column11),
    agents = f.column12,
    tools = f.column13
FROM (VALUES {{values}}) AS f
WHERE traces.seq = f.column1
"""
"""Fold a batch's figures into traces stored before: (seq, spans, start_ns, end_ns, denied, failed,
the root's rank, start, span and outcome, arrived_ns, agents, tools); every right-hand side reads
the row as it was, so the root's four columns change together or not at all."""
_FOLD_COLUMNS: Final = 13
_DENIED: Final = "t.denied > 0 AND t.denied > (t.lead_outcome = 2)"
"""A call was refused beside the root (`registry.trace_outcomes`: 2 is `denied`); `denied > 0` lets the index serve."""
_FAILED: Final = "t.failed > 0 AND t.failed > (t.lead_outcome = 1)"
"""A span failed beside the root (1 is `error`)."""
_GET_TRACE: Final = (
    "SELECT s.agent, s.instance, s.body FROM traces t JOIN spans s ON s.trace_seq = t.seq WHERE t.trace_id = ?"
)
# The root is the earliest parentless span, else the earliest span; its tool is its own, else that
# of the earliest span naming one: the rules of `mesh.tracing.stitch.summarize`. The fallbacks scan
# the trace's spans, but only for a listed trace whose root is missing or names no tool.
_LIST: Final = """
SELECT t.trace_id, t.seq, t.span_count, t.start_ns,
    coalesce(
        (SELECT s.rowid FROM spans s INDEXED BY spans_roots
         WHERE s.trace_seq = t.seq AND s.root = 1 ORDER BY s.start_ns, s.span_id LIMIT 1),
        (SELECT s.rowid FROM spans s WHERE s.trace_seq = t.seq ORDER BY s.start_ns, s.span_id LIMIT 1)
    ) AS root,
    t.agents, t.end_ns, t.lead_outcome, t.denied, t.failed, t.lead_rank > 0 AND t.arrived_ns > ?
FROM traces t WHERE {where} ORDER BY t.start_ns DESC LIMIT ?
"""
_STARTING: Final = "SELECT trace_id FROM traces WHERE trace_id BETWEEN ? AND ? ORDER BY trace_id LIMIT ?"
_HEX: Final = re.compile("[0-9a-fA-F]+")
_ROOTS: Final = "SELECT rowid, agent, tool FROM spans WHERE rowid IN ({marks})"
_FIRST_TOOL: Final = "SELECT tool FROM spans WHERE trace_seq = ? AND tool != '' ORDER BY start_ns, span_id LIMIT 1"


def _connect(target: str) -> sqlite3.Connection:
    conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    # WAL + NORMAL: a commit survives the process being killed (not a power cut) and costs no fsync.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA cache_size = -65536")
    # Checkpoints belong in the background (`SqliteTraceStore.checkpoint`): their fsyncs would stall ingest.
    conn.execute("PRAGMA wal_autocheckpoint = 8192")
    return conn


def _chunked(
    conn: sqlite3.Connection, statement: Callable[[int], str], values: Sequence[object], columns: int
) -> list[Any]:
    """Run `statement(rows)` over `values` (`columns` to a row) in chunks; the rows they return.

    Many rows per statement, not executemany: one GIL release per chunk instead of per row, so
    SQLite's work runs beside the event loop instead of trading the GIL with it 512 times. Chunks
    come in power-of-two sizes, so any batch reuses the same nine prepared statements.
    """
    found: list[Any] = []
    at, total = 0, len(values) // columns
    for size in _CHUNK_SIZES:
        while total - at >= size:
            found += conn.execute(statement(size), values[at * columns : (at + size) * columns])
            at += size
    return found


@functools.cache
def _insert_values(table: str, columns: int, rows: int) -> str:
    row = "(" + ", ".join("?" * columns) + ")"
    return f"INSERT OR IGNORE INTO {table} VALUES " + ", ".join([row] * rows)


@functools.cache
def _fold_values(rows: int) -> str:
    return _FOLD_TRACES.format(values=", ".join(["(" + ", ".join("?" * _FOLD_COLUMNS) + ")"] * rows))


@functools.cache
def _delete_spans(rows: int) -> str:
    return f"DELETE FROM spans WHERE trace_seq IN ({', '.join('?' * rows)})"


@functools.cache
def _delete_traces(rows: int) -> str:
    return f"DELETE FROM traces WHERE seq IN ({', '.join('?' * rows)})"


@functools.cache
def _known(rows: int) -> str:
    return f"SELECT trace_id, seq, agents, tools FROM traces WHERE trace_id IN ({', '.join('?' * rows)})"


@functools.cache
def _stored_spans(rows: int) -> str:
    values = ", ".join(["(?, ?)"] * rows)
    return f"SELECT trace_seq, span_id FROM spans WHERE (trace_seq, span_id) IN (VALUES {values})"


def _trace_key(trace_id: str) -> bytes | None:
    try:
        key = bytes.fromhex(trace_id)
    except ValueError:
        return None
    return key if len(key) == 16 else None
