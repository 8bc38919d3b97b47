"""The trace store, on SQLite and on PostgreSQL alike: idempotent ingest, summaries kept current, filters,
durability, retention. The PostgreSQL store's own matters (partitions, its schema, a lost server) are in
test_pg_tracestore.py."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp.server.mcpserver import MCPServer

from mesh.errors import ConfigError
from mesh.identity import MeshKeys
from mesh.testing.postgres import PostgresCluster
from mesh.tracing.stitch import summarize
from mesh.wire import SpanEventRecord, SpanRecord, SpanStatus
from registry.otlp import SpanRow, decode_protobuf, encode_spans
from registry.span_intake import install_span_intake
from registry.trace_stores import TraceStore, open_trace_store
from registry.tracestore import SqliteTraceStore

T0 = 1_700_000_000_000_000_000
MS = 1_000_000
DAY_S = 86_400
BACKENDS = ["sqlite", "postgres"]


def chain(
    trace: int,
    agents: list[str],
    *,
    start_ms: int = 0,
    length_ms: int = 100,
    status: SpanStatus = "ok",
    t0: int = T0,
) -> list[SpanRecord]:
    """One call chain: agents[0] calls agents[1] calls ..., each hop a tools/call server span, from `t0` (ns)."""
    trace_id = f"{trace:032x}"
    return [
        SpanRecord(
            trace_id=trace_id,
            span_id=f"{trace:08x}{hop + 1:08x}",
            parent_id=f"{trace:08x}{hop:08x}" if hop else None,
            name=f"tools/call {agent}-tool",
            kind="server",
            agent=agent,
            start_ns=t0 + (start_ms + hop) * MS,
            end_ns=t0 + (start_ms + length_ms - hop) * MS,
            status=status if hop == len(agents) - 1 else "ok",
        )
        for hop, agent in enumerate(agents)
    ]


def failing(span: SpanRecord, how: str) -> SpanRecord:
    """The span, failed: "error" plainly, "denied" refused there by a policy, "relayed" a client span whose
    callee refused it (`mesh.tracing.outcome`'s rules); "ok" leaves it as it is."""
    if how == "ok":
        return span
    if how == "relayed":
        return span.model_copy(update={"kind": "client", "status": "error", "status_message": "PolicyDenied: no"})
    events = [SpanEventRecord(name="mesh.decision", time_ns=span.start_ns, attributes=DENY)] if how == "denied" else []
    return span.model_copy(update={"status": "error", "status_message": "refused", "events": events})


DENY = {"mesh.decision.kind": "policy", "mesh.decision.choice": "deny", "mesh.decision.reason": "not abroad"}
"""A policy's refusal, as `mesh.decisions.record_decision` writes it on the span of the refused call."""
OUTCOMES = ("ok", "error", "denied", "relayed")


def rows(spans: list[SpanRecord]) -> list[SpanRow]:
    return decode_protobuf(encode_spans(spans))


def open_store(location: str, retain: float | None = None) -> TraceStore:
    """The store at `location` (a SQLite file or a PostgreSQL URL), as `mesh tracer --db` opens it."""
    return open_trace_store(location, Path(location), retain=retain)


@pytest.fixture(params=BACKENDS)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a fresh store lives: a SQLite file in a folder still to be made, or an empty PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "nested" / "dir" / "traces.sqlite3")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(location: str) -> Iterator[TraceStore]:
    store = open_store(location)
    yield store
    store.close()


@pytest.fixture(scope="module", params=BACKENDS)
def fresh_store(request: pytest.FixtureRequest) -> Callable[[], TraceStore]:
    """Opens an empty store each call (for Hypothesis, which runs a test body many times per fixture)."""
    if request.param == "sqlite":
        return lambda: SqliteTraceStore(":memory:")
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    url = cluster.create_database(f"t_{uuid.uuid4().hex[:12]}")

    def fresh() -> TraceStore:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS traces, spans, trace_store_schema")
        return open_store(url)

    return fresh


def test_a_redelivered_batch_stores_nothing_twice(store: TraceStore) -> None:
    batch = rows(chain(1, ["a", "b", "c"]))
    assert store.ingest(batch) == 3
    assert store.ingest(batch) == 0
    assert store.span_count() == 3
    assert len(store.get_trace(f"{1:032x}")) == 3
    (summary,) = store.list_traces()
    assert summary.span_count == 3


def test_a_partly_redelivered_batch_stores_only_the_new_spans(store: TraceStore) -> None:
    spans = chain(1, ["a", "b", "c", "d"])
    store.ingest(rows(spans[:2]))
    assert store.ingest(rows(spans[1:] + spans[3:])) == 2
    (summary,) = store.list_traces()
    assert (summary.span_count, summary.agents) == (4, ["a", "b", "c", "d"])


def test_the_summary_follows_late_spans_and_a_late_root(store: TraceStore) -> None:
    spans = chain(7, ["client", "triage", "crm"], status="error")
    store.ingest(rows(spans[2:]))
    (early,) = store.list_traces()
    assert (early.root.agent, early.root.tool, early.status) == ("crm", "crm-tool", "error")
    store.ingest(rows(spans[:2]))
    (late,) = store.list_traces()
    assert late == summarize(spans)
    assert (late.root.agent, late.root.tool, late.span_count, late.duration_ms) == ("client", "client-tool", 3, 100.0)


def test_unknown_and_malformed_trace_ids_have_no_spans(store: TraceStore) -> None:
    store.ingest(rows(chain(1, ["a"])))
    assert store.get_trace(f"{2:032x}") == []
    assert store.get_trace("not-hex") == []
    assert store.get_trace("abcd") == []


def test_trace_ids_are_found_by_their_start(store: TraceStore) -> None:
    full = [f"{trace:032x}" for trace in (0xAB12 << 112 | 1, 0xAB12 << 112 | 2, 0xAB13 << 112, 0xFF << 120)]
    for trace, trace_id in enumerate(full, 1):
        store.ingest(rows([span.model_copy(update={"trace_id": trace_id}) for span in chain(trace, ["a"])]))
    assert store.trace_ids_starting("ab12") == full[:2]
    assert store.trace_ids_starting("AB12", limit=1) == full[:1]
    assert store.trace_ids_starting("ab1") == full[:2]  # an odd digit narrows by a nibble
    assert store.trace_ids_starting("ab1", limit=3) == full[:3]
    assert store.trace_ids_starting("ab13") == [full[2]]
    assert store.trace_ids_starting(full[1]) == [full[1]]
    assert store.trace_ids_starting("f") == [full[3]]
    assert store.trace_ids_starting("ab14") == []
    for bad in ("", "xyz", "ab 1", "0" * 33):
        assert store.trace_ids_starting(bad) == [], bad


def test_listing_filters_by_agent_tool_status_start_and_duration(store: TraceStore) -> None:
    store.ingest(rows(chain(1, ["a", "b"], start_ms=0)))
    store.ingest(rows(chain(2, ["a", "c"], start_ms=1_000, status="error")))  # c failed, a went on
    store.ingest(rows(chain(3, ["d"], start_ms=2_000, length_ms=300, status="error")))  # the root failed

    def ids(**filters: object) -> list[int]:
        return [int(summary.trace_id, 16) for summary in store.list_traces(**filters)]  # type: ignore[arg-type]

    assert ids() == [3, 2, 1]
    assert ids(agent="c") == [2]
    assert ids(agent="a") == [2, 1]
    assert ids(tool="b-tool") == [1]
    assert ids(status="error") == [3]  # the root's outcome
    assert ids(status="ok") == [2, 1]
    assert ids(errors=True) == [2]  # a span failed beside the root
    assert ids(errors=False) == [3, 1]
    assert ids(since=(T0 + 500 * MS) / 1e9) == [3, 2]
    assert ids(min_duration_ms=200) == [3]
    assert ids(limit=1) == [3]
    assert ids(agent="nobody") == []
    store.ingest(rows(chain(4, ["ab", "a.b"], start_ms=3_000)))
    assert ids(agent="a") == [2, 1]  # whole names only: not "ab", nor "a.b"
    assert ids(agent="b") == [1]
    assert ids(tool="b") == []
    assert ids(agent="a.b") == [4]
    store.ingest(rows(chain(5, ["x\x1fy"], start_ms=4_000)))  # OTLP allows any service name
    assert store.list_traces(limit=1)[0].agents == ["x y"]
    assert ids(agent="x\x1fy") == [5]
    assert ids(agent="x") == []
    with pytest.raises(ValueError, match="status"):
        store.list_traces(status="fine")


def test_names_with_quotes_backslashes_braces_and_commas_are_kept_as_they_are(store: TraceStore) -> None:
    names = ['say "hi"', "back\\slash", "{a,b}", "NULL", "ünï cödé"]
    for trace, name in enumerate(names, 1):
        spans = [span.model_copy(update={"agent": name, "name": f"tools/call {name}!"}) for span in chain(trace, ["a"])]
        store.ingest(rows(spans))
    for trace, name in enumerate(names, 1):
        (found,) = store.list_traces(agent=name)
        assert (found.trace_id, found.agents, found.root.agent, found.root.tool) == (
            f"{trace:032x}",
            [name],
            name,
            f"{name}!",
        )
        assert [summary.trace_id for summary in store.list_traces(tool=f"{name}!")] == [f"{trace:032x}"]
        assert [span.agent for span in store.get_trace(f"{trace:032x}")] == [name]


def test_a_store_reopens_with_everything_it_acknowledged(location: str) -> None:
    first = open_store(location)
    first.ingest(rows(chain(1, ["a", "b"])))
    first.close()
    again = open_store(location)
    assert again.ingest(rows(chain(1, ["a", "b"]))) == 0
    assert [s.span_count for s in again.list_traces()] == [2]
    again.close()


def test_acknowledged_spans_survive_kill_9(location: str) -> None:
    child = textwrap.dedent(
        f"""
        import sys
        from registry.otlp import decode_protobuf, encode_spans
        from tests.unit.test_tracestore import chain, open_store
        store = open_store({location!r})
        for trace in range(1, 1000):
            store.ingest(decode_protobuf(encode_spans(chain(trace, ["a", "b", "c"]))))
            print(trace, flush=True)
        """
    )
    root = Path(__file__).resolve().parents[2]
    with subprocess.Popen([sys.executable, "-c", child], cwd=root, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        acknowledged = [int(proc.stdout.readline()) for _ in range(20)]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    store = open_store(location)
    for trace in acknowledged:
        assert len(store.get_trace(f"{trace:032x}")) == 3
    store.close()


def test_stores_sharing_a_database_agree_on_every_trace(location: str) -> None:
    # Each store stands for an ingest worker, or a registry replica: its own connections and locks.
    stores = [open_store(location) for _ in range(3)]
    traces = list(range(1, 121))
    random.Random(3).shuffle(traces)

    def ingest(store: TraceStore, share: list[int]) -> None:
        for trace in share:
            # Every trace arrives twice, in two halves, from two different stores.
            store.ingest(rows(chain(trace, ["a", "b", "c", "d"])[:2]))
            store.ingest(rows(chain(trace, ["a", "b", "c", "d"])[1:]))

    with ThreadPoolExecutor(len(stores)) as pool:
        list(pool.map(ingest, stores, [traces[i::3] for i in range(3)]))
        list(pool.map(ingest, stores, [traces[(i + 1) % 3 :: 3] for i in range(3)]))
    summaries = stores[0].list_traces(limit=1000)
    assert sorted(int(summary.trace_id, 16) for summary in summaries) == sorted(traces)
    assert {summary.span_count for summary in summaries} == {4}
    assert stores[1].span_count() == 4 * len(traces)
    for store in stores:
        store.close()


# What layouts 0 and 1 have in common: all but the traces table and trace_agents.
SHARED_BY_LAYOUTS_0_AND_1 = """
CREATE INDEX traces_by_start ON traces (start_ns);
CREATE INDEX traces_errors_by_start ON traces (start_ns) WHERE error = 1;
CREATE TABLE spans (
    trace_seq INTEGER NOT NULL, span_id INTEGER NOT NULL, root INTEGER NOT NULL, agent TEXT NOT NULL,
    instance TEXT NOT NULL, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, status INTEGER NOT NULL,
    tool TEXT NOT NULL, body BLOB NOT NULL, UNIQUE (trace_seq, span_id)
);
CREATE INDEX spans_roots ON spans (trace_seq, start_ns, span_id) WHERE root = 1;
CREATE TABLE trace_tools (
    tool TEXT NOT NULL, trace_seq INTEGER NOT NULL, PRIMARY KEY (tool, trace_seq)
) WITHOUT ROWID;
"""
LAYOUT_0 = (
    """
CREATE TABLE traces (
    seq INTEGER PRIMARY KEY, trace_id BLOB NOT NULL UNIQUE, span_count INTEGER NOT NULL DEFAULT 0,
    start_ns INTEGER, end_ns INTEGER, error INTEGER NOT NULL DEFAULT 0
);"""
    + SHARED_BY_LAYOUTS_0_AND_1
    + """
CREATE TABLE trace_agents (
    trace_seq INTEGER NOT NULL, agent TEXT NOT NULL, PRIMARY KEY (trace_seq, agent)
) WITHOUT ROWID;
CREATE INDEX trace_agents_by_agent ON trace_agents (agent, trace_seq);
"""
)
LAYOUT_1 = (
    """
CREATE TABLE traces (
    seq INTEGER PRIMARY KEY, trace_id BLOB NOT NULL UNIQUE, span_count INTEGER NOT NULL DEFAULT 0,
    start_ns INTEGER, end_ns INTEGER, error INTEGER NOT NULL DEFAULT 0, agents TEXT NOT NULL DEFAULT ''
);"""
    + SHARED_BY_LAYOUTS_0_AND_1
    + """
CREATE TABLE trace_agents (
    agent TEXT NOT NULL, trace_seq INTEGER NOT NULL, PRIMARY KEY (agent, trace_seq)
) WITHOUT ROWID;
PRAGMA user_version = 1;
"""
)


def test_a_sqlite_store_of_the_second_layout_is_brought_up_to_date_with_its_traces(tmp_path: Path) -> None:
    path = tmp_path / "traces.sqlite3"
    old = [chain(1, ["b", "a"], status="error"), chain(2, ["c"], start_ms=200)]
    with sqlite3.connect(path) as conn:
        conn.executescript(LAYOUT_1)
        for seq, trace in enumerate(old, 1):
            agents = sorted({span.agent for span in trace})
            conn.execute(
                "INSERT INTO traces VALUES (?, ?, ?, ?, ?, ?, ?)",
                (seq, bytes.fromhex(trace[0].trace_id), len(trace), trace[0].start_ns, trace[0].end_ns,
                 int(any(span.status == "error" for span in trace)), "\x1f".join(agents)),
            )  # fmt: skip
            conn.executemany(
                "INSERT INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [(seq, *r[1:]) for r in rows(trace)]
            )
            conn.executemany("INSERT INTO trace_agents VALUES (?, ?)", [(agent, seq) for agent in agents])
            conn.executemany("INSERT INTO trace_tools VALUES (?, ?)", [(f"{a}-tool", seq) for a in reversed(agents)])
    conn.close()
    store = SqliteTraceStore(path)
    store.ingest(rows(chain(1, ["b", "a", "d"])[2:]))  # a late span of a trace stored before
    assert [(t.agents, t.span_count, t.status, t.errors) for t in store.list_traces()] == [
        (["c"], 1, "ok", 0),
        (["a", "b", "d"], 3, "ok", 1),  # a failed beside the root, b
    ]
    assert [t.trace_id for t in store.list_traces(tool="a-tool")] == [old[0][0].trace_id]
    assert [t.trace_id for t in store.list_traces(tool="d-tool")] == [old[0][0].trace_id]
    assert [t.trace_id for t in store.list_traces(tool="c-tool")] == [old[1][0].trace_id]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (3,)
        assert conn.execute("SELECT tools FROM traces ORDER BY seq").fetchall() == [
            ("a-tool\x1fb-tool\x1fd-tool",),
            ("c-tool",),
        ]
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert tables == {"traces", "spans"}
    store.close()


def test_a_sqlite_store_of_the_first_layout_is_brought_up_to_date_with_its_traces(tmp_path: Path) -> None:
    path = tmp_path / "traces.sqlite3"
    old = chain(1, ["b", "a"], status="error")
    with sqlite3.connect(path) as conn:
        conn.executescript(LAYOUT_0)
        conn.execute(
            "INSERT INTO traces VALUES (1, ?, 2, ?, ?, 1)", (bytes.fromhex(old[0].trace_id), T0, T0 + 100 * MS)
        )
        conn.executemany("INSERT INTO spans VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [row[1:] for row in rows(old)])
        conn.executemany("INSERT INTO trace_agents VALUES (1, ?)", [("a",), ("b",)])
        conn.executemany("INSERT INTO trace_tools VALUES (?, 1)", [("a-tool",), ("b-tool",)])
    conn.close()
    store = SqliteTraceStore(path)
    store.ingest(rows(chain(2, ["c"], start_ms=500)))
    assert [(t.agents, t.span_count, t.status, t.errors) for t in store.list_traces()] == [
        (["c"], 1, "ok", 0),
        (["a", "b"], 2, "ok", 1),
    ]
    assert [t.trace_id for t in store.list_traces(agent="a")] == [old[0].trace_id]
    assert [t.trace_id for t in store.list_traces(tool="b-tool")] == [old[0].trace_id]
    assert len(store.get_trace(old[0].trace_id)) == 2
    store.close()
    again = SqliteTraceStore(path)  # nothing left to bring up to date
    assert again.list_traces(agent="c")[0].span_count == 1
    again.close()


def test_a_sqlite_store_written_by_a_newer_agentplex_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "traces.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(ConfigError, match=r"^trace store .* newer agentplex \(layout 99; this one reads up to 3\)"):
        SqliteTraceStore(path)


def test_an_in_memory_store_works_for_tests() -> None:
    store = SqliteTraceStore(":memory:")
    assert store.location is None
    assert store.ingest(rows(chain(1, ["a"]))) == 1
    assert store.span_count() == 1
    store.close()


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_summaries_match_summarize_however_spans_arrive(
    fresh_store: Callable[[], TraceStore], data: st.DataObject
) -> None:
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    traces = data.draw(st.integers(1, 6))
    spans: list[SpanRecord] = []
    for trace in range(1, traces + 1):
        agents = data.draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=6))
        status: SpanStatus = data.draw(st.sampled_from(["ok", "error"]))
        trace_spans = chain(trace, agents, start_ms=trace * 10, status=status)
        untooled = data.draw(st.sets(st.integers(0, len(trace_spans) - 1)))
        trace_spans = [s.model_copy(update={"name": "step"}) if i in untooled else s for i, s in enumerate(trace_spans)]
        failed = data.draw(st.lists(st.sampled_from(OUTCOMES), min_size=len(trace_spans), max_size=len(trace_spans)))
        trace_spans = [failing(s, how) for s, how in zip(trace_spans, failed, strict=True)]
        if len(trace_spans) > 1 and data.draw(st.booleans()):
            trace_spans = trace_spans[1:]  # the root never arrives: the earliest span stands in
        spans += trace_spans
    arriving = spans + rng.sample(spans, k=len(spans) // 3)
    rng.shuffle(arriving)
    store = fresh_store()
    cut = sorted(rng.sample(range(len(arriving) + 1), k=min(3, len(arriving) + 1)))
    for start, end in zip([0, *cut], [*cut, len(arriving)], strict=True):
        store.ingest(rows(arriving[start:end]))
    expected = sorted(
        (summarize([s for s in spans if s.trace_id == f"{t:032x}"]) for t in range(1, traces + 1)),
        key=lambda summary: -summary.start,
    )
    assert store.list_traces() == expected
    assert store.list_traces(denied=True) == [t for t in expected if t.denied]
    assert store.list_traces(errors=False, status="ok") == [t for t in expected if not t.errors and t.status == "ok"]
    for name in ("a", "b", "c", "d"):  # a trace's agents and tools gathered from every batch
        assert store.list_traces(agent=name) == [t for t in expected if name in t.agents]
        named = {s.trace_id for s in spans if s.name == f"tools/call {name}-tool"}
        assert store.list_traces(tool=f"{name}-tool") == [t for t in expected if t.trace_id in named]
    assert store.span_count() == len(spans)
    store.close()


def test_pruning_drops_whole_traces_past_the_retention_and_keeps_the_rest(location: str) -> None:
    now = time.time()
    store = open_store(location, retain=14 * DAY_S)
    old = chain(1, ["a", "b"], t0=int((now - 20 * DAY_S) * 1e9))
    recent = chain(2, ["a", "c"], t0=int((now - 3600) * 1e9))
    older_root_late = chain(3, ["d", "e"], t0=int((now - 30 * DAY_S) * 1e9))
    store.ingest(rows(old + recent + older_root_late[1:]))
    assert store.prune(now - 40 * DAY_S) == 0  # nothing was 14 days old then
    store.ingest(rows(older_root_late[:1]))
    assert store.prune(now) == 2
    assert [summary.trace_id for summary in store.list_traces()] == [recent[0].trace_id]
    assert store.get_trace(old[0].trace_id) == []
    assert store.get_trace(older_root_late[0].trace_id) == []
    assert len(store.get_trace(recent[0].trace_id)) == 2
    assert store.span_count() == 2
    assert store.prune(now) == 0
    assert store.ingest(rows(recent)) == 0  # what is kept is still known
    store.close()


def test_a_store_without_retention_keeps_everything(store: TraceStore) -> None:
    store.ingest(rows(chain(1, ["a"], t0=int((time.time() - 400 * DAY_S) * 1e9))))
    assert store.prune(time.time()) == 0
    assert store.span_count() == 1


@pytest.mark.anyio
async def test_an_intake_prunes_its_store_as_it_starts(location: str) -> None:
    now = time.time()
    store = open_store(location, retain=7 * DAY_S)
    store.ingest(rows(chain(1, ["a"], t0=int((now - 10 * DAY_S) * 1e9)) + chain(2, ["b"], t0=int(now * 1e9))))
    intake = install_span_intake(
        MCPServer("pruned"), store, keys=MeshKeys(b"prune-test-secret", "prune-test"), writers=0
    )
    async with intake:
        with anyio.fail_after(10):
            while store.span_count() > 1:
                await anyio.sleep(0.02)
    assert [summary.agents for summary in store.list_traces()] == [["b"]]
    store.close()


def test_a_retention_that_is_not_positive_is_refused(tmp_path: Path) -> None:
    for retain in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="positive"):
            open_trace_store(None, tmp_path / "traces.sqlite3", retain=retain)
