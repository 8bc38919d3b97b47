"""The PostgreSQL trace store's own matters: concurrent redelivery, day partitions and their retention,
answers equal to the SQLite store's, its schema, and a server that goes away. What both stores share is
tested on both in test_tracestore.py."""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import httpx2
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp.server.mcpserver import MCPServer
from psycopg import sql

from mesh.errors import ConfigError
from mesh.testing.postgres import PostgresCluster, postgres_cluster
from mesh.wire import SpanRecord, SpanStatus
from registry.pg_traceschema import partition_name, partitions
from registry.pg_tracestore import PgTraceStore
from registry.stores import StoreUnavailable
from registry.trace_api import install_trace_api
from registry.trace_stores import TraceStore, open_trace_store
from registry.tracestore import SqliteTraceStore
from tests.unit.test_tracestore import DAY_S, OUTCOMES, chain, failing, open_store, rows

NOW_S = time.time()


@pytest.fixture
def store(pg_url: str) -> Iterator[TraceStore]:
    store = open_store(pg_url)
    yield store
    store.close()


def query(url: str, statement: Any, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def partition_days(url: str) -> set[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {day for _, day, _ in partitions(conn)}


def day_of(seconds: float) -> int:
    return int(seconds // DAY_S)


def test_one_batch_delivered_twice_at_once_is_stored_once(pg_url: str) -> None:
    stores = [open_store(pg_url) for _ in range(2)]
    batches = [rows(chain(trace, ["a", "b", "c", "d"], t0=int(NOW_S * 1e9))) for trace in range(1, 41)]

    def deliver(store: TraceStore) -> int:
        return sum(store.ingest(batch) for batch in batches)

    with ThreadPoolExecutor(2) as pool:
        fresh = list(pool.map(deliver, stores))
    assert sum(fresh) == 160  # each span counted new by exactly one of the two deliveries
    assert stores[0].span_count() == 160
    assert query(pg_url, "SELECT count(*) FROM spans") == [(160,)]
    assert {summary.span_count for summary in stores[1].list_traces(limit=100)} == {4}
    for store in stores:
        store.close()


def test_every_span_of_a_trace_lives_in_the_partition_of_the_day_it_was_first_seen(store: TraceStore) -> None:
    # The root starts before midnight, its children after, and they arrive first.
    midnight = (day_of(NOW_S) - 2) * DAY_S
    spans = chain(1, ["a", "b", "c"], t0=int((midnight - 0.0005) * 1e9))
    assert [span.start_ns // (DAY_S * 10**9) for span in spans] == [day_of(midnight) - 1, *[day_of(midnight)] * 2]
    store.ingest(rows(spans[1:]))
    store.ingest(rows(spans[:1]))
    assert store.location is not None
    assert query(store.location, "SELECT DISTINCT day FROM spans") == [(day_of(midnight),)]
    (summary,) = store.list_traces()
    assert (summary.span_count, summary.root.agent, summary.start) == (3, "a", spans[0].start_ns / 1e9)
    assert sorted(span.span_id for span in store.get_trace(spans[0].trace_id)) == [span.span_id for span in spans]


def test_spans_from_long_ago_or_the_future_get_no_partition_of_their_own(store: TraceStore) -> None:
    store.ingest(rows(chain(1, ["a"], t0=10**9)))  # 1970
    store.ingest(rows(chain(2, ["a"], t0=int((NOW_S + 400 * DAY_S) * 1e9))))
    assert store.location is not None
    today = day_of(time.time())
    assert partition_days(store.location) <= {today - 31, today - 30, today, today + 1, today + 2}
    assert store.span_count() == 2
    assert len(store.get_trace(f"{1:032x}")) == 1


def test_retention_drops_whole_day_partitions_and_keeps_the_recent_ones(pg_url: str) -> None:
    store = open_store(pg_url, retain=14 * DAY_S)
    for trace, days_ago in enumerate((25, 20, 15, 13, 1, 0), 1):
        store.ingest(rows(chain(trace, ["a", "b"], t0=int((NOW_S - days_ago * DAY_S) * 1e9))))
    today = day_of(NOW_S)
    assert {today - 25, today - 20, today - 15, today} <= partition_days(pg_url)
    assert store.prune(NOW_S) == 3
    assert min(partition_days(pg_url)) >= day_of(NOW_S - 14 * DAY_S)
    assert (today + 1) in partition_days(pg_url)  # made ahead of the day
    assert [int(summary.trace_id, 16) for summary in store.list_traces()] == [6, 5, 4]
    assert query(pg_url, "SELECT count(*) FROM spans") == [(6,)]
    assert store.span_count() == 6
    store.close()


def test_a_partition_left_half_detached_is_finished_and_dropped(pg_url: str) -> None:
    store = open_store(pg_url, retain=DAY_S)
    old = day_of(NOW_S) - 10
    store.ingest(rows(chain(1, ["a"], t0=old * DAY_S * 10**9)))
    # DETACH ... CONCURRENTLY stopped between its two transactions (here: waiting for an old
    # snapshot to go, then cancelled) leaves the partition half detached.
    name = partition_name(old)
    detach = sql.SQL("ALTER TABLE spans DETACH PARTITION {} CONCURRENTLY").format(sql.Identifier(name))
    with psycopg.connect(pg_url) as holder, psycopg.connect(pg_url, autocommit=True) as conn:
        holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT count(*) FROM spans")
        conn.execute("SET statement_timeout = '300ms'")
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute(detach)
        holder.rollback()
        assert [pending for found, _, pending in partitions(conn) if found == name] == [True]
    assert store.prune(NOW_S) == 1
    assert query(pg_url, "SELECT count(*) FROM pg_class WHERE relname = %s", [name]) == [(0,)]
    store.close()


def test_an_empty_database_gets_the_schema_and_a_second_open_leaves_it_as_it_is(pg_url: str) -> None:
    first = open_store(pg_url)
    first.ingest(rows(chain(1, ["a"])))
    first.close()
    again = open_store(pg_url)
    assert again.span_count() == 1
    assert query(pg_url, "SELECT version FROM trace_store_schema") == [(2,)]
    again.close()


def test_a_database_written_by_a_newer_agentplex_is_refused_in_one_line(pg_url: str) -> None:
    open_store(pg_url).close()
    query(pg_url, "UPDATE trace_store_schema SET version = 99")
    with pytest.raises(
        ConfigError, match=r"^trace database .* newer agentplex \(schema 99; this one reads up to 2\)"
    ) as e:
        open_store(pg_url)
    assert "\n" not in str(e.value)


def test_an_unreachable_database_is_one_line(postgres: PostgresCluster) -> None:
    closed = f"postgresql://someone:secret@127.0.0.1:{postgres.port}/no_such_database"
    with pytest.raises(ConfigError, match=r"^cannot reach the trace database postgresql://someone:\*\*\*@") as e:
        open_trace_store(closed, Path("unused"))
    assert "\n" not in str(e.value)
    assert "secret" not in str(e.value)


@pytest.mark.anyio
async def test_connections_the_server_dropped_are_replaced_without_an_error(store: TraceStore) -> None:
    assert store.location is not None
    url = store.location
    store.ingest(rows(chain(1, ["a"])))
    others = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    assert query(url, sql.SQL("SELECT pg_terminate_backend(pid) " + others))
    with anyio.fail_after(10):
        while query(url, sql.SQL("SELECT pid " + others)):
            await anyio.sleep(0.02)
    assert store.span_count() == 1
    assert store.ingest(rows(chain(2, ["a"]))) == 1


@pytest.mark.anyio
async def test_a_lost_server_makes_calls_fail_as_unavailable_and_queries_answer_503_until_it_is_back() -> None:
    with postgres_cluster() as cluster:
        store = PgTraceStore(cluster.create_database("lost"), timeout=0.5)
        store.ingest(rows(chain(1, ["a"])))
        server = MCPServer("lost")
        install_trace_api(server, store, dict)
        transport = httpx2.ASGITransport(app=server.streamable_http_app(json_response=True))
        async with httpx2.AsyncClient(transport=transport, base_url="http://t") as client:
            cluster.stop()
            with pytest.raises(StoreUnavailable, match=r"^the trace database is unavailable"):
                store.ingest(rows(chain(2, ["a"])))
            listing = await client.get("/api/traces")
            shown = await client.get(f"/api/traces/{1:032x}")
            assert (listing.status_code, listing.headers["retry-after"]) == (503, "1")
            assert shown.status_code == 503
            assert "unavailable" in shown.json()["error"]
            cluster.start()
            with anyio.fail_after(30):  # the pool reconnects by itself, within seconds
                while True:
                    with contextlib.suppress(StoreUnavailable):
                        assert store.ingest(rows(chain(2, ["a"]))) == 1
                        break
                    await anyio.sleep(0.1)
            assert len((await client.get("/api/traces")).json()) == 2
        store.close()


def test_names_postgresql_text_cannot_hold_are_kept_readable(store: TraceStore) -> None:
    spans = [span.model_copy(update={"agent": "a\x00b"}) for span in chain(1, ["a"])]
    assert store.ingest(rows(spans)) == 1
    assert [span.agent for span in store.get_trace(spans[0].trace_id)] == ["a\ufffdb"]
    assert [summary.agents for summary in store.list_traces(agent="a\x00b")] == [["a\ufffdb"]]


@pytest.fixture(scope="module")
def pg_scratch(postgres: PostgresCluster) -> Callable[[], TraceStore]:
    """Opens an empty PostgreSQL store each call, in one database for the module."""
    url = postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")

    def fresh() -> TraceStore:
        query(url, "DROP TABLE IF EXISTS traces, spans, trace_store_schema")
        return open_store(url)

    return fresh


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_both_stores_answer_alike_however_spans_arrive(
    pg_scratch: Callable[[], TraceStore], data: st.DataObject
) -> None:
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    spans: list[SpanRecord] = []
    for trace in range(1, data.draw(st.integers(1, 6)) + 1):
        agents = data.draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=5))
        status: SpanStatus = data.draw(st.sampled_from(["ok", "error"]))
        # Hours or days ago, across midnights, or from a skewed clock far in the past.
        start_s = NOW_S - data.draw(st.sampled_from([0, 0.5, 3, 40, 400])) * DAY_S + trace * 0.01
        made = chain(trace * 977, agents, status=status, t0=int(start_s * 1e9), length_ms=data.draw(st.integers(1, 90)))
        untooled = data.draw(st.sets(st.integers(0, len(made) - 1)))
        made = [s.model_copy(update={"name": "step"}) if i in untooled else s for i, s in enumerate(made)]
        failed = data.draw(st.lists(st.sampled_from(OUTCOMES), min_size=len(made), max_size=len(made)))
        made = [failing(s, how) for s, how in zip(made, failed, strict=True)]
        if len(made) > 1 and data.draw(st.booleans()):
            made = made[1:]  # the root never arrives
        spans += made
    arriving = spans + rng.sample(spans, k=len(spans) // 3)
    rng.shuffle(arriving)
    cuts = sorted(rng.sample(range(len(arriving) + 1), k=min(3, len(arriving) + 1)))
    stores = [SqliteTraceStore(":memory:"), pg_scratch()]
    try:
        for begin, end in zip([0, *cuts], [*cuts, len(arriving)], strict=True):
            fresh = {store.ingest(rows(arriving[begin:end])) for store in stores}
            assert len(fresh) == 1
        sqlite, pg = stores
        filters: list[dict[str, Any]] = [{}, {"status": "error"}, {"status": "ok"}, {"limit": 2}]
        filters += [{"denied": True}, {"denied": False}, {"errors": True}, {"errors": False, "status": "ok"}]
        filters += [{"in_progress_after": 0.0}]  # every trace arrived since: those without a root are in progress
        filters += [{"agent": name} for name in "abcde"] + [{"tool": f"{name}-tool"} for name in "abc"]
        filters += [{"since": NOW_S - DAY_S}, {"min_duration_ms": 45}]
        for where in filters:
            assert pg.list_traces(**where) == sqlite.list_traces(**where), where
        for summary in sqlite.list_traces(limit=100):
            assert by_span(pg.get_trace(summary.trace_id)) == by_span(sqlite.get_trace(summary.trace_id))
            assert pg.trace_ids_starting(summary.trace_id[:5]) == sqlite.trace_ids_starting(summary.trace_id[:5])
        assert pg.span_count() == sqlite.span_count() == len(spans)
    finally:
        for store in stores:
            store.close()


def by_span(spans: list[SpanRecord]) -> list[SpanRecord]:
    return sorted(spans, key=lambda span: span.span_id)
