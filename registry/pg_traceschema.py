"""The PostgreSQL trace store's schema: its tables, their versions, and the day partitions of `spans`.

`prepare` makes the tables in an empty database, brings an older schema up to date, and refuses
one written by a newer agentplex, in one line; the version is the one row of `trace_store_schema`.
Partitions are named `spans_YYYYMMDD` after the UTC day they hold. Owns no ingest or queries
(`registry.pg_tracestore`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, LiteralString

import psycopg
from psycopg import sql

from mesh.errors import ConfigError
from mesh.text import one_line
from registry.trace_outcomes import DENIED, ERROR, stored_outcome

__all__ = [
    "VERSION",
    "DDL_LOCK",
    "PRUNE_LOCK",
    "prepare",
    "partitions",
    "create_partition",
    "partition_name",
]

VERSION: Final = 2
"""The schema `_SCHEMA` makes, kept in `trace_store_schema`. Before 2, a trace kept one error flag
(any span failed) where it now keeps its root's outcome and counts of denied and failed spans, and
no time of arrival."""
DDL_LOCK: Final = 0x61706C78_74726301
"""The advisory lock held while the schema or a partition is made, so two processes never collide."""
PRUNE_LOCK: Final = 0x61706C78_74726302
"""The advisory lock of the one process dropping old partitions."""


def prepare(url: str, shown: str) -> None:
    """Make or upgrade the schema at `url`; ConfigError, in one line naming `shown`, if that cannot be done."""
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise ConfigError(f"cannot reach the trace database {shown}: {one_line(exc)}") from None
    with conn:
        version = conn.info.server_version
        if version < 140000:
            raise ConfigError(
                f"the trace database {shown} runs PostgreSQL {version // 10000}: agentplex needs 14 or later"
            )
        try:
            _upgrade(conn, shown)
        except psycopg.Error as exc:
            raise ConfigError(f"cannot prepare the trace database {shown}: {one_line(exc)}") from None


def partitions(conn: psycopg.Connection[Any]) -> list[tuple[str, int, bool]]:
    """(name, day, being detached) of every partition of `spans`; the day counts from 1970-01-01 UTC."""
    found = conn.execute(_PARTITIONS).fetchall()
    named = ((_PARTITION_NAME.fullmatch(name), pending) for name, pending in found)
    return [(match[0], _day_of(match[1]), bool(pending)) for match, pending in named if match]


def create_partition(conn: psycopg.Connection[Any], day: int) -> None:
    """Make the partition of `spans` for `day` unless it exists (under `DDL_LOCK`, in its own transaction)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [DDL_LOCK])
        statement = sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF spans FOR VALUES FROM ({}) TO ({})")
        conn.execute(statement.format(sql.Identifier(partition_name(day)), day, day + 1))


def partition_name(day: int) -> str:
    """`spans_YYYYMMDD`: the partition of the UTC day `day` days after 1970-01-01."""
    return f"spans_{(_EPOCH + timedelta(days=day)):%Y%m%d}"


# -- private helpers ---------------------------------------------------------------------------

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_PARTITION_NAME: Final = re.compile(r"spans_(\d{8})")
_PARTITIONS: Final = """
SELECT c.relname, i.inhdetachpending FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'spans'::regclass
"""
_SCHEMA: Final[tuple[LiteralString, ...]] = (
    """CREATE TABLE traces (
        trace_id uuid PRIMARY KEY,  -- the 16 bytes of the OTLP id: compared faster than bytea
        day integer NOT NULL,  -- the partition of spans holding its spans
        span_count integer NOT NULL,
        start_ns bigint NOT NULL,
        end_ns bigint NOT NULL,
        denied integer NOT NULL,  -- spans where a call was refused (registry.trace_outcomes)
        failed integer NOT NULL,  -- other failed spans; both counts include the root
        lead_outcome smallint NOT NULL,  -- the root's outcome: an index of mesh.tracing.outcome.OUTCOMES
        arrived_ns bigint,  -- when its latest span was stored, by the storing host's clock; NULL before schema 2
        agents text[] NOT NULL,  -- the services of its spans, as registry.pg_tracefold.plain makes them
        tools text[] NOT NULL,  -- the tools its spans name, likewise
        -- The root: the least (lead_rank, lead_start, lead_span); rank 0 is a span without a parent.
        lead_rank smallint NOT NULL,
        lead_start bigint NOT NULL,
        lead_span bigint NOT NULL,
        lead_agent text NOT NULL,
        lead_tool text NOT NULL,  -- '' when the root names none
        -- The earliest span naming a tool: its tool stands in for a root naming none.
        tool_start bigint,
        tool_span bigint,
        tool text
    ) WITH (fillfactor = 90)""",
    "CREATE INDEX traces_by_start ON traces (start_ns)",
    "CREATE INDEX traces_failed_by_start ON traces (start_ns) WHERE lead_outcome > 0",
    "CREATE INDEX traces_denied_by_start ON traces (start_ns) WHERE denied > 0",
    "CREATE INDEX traces_by_day ON traces (day)",
    """CREATE TABLE spans (
        day integer NOT NULL,  -- its trace's day
        trace_id uuid NOT NULL,
        span_id bigint NOT NULL,  -- registry.otlp.span_key
        agent text NOT NULL,
        instance text NOT NULL,  -- '' when unknown
        body bytea NOT NULL  -- the OTLP Span message as received: ids, name, kind, times, attributes, events
    ) PARTITION BY RANGE (day)""",
    "CREATE UNIQUE INDEX spans_key ON spans (trace_id, span_id, day)",
)


def _backfill_outcomes(conn: psycopg.Connection[Any]) -> None:
    """Fill schema 2's outcome columns from the spans: only traces flagged as failed have any failed span."""
    figures: dict[Any, list[int]] = {}  # trace id -> [denied, failed, the root's outcome]
    for trace_id, span, body, lead_span in conn.execute(_FLAGGED_SPANS):
        code = stored_outcome(body)
        found = figures.setdefault(trace_id, [0, 0, 0])
        found[0] += code == DENIED
        found[1] += code == ERROR
        if span == lead_span:
            found[2] = code
    with conn.cursor() as cursor:
        cursor.executemany(
            "UPDATE traces SET denied = %s, failed = %s, lead_outcome = %s WHERE trace_id = %s",
            [(*found, trace_id) for trace_id, found in figures.items()],
        )


_FLAGGED_SPANS: Final = """
SELECT t.trace_id, s.span_id, s.body, t.lead_span
FROM traces t JOIN spans s ON s.day = t.day AND s.trace_id = t.trace_id WHERE t.error
"""
_UPGRADES: Final[dict[int, tuple[LiteralString | Callable[[psycopg.Connection[Any]], None], ...]]] = {
    # From each older schema, the steps that bring it to the next.
    1: (
        """ALTER TABLE traces ADD COLUMN denied integer NOT NULL DEFAULT 0,
            ADD COLUMN failed integer NOT NULL DEFAULT 0,
            ADD COLUMN lead_outcome smallint NOT NULL DEFAULT 0,
            ADD COLUMN arrived_ns bigint""",
        _backfill_outcomes,
        """ALTER TABLE traces DROP COLUMN error,
            ALTER COLUMN denied DROP DEFAULT,
            ALTER COLUMN failed DROP DEFAULT,
            ALTER COLUMN lead_outcome DROP DEFAULT""",  # its partial index goes with it
        "CREATE INDEX traces_failed_by_start ON traces (start_ns) WHERE lead_outcome > 0",
        "CREATE INDEX traces_denied_by_start ON traces (start_ns) WHERE denied > 0",
    ),
}


def _upgrade(conn: psycopg.Connection[Any], shown: str) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [DDL_LOCK])
        conn.execute("CREATE TABLE IF NOT EXISTS trace_store_schema (version integer NOT NULL)")
        found = conn.execute("SELECT max(version) FROM trace_store_schema").fetchone()
        version: int = found[0] if found is not None and found[0] is not None else 0
        if version > VERSION:
            raise ConfigError(
                f"trace database {shown} was written by a newer agentplex (schema {version}; this one reads"
                f" up to {VERSION}): upgrade, or point --db elsewhere"
            )
        if version == VERSION:
            return
        steps: Sequence[LiteralString | Callable[[psycopg.Connection[Any]], None]] = (
            _SCHEMA if version == 0 else [s for older in range(version, VERSION) for s in _UPGRADES[older]]
        )
        for step in steps:
            if callable(step):
                step(conn)
            else:
                conn.execute(step)
        conn.execute("DELETE FROM trace_store_schema")
        conn.execute("INSERT INTO trace_store_schema (version) VALUES (%s)", [VERSION])


def _day_of(digits: str) -> int:
    return (datetime.strptime(digits, "%Y%m%d").replace(tzinfo=UTC) - _EPOCH).days
