"""Benchmark: OTLP ingest into PostgreSQL beside SQLite, and trace queries with a million spans in PostgreSQL.

One run, in interleaved rounds (medians reported): the tracer (`registry.span_intake` on an MCPServer,
as `mesh tracer` serves it, with its ingest worker processes) storing into (1) a SQLite file and
(2) a PostgreSQL database of a throwaway cluster on this host (`mesh.testing.postgres`), fed
512-span OTLP/HTTP protobuf batches by bench/ingest.py's keep-alive client over 127.0.0.1. CPU per
span is counted for the tracer with its workers, and for the PostgreSQL server apart. Each round
first times, in this process and without HTTP, decoding alone and each store's ingest of decoded
rows alone (8 batches a transaction, as the tracer groups them): where the time goes. Then
~1,000,000 spans go straight into a PostgreSQL store, and `traces show` / `traces ls` are timed
as the HTTP handlers run them.

    python bench/ingest_pg.py [--spans 200000] [--stored 1000000] [--concurrency 8] [--rounds 3] [--fsync]

The throwaway cluster runs with fsync=off, as the tests' does; --fsync turns it on, so that each
commit waits for the disk as on a production server.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest import BATCH, batch_from, ingest_over_http, query_timings, template_request, trace_moments

from mesh.testing.postgres import PostgresCluster, postgres_cluster
from registry.otlp import SpanRow, decode_protobuf
from registry.pg_tracestore import PgTraceStore
from registry.trace_stores import TraceStore
from registry.tracestore import SqliteTraceStore

GROUP = 8
"""Batches per transaction, as the tracer groups queued batches."""


def main() -> None:
    """Start a cluster, run the rounds, fill a million spans, time the queries, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=200_000, help="spans sent to each receiver a round")
    parser.add_argument("--stored", type=int, default=1_000_000, help="spans stored for the query timings")
    parser.add_argument("--concurrency", type=int, default=8, help="batches in flight (exporters sending at once)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--fsync", action="store_true", help="run the cluster with fsync=on")
    args = parser.parse_args()
    rng = random.Random(7)
    template = template_request()
    moments = trace_moments(time.time_ns())
    batches = [batch_from(template, rng, next(moments)) for _ in range(args.spans // BATCH)]
    print(f"batches of {BATCH} spans, {len(batches[0]) / BATCH:.0f} bytes/span, {len(batches)} batches a round")
    with postgres_cluster() as cluster, tempfile.TemporaryDirectory(prefix="mesh-bench-") as tmp:
        if args.fsync:  # the command line's fsync=off outranks any setting made in SQL: start it again without
            cluster.stop()
            replace(cluster, options=cluster.options.replace("-c fsync=off", "-c fsync=on")).start()
        postmaster = _postmaster(cluster)
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            fsync = conn.execute("SHOW fsync").fetchone()
        print(f"PostgreSQL {cluster.bin_dir.parent.name} on 127.0.0.1:{cluster.port}, fsync={fsync and fsync[0]}")
        loops: list[tuple[float, float, float, float]] = []
        http: dict[str, list[tuple[float, float, float]]] = {"sqlite": [], "postgres": []}
        for round_ in range(args.rounds):
            decoded, decode_us = _decode(batches)
            sqlite_us, _ = _ingest_loop(SqliteTraceStore(Path(tmp) / f"loop-{round_}.sqlite3"), decoded)
            url = cluster.create_database(f"loop_{round_}")
            pg_us, pg_cpu = _ingest_loop(PgTraceStore(url), decoded, lambda: _cluster_cpu(postmaster).seconds)
            loops.append((decode_us, sqlite_us, pg_us, pg_cpu))
            print(
                f"    loop: decode {decode_us:.1f} µs/span; ingest of decoded rows: SQLite {sqlite_us:.1f},"
                f" PostgreSQL {pg_us:.1f} µs/span wall ({pg_cpu:.1f} of PostgreSQL server CPU)"
            )
            for kind in ("sqlite", "postgres"):
                if kind == "sqlite":
                    db: str | Path = Path(tmp) / f"tracer-{round_}.sqlite3"
                else:
                    db = cluster.create_database(f"tracer_{round_}")
                before = _cluster_cpu(postmaster)  # includes the schema, made as the tracer starts
                rate, cpu = ingest_over_http("tracer", db, batches, args.concurrency, label=kind)
                pg_cpu = (
                    (_cluster_cpu(postmaster, settled=before).seconds - before.seconds) / len(batches) / BATCH * 1e6
                )
                http[kind].append((rate, cpu, pg_cpu if kind == "postgres" else 0.0))
        queries = []
        if args.stored:
            store = PgTraceStore(cluster.create_database("million"))
            queries = query_timings(store, template, rng, args.stored, moments, budgets=(5.0, 20.0), group=GROUP)
    _report(args.rounds, loops, http, queries)


def _decode(batches: Sequence[bytes]) -> tuple[list[list[SpanRow]], float]:
    started = time.perf_counter()
    decoded = [decode_protobuf(batch) for batch in batches]
    return decoded, (time.perf_counter() - started) / len(batches) / BATCH * 1e6


def _ingest_loop(
    store: TraceStore, decoded: Sequence[list[SpanRow]], server_cpu: Callable[[], float] = lambda: 0.0
) -> tuple[float, float]:
    """Wall µs and `server_cpu` µs a span to ingest `decoded`, `GROUP` batches a transaction; closes the store.

    `server_cpu` is read while the store's connections are still open, their backends alive.
    """
    groups = [[row for rows in decoded[at : at + GROUP] for row in rows] for at in range(0, len(decoded), GROUP)]
    store.ingest(groups[0])  # connections, prepared statements, the first partition
    started, cpu = time.perf_counter(), server_cpu()
    for group in groups[1:]:
        store.ingest(group)
    elapsed, cpu = time.perf_counter() - started, server_cpu() - cpu
    store.close()
    spans = sum(map(len, groups[1:]))
    return elapsed / spans * 1e6, cpu / spans * 1e6


def _postmaster(cluster: PostgresCluster) -> int:
    """The cluster's postmaster: its backends are its children, so their CPU is counted with it."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"/postgres") and f"port={cluster.port}".encode() in argv:
            return int(cmdline.parent.name)
    raise RuntimeError(f"no postmaster listening on port {cluster.port}")


@dataclass(frozen=True)
class _ClusterCpu:
    seconds: float
    children: int


def _cluster_cpu(postmaster: int, settled: _ClusterCpu | None = None) -> _ClusterCpu:
    """CPU seconds of the whole cluster so far: the postmaster, its live children, and those gone.

    A backend exits with its connection, and its CPU moves into the postmaster's children's time
    once the postmaster has reaped it; given `settled`, wait (≤ 5 s) until no more children live
    than then, so none is counted as neither.
    """
    deadline = time.monotonic() + 5
    while True:
        clock = os.sysconf("SC_CLK_TCK")
        fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
        total = sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
        children = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                child = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # exited meanwhile
                continue
            if child[1] == str(postmaster):
                total += int(child[11]) + int(child[12])
                children += 1
        if settled is None or children <= settled.children or time.monotonic() > deadline:
            return _ClusterCpu(total / clock, children)
        time.sleep(0.05)


def _report(
    rounds: int,
    loops: list[tuple[float, float, float, float]],
    http: dict[str, list[tuple[float, float, float]]],
    queries: list[tuple[str, float, float]],
) -> None:
    decode_us, sqlite_us, pg_us, pg_loop_cpu = (statistics.median(column) for column in zip(*loops, strict=True))
    sqlite_rate, sqlite_cpu, _ = (statistics.median(column) for column in zip(*http["sqlite"], strict=True))
    pg_rate, pg_cpu, pg_server = (statistics.median(column) for column in zip(*http["postgres"], strict=True))
    pg_rates = [rate for rate, _, _ in http["postgres"]]
    print()
    print(
        f"medians of {rounds} rounds; PostgreSQL over HTTP ranged {min(pg_rates):,.0f} to {max(pg_rates):,.0f} spans/s"
    )
    print(f"{'measure':<56}{'SQLite':>12}{'PostgreSQL':>12}{'ratio':>9}")
    label = "ingest over HTTP, spans/s (target PostgreSQL ≥ 60,000)"
    print(f"{label:<56}{sqlite_rate:>12,.0f}{pg_rate:>12,.0f}{pg_rate / sqlite_rate:>8.2f}x")
    label = "  tracer CPU per span (with its workers), µs"
    print(f"{label:<56}{sqlite_cpu:>12.1f}{pg_cpu:>12.1f}")
    print(f"{'  PostgreSQL server CPU per span, µs':<56}{'':>12}{pg_server:>12.1f}")
    print(f"{'in one process: decode alone, µs/span':<56}{decode_us:>12.1f}{decode_us:>12.1f}")
    label = "in one process: ingest of decoded rows, µs/span wall"
    print(f"{label:<56}{sqlite_us:>12.1f}{pg_us:>12.1f}{pg_us / sqlite_us:>8.2f}x")
    print(f"{'  of which PostgreSQL server CPU, µs/span':<56}{'':>12}{pg_loop_cpu:>12.1f}")
    for label, value, budget in queries:
        print(f"{label + ' (PostgreSQL)':<56}{'':>12}{value:>9.3f} ms   budget {budget:g} ms")


if __name__ == "__main__":
    main()
