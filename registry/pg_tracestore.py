"""The trace store on PostgreSQL: spans COPYed into day partitions, per-trace summaries beside them.

Owns ingest, the queries and retention (the schema is `registry.pg_traceschema`, the per-trace
figures `registry.pg_tracefold`). A trace is pinned
on first sight to a day (the UTC day of its earliest span in that batch, kept within a month of
arrival) and every span of it goes into that day's partition of `spans`: (trace_id, span_id) stays
a key across partitions, a trace is read from one partition, and retention drops whole traces by
dropping whole days. A batch folds its per-trace figures into `traces` (all the listing reads),
then COPYs its spans straight into the partition; a span stored before breaks the unique key, and
the batch is written again through a staging table with ON CONFLICT DO NOTHING, folding in only
what was new. Owns no decoding (`registry.otlp`), stitching or HTTP; `registry.trace_stores` is the seam.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
import time
from collections.abc import Generator, Sequence
from typing import Any, Final, final

import psycopg
from psycopg import errors, sql
from psycopg.abc import Buffer
from psycopg.adapt import Dumper, PyFormat
from psycopg.pq import Format
from psycopg_pool import ConnectionPool

from mesh.errors import ConfigError
from mesh.text import one_line
from mesh.wire import SpanRecord, TraceRoot, TraceSummary
from registry.otlp import SpanRow, span_record
from registry.pg import redacted
from registry.pg_tracefold import fold, no_nul, pin, plain, summarize
from registry.pg_traceschema import PRUNE_LOCK, create_partition, partition_name, partitions, prepare
from registry.stores import StoreUnavailable
from registry.trace_outcomes import listed

__all__ = ["PgTraceStore"]


@final
class PgTraceStore:
    """Spans and trace summaries in a PostgreSQL database; the schema is made or brought up to date on open.

    Thread-safe: calls take a connection of a pool of at most `connections`, waiting up to
    `timeout` seconds for one (then `StoreUnavailable`); a connection the server dropped is
    replaced before use, so a database that comes back is used again at once. Several processes
    and hosts may share one database (ingest workers, registry replicas): concurrent batches of
    one trace take turns on its `traces` row, and partitions are made and dropped under advisory
    locks. A committed batch is as durable as the server makes commits. ConfigError (one line)
    when the database cannot be reached at open or was written by a newer agentplex;
    `StoreUnavailable` when it is lost later (calls fail until it is back, then work again).
    """

    def __init__(self, url: str, *, retain: float | None = None, connections: int = 8, timeout: float = 5.0) -> None:
        self.location: Final = url
        """The URL, for ingest workers to open."""
        self.retain: Final = retain
        """Seconds a trace is kept after its start (`prune`); None: for ever."""
        prepare(url, redacted(url))
        self._partitions: set[int] = set()  # days known to have a partition
        self._partition_lock = threading.Lock()
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            min_size=1,
            max_size=max(1, connections),
            kwargs={"autocommit": True},
            configure=_configure,
            check=ConnectionPool.check_connection,
            timeout=timeout,
            # A failed reconnection gives up soon, so the next call starts a fresh one at once:
            # otherwise the pool's backoff could leave a database that came back unused for minutes.
            reconnect_timeout=_RECONNECT,
            name="agentplex-traces",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=max(timeout, 1.0))
        except psycopg.OperationalError as exc:
            self._pool.close()
            raise ConfigError(f"cannot reach the trace database {redacted(url)}: {one_line(exc)}") from None

    def ingest(self, rows: Sequence[SpanRow]) -> int:
        """Store rows in one transaction and return how many were new; they are durable on return."""
        if not rows:
            return 0
        traces = summarize(rows)
        arrived = time.time_ns()
        today = _day(arrived / 1e9)
        proposed = {trace_id: _pinned(trace.start, today) for trace_id, trace in traces.items()}
        wanted = set(proposed.values())
        for attempt in range(_ATTEMPTS):
            self._ensure_partitions(wanted)
            days: dict[bytes, int] = {}
            try:
                with self._connection() as conn:
                    try:
                        with conn.transaction():
                            days.update(fold(conn, traces, proposed, arrived))
                            _copy(conn, rows, days)
                        return len(rows)
                    except errors.UniqueViolation:
                        pass  # some were stored before: write the batch again without them
                    with conn.transaction():
                        return _write_new(conn, rows, proposed, days, arrived)
            except (errors.CheckViolation, errors.UndefinedTable, errors.TransactionRollback):
                # A partition dropped meanwhile (retention, in another process), or a lock cycle.
                if attempt == _ATTEMPTS - 1:
                    raise
                with self._partition_lock:
                    self._partitions.clear()
                wanted |= set(days.values())
        raise AssertionError("unreachable")

    def get_trace(self, trace_id: str) -> list[SpanRecord]:
        """Every stored span of one trace (hex id), in no particular order; [] if unknown."""
        key = _trace_key(trace_id)
        if key is None:
            return []
        with self._connection() as conn:
            found = conn.execute(_GET_TRACE, [key.hex()], binary=True).fetchall()
        hex_id = key.hex()
        return [span_record(hex_id, agent, instance or None, body) for agent, instance, body in found]

    def last_arrival(self, trace_id: str) -> float | None:
        """When the latest span of one trace (hex id) was stored, in epoch seconds by the storer's clock, if known."""
        key = _trace_key(trace_id)
        if key is None:
            return None
        with self._connection() as conn:
            found = conn.execute("SELECT arrived_ns FROM traces WHERE trace_id = %s::uuid", [key.hex()]).fetchone()
        return None if found is None or found[0] is None else found[0] / 1e9

    def trace_ids_starting(self, prefix: str, limit: int = 2) -> list[str]:
        """The ids (hex) of up to `limit` stored traces whose id begins with the hex `prefix`, in id order."""
        if not 1 <= len(prefix) <= 32 or not _HEX.fullmatch(prefix):
            return []
        # The prefix's range runs from the prefix padded with 0s to the prefix padded with fs.
        low, high = prefix.ljust(32, "0"), prefix.ljust(32, "f")
        with self._connection() as conn:
            found = conn.execute(_STARTING, [low, high, max(0, limit)], binary=True).fetchall()
        return [trace_id.hex for (trace_id,) in found]

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
        where: list[sql.Composable] = []
        params: list[object] = []
        if agent is not None:
            where.append(sql.SQL("%s = ANY(agents)"))
            params.append(plain(agent))
        if tool is not None:
            where.append(sql.SQL("%s = ANY(tools)"))
            params.append(plain(tool))
        if status is not None:
            if status not in ("ok", "error"):
                raise ValueError(f"status must be 'ok' or 'error', not {status!r}")
            where.append(sql.SQL("lead_outcome > 0" if status == "error" else "lead_outcome = 0"))
        if denied is not None:  # the root's own refusal is its status, not counted beside it
            where.append(_DENIED if denied else sql.SQL("NOT ({})").format(_DENIED))
        if errors is not None:
            where.append(_FAILED if errors else sql.SQL("NOT ({})").format(_FAILED))
        if since is not None:
            where.append(sql.SQL("start_ns >= %s"))
            params.append(int(since * 1e9))
        if min_duration_ms is not None:
            where.append(sql.SQL("end_ns - start_ns >= %s"))
            params.append(int(min_duration_ms * 1e6))
        params.append(max(0, limit))
        params.insert(0, None if in_progress_after is None else int(in_progress_after * 1e9))
        query = _LIST.format(where=sql.SQL(" AND ").join(where) if where else sql.SQL("true"))
        with self._connection() as conn:
            found = conn.execute(query, params, binary=True).fetchall()
        summaries: list[TraceSummary] = []
        for trace_id, span_count, start_ns, end_ns, agents, root_agent, root_tool, *outcome, in_progress in found:
            shown, denied_beside, errors_beside = listed(*outcome)
            summaries.append(
                TraceSummary(
                    trace_id=trace_id.hex,
                    root=TraceRoot(agent=root_agent, tool=root_tool or None),
                    agents=sorted(agents),
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
        with self._connection() as conn:
            found = conn.execute("SELECT coalesce(sum(span_count), 0) FROM traces").fetchone()
        return int(found[0]) if found is not None else 0

    def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL checkpoints by itself."""

    def prune(self, now: float) -> int:
        """Make today's and tomorrow's partitions, and drop the days of traces past `retain`; traces dropped.

        A day goes once all of it is older than the retention, its traces whole. One process at a
        time (an advisory lock; the others skip); partitions are detached concurrently, so ingest
        and queries go on meanwhile.
        """
        today = _day(now)
        self._ensure_partitions({today, today + 1})
        if self.retain is None:
            return 0
        cutoff = math.floor((now - self.retain) / _DAY_S)  # the days before it ended before now - retain
        with self._connection() as conn:
            locked = conn.execute("SELECT pg_try_advisory_lock(%s)", [PRUNE_LOCK]).fetchone()
            if locked is None or not locked[0]:
                return 0
            try:
                gone = _delete_traces(conn, cutoff)
                for name, day, pending in partitions(conn):
                    if day < cutoff:
                        detach = _FINALIZE if pending else _DETACH
                        conn.execute(detach.format(sql.Identifier(name)))
                        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
                # A late span of a dropped trace, stored meanwhile, made a new trace row: it goes too.
                gone += _delete_traces(conn, cutoff)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", [PRUNE_LOCK])
        with self._partition_lock:
            self._partitions = {day for day in self._partitions if day >= cutoff}
        return gone

    def close(self) -> None:
        """Close the pool; the store cannot be used afterwards."""
        self._pool.close()

    @contextlib.contextmanager
    def _connection(self) -> Generator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except errors.TransactionRollback:  # a deadlock: the transaction is tried again, not the server blamed
            raise
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"the trace database is unavailable: {one_line(exc)}") from exc

    def _ensure_partitions(self, days: set[int]) -> None:
        if days <= self._partitions:
            return
        with self._partition_lock, self._connection() as conn:
            self._partitions = {day for _, day, pending in partitions(conn) if not pending}
            for day in sorted(days - self._partitions):
                create_partition(conn, day)
                self._partitions.add(day)


# -- private helpers ---------------------------------------------------------------------------

_DAY_S: Final = 86_400
_DAY_NS: Final = _DAY_S * 1_000_000_000
_PAST_DAYS: Final = 31  # a trace that started longer ago is filed under the oldest of these days
_FUTURE_DAYS: Final = 1
_ATTEMPTS: Final = 3
_RECONNECT: Final = 5.0
_HEX: Final = re.compile("[0-9a-fA-F]+")
_SPAN_TYPES: Final = ("int4", "uuid", "int8", "text", "text", "bytea")


def _configure(conn: psycopg.Connection[Any]) -> None:
    # COPY finds its dumpers by type OID. For bytea that would be the DB-API's `Binary` dumper,
    # written in Python: psycopg's C one instead. For uuid, ours, which sends the id's bytes as they are.
    conn.adapters.register_dumper(bytes, psycopg.adapters.get_dumper(bytes, PyFormat.BINARY))
    conn.adapters.register_dumper(_TraceId, _TraceIdDumper)


class _TraceIdDumper(Dumper):
    """A trace id's 16 bytes as a binary uuid: the same bytes."""

    oid = psycopg.adapters.types["uuid"].oid
    format = Format.BINARY

    def dump(self, obj: Buffer) -> Buffer:
        return obj


class _TraceId(bytes):
    """Never made: `_TraceIdDumper` is registered under it so that COPY finds it by the uuid OID."""


def _copy(conn: psycopg.Connection[Any], rows: Sequence[SpanRow], days: dict[bytes, int], table: str = "") -> None:
    """COPY the rows into `table`, else into the one partition they all go to, else into `spans`."""
    if not table:
        single = set(days.values())
        table = partition_name(single.pop()) if len(single) == 1 else "spans"
    statement = sql.SQL("COPY {} (day, trace_id, span_id, agent, instance, body) FROM STDIN (FORMAT BINARY)")
    with conn.cursor() as cursor, cursor.copy(statement.format(sql.Identifier(table))) as copy:
        copy.set_types(_SPAN_TYPES)
        write = copy.write_row
        for trace_id, span, _, agent, instance, _, _, _, _, body in rows:
            if "\x00" in agent or "\x00" in instance:
                agent, instance = no_nul(agent), no_nul(instance)
            write((days[trace_id], trace_id, span, agent, instance, body))


def _write_new(
    conn: psycopg.Connection[Any],
    rows: Sequence[SpanRow],
    proposed: dict[bytes, int],
    days: dict[bytes, int],
    arrived: int,
) -> int:
    """Store the rows not stored before (each span once), folding in only them; how many. `days` is filled."""
    firsts: dict[tuple[bytes, int], SpanRow] = {}
    for row in rows:
        firsts.setdefault((row[0], row[1]), row)
    days.update(pin(conn, {trace_id for trace_id, _ in firsts}, proposed))
    conn.execute("CREATE TEMPORARY TABLE IF NOT EXISTS span_stage (LIKE spans) ON COMMIT DELETE ROWS")
    _copy(conn, list(firsts.values()), days, "span_stage")
    stored = conn.execute(_FROM_STAGE, binary=True).fetchall()
    fresh = [firsts[(trace_id, span)] for trace_id, span in stored]
    if fresh:
        fold(conn, summarize(fresh), days, arrived)
    return len(fresh)


def _delete_traces(conn: psycopg.Connection[Any], before: int) -> int:
    found = conn.execute(_DELETE_DAYS, [before]).fetchone()
    return int(found[0]) if found is not None else 0


def _day(seconds: float) -> int:
    return math.floor(seconds / _DAY_S)


def _pinned(start_ns: int, today: int) -> int:
    return min(max(start_ns // _DAY_NS, today - _PAST_DAYS), today + _FUTURE_DAYS)


def _trace_key(trace_id: str) -> bytes | None:
    try:
        key = bytes.fromhex(trace_id)
    except ValueError:
        return None
    return key if len(key) == 16 else None


_FROM_STAGE: Final = (
    "INSERT INTO spans SELECT * FROM span_stage ON CONFLICT DO NOTHING RETURNING uuid_send(trace_id), span_id"
)
_GET_TRACE: Final = """
SELECT s.agent, s.instance, s.body FROM traces t JOIN spans s ON s.day = t.day AND s.trace_id = t.trace_id
WHERE t.trace_id = %s::uuid
"""
_STARTING: Final = "SELECT trace_id FROM traces WHERE trace_id BETWEEN %s::uuid AND %s::uuid ORDER BY trace_id LIMIT %s"
_LIST: Final = sql.SQL("""
SELECT trace_id, span_count, start_ns, end_ns, agents, lead_agent, coalesce(nullif(lead_tool, ''), tool),
    lead_outcome, denied, failed, lead_rank > 0 AND arrived_ns > %s::int8
FROM traces WHERE {where} ORDER BY start_ns DESC LIMIT %s
""")
_DENIED: Final = sql.SQL("denied > 0 AND denied > (lead_outcome = 2)::int")
"""A call was refused beside the root (`registry.trace_outcomes`: 2 is `denied`); `denied > 0` lets the index serve."""
_FAILED: Final = sql.SQL("failed > 0 AND failed > (lead_outcome = 1)::int")
"""A span failed beside the root (1 is `error`)."""
_DELETE_DAYS: Final = "WITH gone AS (DELETE FROM traces WHERE day < %s RETURNING 1) SELECT count(*) FROM gone"
_DETACH: Final = sql.SQL("ALTER TABLE spans DETACH PARTITION {} CONCURRENTLY")
_FINALIZE: Final = sql.SQL("ALTER TABLE spans DETACH PARTITION {} FINALIZE")
