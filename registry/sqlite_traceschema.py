"""The SQLite trace store's layout: its tables, their versions, and the upgrade of an older file.

`prepare` makes the tables in a new file, brings an older layout up to date (in one write
transaction, so two processes opening an old file at once upgrade it once) and refuses one
written by a newer agentplex, in one line. The layout's version is the file's user_version.
Owns no ingest or queries (`registry.tracestore`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Final

from mesh.errors import ConfigError
from registry.trace_outcomes import DENIED, ERROR, stored_outcome

__all__ = ["VERSION", "prepare"]

VERSION: Final = 3
"""The layout `_SCHEMA` makes. Before 3, a trace kept one error flag (any span failed) where it now
keeps its root's outcome and counts of denied and failed spans, and no time of arrival; before 2,
its tools were also rows of `trace_tools` (before 1, its agents of `trace_agents`)."""


def prepare(conn: sqlite3.Connection, target: str) -> None:
    """Make the tables, or bring an older layout up to date; ConfigError, in one line, for a newer one."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > VERSION:
            raise ConfigError(
                f"trace store {target} was written by a newer agentplex (layout {version}; this one reads"
                f" up to {VERSION}): upgrade, or point --db elsewhere"
            )
        made = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'traces'").fetchone() is not None
        if version < VERSION:
            steps = [step for older in range(version, VERSION) for step in _UPGRADES[older]] if made else _SCHEMA
            for step in steps:
                if isinstance(step, str):
                    conn.execute(step)
                else:
                    step(conn)
            conn.execute(f"PRAGMA user_version = {VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


# -- private helpers ---------------------------------------------------------------------------


def _backfill_outcomes(conn: sqlite3.Connection) -> None:
    """Fill layout 3's outcome columns from the spans: only traces flagged as failed have any failed span."""
    figures: dict[int, list[int]] = {}  # seq -> [denied, failed, the root's outcome]
    for seq, span, body, lead_span in conn.execute(_FAILED_SPANS):
        code = stored_outcome(body)
        found = figures.setdefault(seq, [0, 0, 0])
        found[0] += code == DENIED
        found[1] += code == ERROR
        if span == lead_span:
            found[2] = code
    conn.executemany(
        "UPDATE traces SET denied = ?, failed = ?, lead_outcome = ? WHERE seq = ?",
        [(*found, seq) for seq, found in figures.items()],
    )


Step = str | Callable[[sqlite3.Connection], None]

_SCHEMA: Final[tuple[Step, ...]] = (
    """CREATE TABLE IF NOT EXISTS traces (
        seq INTEGER PRIMARY KEY,  -- rowid: the order traces were first seen
        trace_id BLOB NOT NULL UNIQUE,
        span_count INTEGER NOT NULL DEFAULT 0,
        start_ns INTEGER,
        end_ns INTEGER,
        agents TEXT NOT NULL DEFAULT '',  -- sorted, joined by registry.tracestore._SEPARATOR
        tools TEXT NOT NULL DEFAULT '',  -- the tools its spans name, likewise
        denied INTEGER NOT NULL DEFAULT 0,  -- spans where a call was refused (registry.trace_outcomes)
        failed INTEGER NOT NULL DEFAULT 0,  -- other failed spans; both counts include the root
        -- The root: the least (lead_rank, lead_start, lead_span); rank 0 is a span without a parent.
        lead_rank INTEGER NOT NULL DEFAULT 2,
        lead_start INTEGER NOT NULL DEFAULT 0,
        lead_span INTEGER NOT NULL DEFAULT 0,
        lead_outcome INTEGER NOT NULL DEFAULT 0,  -- its outcome: an index of mesh.tracing.outcome.OUTCOMES
        arrived_ns INTEGER  -- when its latest span was stored, by this store's clock; NULL before layout 3
    )""",
    "CREATE INDEX IF NOT EXISTS traces_by_start ON traces (start_ns)",
    "CREATE INDEX IF NOT EXISTS traces_failed_by_start ON traces (start_ns) WHERE lead_outcome > 0",
    "CREATE INDEX IF NOT EXISTS traces_denied_by_start ON traces (start_ns) WHERE denied > 0",
    """CREATE TABLE IF NOT EXISTS spans (
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
    )""",
    "CREATE INDEX IF NOT EXISTS spans_roots ON spans (trace_seq, start_ns, span_id) WHERE root = 1",
)
_FAILED_SPANS: Final = """
SELECT t.seq, s.span_id, s.body, t.lead_span
FROM traces t JOIN spans s ON s.trace_seq = t.seq WHERE t.error = 1 AND s.status = 2
"""
_UPGRADES: Final[dict[int, tuple[Step, ...]]] = {
    # From each older layout, the steps that bring it to the next.
    0: (
        "ALTER TABLE traces ADD COLUMN agents TEXT NOT NULL DEFAULT ''",
        """UPDATE traces SET agents = coalesce(
            (SELECT group_concat(agent, char(31)) FROM trace_agents WHERE trace_seq = traces.seq), ''
        )""",  # the primary key (trace_seq, agent) hands them over sorted
    ),
    1: (
        "ALTER TABLE traces ADD COLUMN tools TEXT NOT NULL DEFAULT ''",
        """UPDATE traces SET tools = named.tools FROM (
            SELECT trace_seq, group_concat(tool, char(31)) AS tools
            FROM (SELECT trace_seq, tool FROM trace_tools ORDER BY trace_seq, tool) GROUP BY trace_seq
        ) AS named WHERE traces.seq = named.trace_seq""",
        "DROP TABLE trace_agents",
        "DROP TABLE trace_tools",
    ),
    2: (
        "ALTER TABLE traces ADD COLUMN denied INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE traces ADD COLUMN failed INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE traces ADD COLUMN lead_rank INTEGER NOT NULL DEFAULT 2",
        "ALTER TABLE traces ADD COLUMN lead_start INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE traces ADD COLUMN lead_span INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE traces ADD COLUMN lead_outcome INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE traces ADD COLUMN arrived_ns INTEGER",
        """UPDATE traces SET (lead_rank, lead_start, lead_span) = (
            SELECT 1 - root, start_ns, span_id FROM spans WHERE trace_seq = traces.seq
            ORDER BY 1 - root, start_ns, span_id LIMIT 1
        ) WHERE EXISTS (SELECT 1 FROM spans WHERE trace_seq = traces.seq)""",
        _backfill_outcomes,
        "DROP INDEX IF EXISTS traces_errors_by_start",
        "ALTER TABLE traces DROP COLUMN error",
        "CREATE INDEX traces_failed_by_start ON traces (start_ns) WHERE lead_outcome > 0",
        "CREATE INDEX traces_denied_by_start ON traces (start_ns) WHERE denied > 0",
    ),
}
