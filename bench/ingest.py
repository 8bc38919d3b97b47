"""Benchmark: OTLP ingest into the trace store, and trace queries with a million spans stored.

Side by side in interleaved rounds (medians reported): (1) a naive receiver (decode the
protobuf, one INSERT per span, attributes as JSON) and (2) the tracer (`registry.span_intake` on an
MCPServer, as `mesh tracer` runs it: ingest worker processes, spans flattened to tuples,
multi-row INSERTs, batches grouped per transaction, per-trace summaries), each served by uvicorn
in its own process on 127.0.0.1 and fed 512-span protobuf batches over real HTTP by a minimal
keep-alive client; server CPU per span (ingest workers included) comes from /proc. Each round
first runs a naive decode-and-insert loop in this process, as a gauge of the host's speed at
that moment. Then ~1,000,000 spans go straight into a `TraceStore` and `traces show` /
`traces ls` are timed as the handlers run them.

    python bench/ingest.py [--spans 200000] [--stored 1000000] [--concurrency 8] [--rounds 3] [--random-ids]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, closing
from pathlib import Path

import anyio
import anyio.abc
import uvicorn
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp.server.mcpserver import MCPServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proc_cpu import cpu_seconds

from mesh.identity import MeshKeys
from mesh.tracing.export import SPANS_AUDIENCE
from mesh.tracing.spans import TRACE_ID_RANDOM_BITS, trace_id_at
from mesh.tracing.stitch import stitch
from mesh.wire import SpanEventRecord, SpanKind, SpanRecord
from registry.otlp import SpanRow, decode_protobuf, encode_request
from registry.span_intake import install_span_intake
from registry.trace_stores import TraceStore, open_trace_store
from registry.tracestore import SqliteTraceStore

BATCH = 512
SPANS_PER_TRACE = 8
AGENTS = ("client", "triage", "crm", "kb")
KEYS = MeshKeys(b"bench-ingest-secret", "bench")
"""The receivers' mesh: the tracer takes spans of several agents with an admin token of it."""


def main() -> None:
    """Run both ingest paths, then the query timings, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=200_000, help="spans sent to each receiver")
    parser.add_argument("--stored", type=int, default=1_000_000, help="spans stored for the query timings")
    parser.add_argument("--concurrency", type=int, default=8, help="batches in flight (exporters sending at once)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (loop, naive, tracer)")
    parser.add_argument(
        "--random-ids", action="store_true", help="fully random trace ids (other SDKs') instead of agents' timed ones"
    )
    parser.add_argument("--serve", choices=("naive", "tracer"), help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.db)
        return
    rng = random.Random(7)
    template = template_request()
    moments = trace_moments(None if args.random_ids else time.time_ns())
    batches = [batch_from(template, rng, next(moments)) for _ in range(args.spans // BATCH)]
    print(f"batches of {BATCH} spans, {len(batches[0]) / BATCH:.0f} bytes/span, {os.cpu_count()} CPUs")
    loop: list[float] = []
    naive: list[tuple[float, float]] = []
    tracer: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as tmp:
        for round_ in range(args.rounds):  # interleaved, so the host's drift hits all three alike
            loop.append(naive_loop(Path(tmp) / f"loop-{round_}.sqlite3", batches))
            print(f"    loop: {loop[-1]:>9,.0f} spans/s in one process, no HTTP")
            naive.append(ingest_over_http("naive", Path(tmp) / f"naive-{round_}.sqlite3", batches, args.concurrency))
            tracer.append(ingest_over_http("tracer", Path(tmp) / f"tracer-{round_}.sqlite3", batches, args.concurrency))
        if args.stored:
            queries = query_timings(
                SqliteTraceStore(Path(tmp) / "million.sqlite3"), template, rng, args.stored, moments
            )
        else:
            queries = []
    naive_rate, naive_cpu = (statistics.median(values) for values in zip(*naive, strict=True))
    rate, cpu = (statistics.median(values) for values in zip(*tracer, strict=True))
    print()
    print(
        f"medians of {args.rounds} rounds; the tracer's range {min(r for r, _ in tracer):,.0f}"
        f" to {max(r for r, _ in tracer):,.0f} spans/s"
    )
    print(f"{'measure':<48}{'naive':>12}{'agentplex':>12}{'ratio':>9}")
    label = "host speed: naive decode-and-insert loop, spans/s"
    print(f"{label:<48}{statistics.median(loop):>12,.0f}")
    label = "ingest over HTTP, spans/s (higher is better)"
    print(f"{label:<48}{naive_rate:>12,.0f}{rate:>12,.0f}{rate / naive_rate:>8.2f}x")
    print(f"{'server CPU per span, µs (lower is better)':<48}{naive_cpu:>12.1f}{cpu:>12.1f}{naive_cpu / cpu:>8.2f}x")
    for label, value, budget in queries:
        print(f"{label:<48}{'':>12}{value:>9.3f} ms   budget {budget:g} ms")


# -- workload ----------------------------------------------------------------------------------


def template_request() -> ExportTraceServiceRequest:
    """One batch of MCP call chains: client → triage → crm → kb, client and server spans, a decision."""
    records: list[SpanRecord] = []
    now = time.time_ns()
    for trace in range(BATCH // SPANS_PER_TRACE):
        trace_id = f"{trace + 1:032x}"
        for hop in range(SPANS_PER_TRACE):
            kind: SpanKind = "client" if hop % 2 == 0 else "server"
            tool = ("triage", "lookup", "search", "draft")[hop // 2]
            events = []
            if hop == 3:
                decision = {"mesh.decision.kind": "route", "mesh.decision.choice": "billing"}
                decision |= {"mesh.decision.reason": "invoice keyword", "mesh.decision.confidence": 0.82}
                events.append(SpanEventRecord(name="mesh.decision", time_ns=now + 5_000, attributes=decision))
            records.append(
                SpanRecord(
                    trace_id=trace_id,
                    span_id=f"{hop + 1:016x}",
                    parent_id=f"{hop:016x}" if hop else None,
                    name=f"MCP send tools/call {tool}" if kind == "client" else f"tools/call {tool}",
                    kind=kind,
                    agent=AGENTS[(hop + 1) // 2 % len(AGENTS)],
                    instance="i-1",
                    start_ns=now + hop * 1_000,
                    end_ns=now + 1_000_000 - hop * 1_000,
                    status="ok",
                    attributes={
                        "mcp.method.name": "tools/call",
                        "mcp.protocol.version": "2025-11-25",
                        "jsonrpc.request.id": str(hop),
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": tool,
                    },
                    events=events,
                )
            )
    return encode_request(records)


def trace_moments(start_ns: int | None) -> Iterator[int | None]:
    """The time (ns) in each batch's trace ids: advancing as if the traces began at 100,000 spans/s; or None."""
    for index in itertools.count():
        yield None if start_ns is None else start_ns + index * BATCH * 1_000_000_000 // 100_000


def batch_from(template: ExportTraceServiceRequest, rng: random.Random, moment_ns: int | None = None) -> bytes:
    """The template with fresh ids (parents kept consistent) and times moved to now.

    Trace ids are made as agents make them (`mesh.tracing.spans.trace_id_at`: the time in 256ths
    of a second, then random bits) for `moment_ns`; without one, all 16 bytes are random, as some
    other OpenTelemetry SDKs send them.
    """
    request = ExportTraceServiceRequest()
    request.CopyFrom(template)
    shift = time.time_ns() - template.resource_spans[0].scope_spans[0].spans[0].start_time_unix_nano
    trace_ids: dict[bytes, bytes] = {}
    span_ids: dict[tuple[bytes, bytes], bytes] = {}
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                old = span.trace_id
                new = trace_ids.get(old)
                if new is None:
                    if moment_ns is None:
                        bits = rng.getrandbits(128)
                    else:
                        bits = trace_id_at(moment_ns, rng.getrandbits(TRACE_ID_RANDOM_BITS))
                    new = trace_ids[old] = bits.to_bytes(16, "big")
                span.span_id = span_ids.setdefault((old, span.span_id), rng.randbytes(8))
                if span.parent_span_id:
                    span.parent_span_id = span_ids.setdefault((old, span.parent_span_id), rng.randbytes(8))
                span.trace_id = new
                span.start_time_unix_nano += shift
                span.end_time_unix_nano += shift
    return request.SerializeToString()


# -- ingest over HTTP --------------------------------------------------------------------------


def ingest_over_http(
    kind: str, db: Path | str, batches: Sequence[bytes], concurrency: int, label: str = ""
) -> tuple[float, float]:
    """Start a receiver in a subprocess, send every batch; spans per second and server CPU µs per span.

    `db` is a SQLite file, or for the tracer a PostgreSQL URL too; `label` names the receiver in the output.
    """
    command = [sys.executable, __file__, "--serve", kind, "--db", str(db)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as server:
        try:
            assert server.stdout is not None
            url = server.stdout.readline().strip()
            client_cpu = time.process_time()
            rate, retries, cpu = anyio.run(send_all, url, batches, concurrency, server.pid)
            client_cpu = time.process_time() - client_cpu
        finally:
            server.terminate()
            server.wait(timeout=10)
    if kind == "naive":
        with closing(sqlite3.connect(db)) as conn:
            stored = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
    else:
        store = open_trace_store(str(db), Path(db))
        stored = store.span_count()
        store.close()
    spans = len(batches) * BATCH
    print(
        f"{label or kind:>8}: {rate:>9,.0f} spans/s over HTTP, {cpu / spans * 1e6:.1f} µs server CPU/span"
        f" (client {client_cpu / spans * 1e6:.1f}), {retries} 429s"
    )
    assert stored == spans, f"{kind} stored {stored} of {spans} spans"
    return rate, cpu / spans * 1e6


async def send_all(url: str, batches: Sequence[bytes], concurrency: int, pid: int) -> tuple[float, int, float]:
    """POST all batches over `concurrency` keep-alive connections; spans/s, 429s, the server's CPU seconds.

    The load generator is a minimal HTTP/1.1 client (~0.6 µs a span where httpx2 spends ~2.5) so
    that the two cores go to the receiver under test, as with any load generator.
    """
    host, port = url.removeprefix("http://").split(":")
    token = KEYS.mint("bench", SPANS_AUDIENCE, 3600, role="admin")
    pending = list(reversed(batches))
    retries = 0

    async def sender(take: Callable[[], bytes | None]) -> None:
        nonlocal retries
        async with await anyio.connect_tcp(host, int(port)) as stream:
            replies = BufferedByteReceiveStream(stream)
            while (body := take()) is not None:
                while (status := await post(stream, replies, body)) == 429:
                    retries += 1
                    await anyio.sleep(0.001)
                if status != 200:
                    raise RuntimeError(f"the receiver answered {status}")

    async def post(stream: anyio.abc.SocketStream, replies: BufferedByteReceiveStream, body: bytes) -> int:
        head = f"POST /v1/traces HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/x-protobuf\r\n"
        head += f"authorization: Bearer {token}\r\n"
        await stream.send(f"{head}content-length: {len(body)}\r\n\r\n".encode() + body)
        lines = (await replies.receive_until(b"\r\n\r\n", 65536)).decode("latin-1").split("\r\n")
        length = next(int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length:"))
        await replies.receive_exactly(length)
        return int(lines[0].split()[1])

    warm_up = iter(batches[:4])  # connections, imports, first pages (a redelivery, harmless)
    await sender(lambda: next(warm_up, None))
    started, cpu = time.perf_counter(), cpu_seconds(pid, children=True)
    with anyio.fail_after(300):
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(sender, lambda: pending.pop() if pending else None)
    elapsed, cpu = time.perf_counter() - started, cpu_seconds(pid, children=True) - cpu
    return len(batches) * BATCH / elapsed, retries, cpu


def serve(kind: str, db: str) -> None:
    """Child process: serve one receiver on a free port and print its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # clients may connect before uvicorn runs: the backlog holds them
    port = sock.getsockname()[1]
    app = naive_app(db) if kind == "naive" else tracer_app(db)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    print(f"http://127.0.0.1:{port}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


def tracer_app(db: str) -> Starlette:
    """The real thing: an MCPServer with the span intake installed, as `mesh tracer` serves it."""

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncGenerator[None]:
        async with intake:
            yield

    server = MCPServer("bench-tracer", lifespan=lifespan, log_level="WARNING")
    intake = install_span_intake(server, open_trace_store(db, Path(db)), keys=KEYS, max_pending=64)
    return server.streamable_http_app(json_response=True)


def naive_app(db: str) -> Starlette:
    """The baseline: decode the protobuf, then one INSERT per span, attributes as JSON."""
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(
        "CREATE TABLE spans (trace_id TEXT, span_id TEXT, parent_id TEXT, name TEXT, kind INTEGER,"
        " agent TEXT, start_ns INTEGER, end_ns INTEGER, status INTEGER, attributes TEXT, events TEXT,"
        " PRIMARY KEY (trace_id, span_id))"
    )

    def value(any_value: AnyValue) -> object:
        which = any_value.WhichOneof("value")
        return getattr(any_value, which) if which else None

    async def receive(request: Request) -> Response:
        export = ExportTraceServiceRequest.FromString(await request.body())
        conn.execute("BEGIN")
        for resource_spans in export.resource_spans:
            resource = {kv.key: value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {kv.key: value(kv.value) for kv in span.attributes}
                    events = [
                        {
                            "name": e.name,
                            "time_ns": e.time_unix_nano,
                            "attributes": {a.key: value(a.value) for a in e.attributes},
                        }
                        for e in span.events
                    ]
                    conn.execute(
                        "INSERT OR IGNORE INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex() or None,
                            span.name,
                            span.kind,
                            resource.get("service.name"),
                            span.start_time_unix_nano,
                            span.end_time_unix_nano,
                            span.status.code,
                            json.dumps(attributes),
                            json.dumps(events),
                        ),
                    )
        conn.execute("COMMIT")
        return Response(b"", media_type="application/x-protobuf")

    return Starlette(routes=[Route("/v1/traces", receive, methods=["POST"])])


def naive_loop(db: Path, batches: Sequence[bytes]) -> float:
    """Spans/s of the simplest loop: parse each batch, executemany its spans' columns, commit."""
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(
            "CREATE TABLE spans (trace_id BLOB, span_id BLOB, parent_id BLOB, name TEXT, kind INTEGER,"
            " start_ns INTEGER, end_ns INTEGER, status INTEGER, body BLOB, PRIMARY KEY (trace_id, span_id))"
        )
        started = time.perf_counter()
        for batch in batches:
            export = ExportTraceServiceRequest.FromString(batch)
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT OR IGNORE INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        s.trace_id,
                        s.span_id,
                        s.parent_span_id,
                        s.name,
                        s.kind,
                        s.start_time_unix_nano,
                        s.end_time_unix_nano,
                        s.status.code,
                        s.SerializeToString(),
                    )
                    for resource_spans in export.resource_spans
                    for scope_spans in resource_spans.scope_spans
                    for s in scope_spans.spans
                ),
            )
            conn.execute("COMMIT")
        return len(batches) * BATCH / (time.perf_counter() - started)


# -- queries with a million spans stored -------------------------------------------------------


def query_timings(
    store: TraceStore,
    template: ExportTraceServiceRequest,
    rng: random.Random,
    spans: int,
    moments: Iterator[int | None],
    budgets: tuple[float, float] = (1.0, 5.0),
    group: int = 1,
) -> list[tuple[str, float, float]]:
    """Fill `store` with `spans` spans, then time show/ls the way the HTTP handlers run them; closes it.

    `budgets` are show's and ls's in ms; `group` batches go into each ingest, as the tracer groups them.
    """
    started = time.perf_counter()
    trace_ids: list[str] = []
    pending: list[SpanRow] = []
    for index in range(spans // BATCH):
        rows = decode_protobuf(batch_from(template, rng, next(moments)))
        pending += rows
        if (index + 1) % group == 0:
            store.ingest(pending)
            pending = []
        trace_ids.append(rows[rng.randrange(len(rows))][0].hex())
    store.ingest(pending)
    store.checkpoint()
    elapsed = time.perf_counter() - started
    print(f"   store: {store.span_count():,} spans ingested directly (decode + ingest) in {elapsed:.1f} s")

    def show() -> None:
        trace_id = rng.choice(trace_ids)
        stitch(trace_id, store.get_trace(trace_id)).model_dump_json()

    def ls(**filters: object) -> Callable[[], None]:
        return lambda: [summary.model_dump_json() for summary in store.list_traces(**filters)]  # type: ignore[arg-type]

    show_budget, ls_budget = budgets
    results = [
        ("traces show (8-span trace), median", median_ms(show), show_budget),
        ("traces ls (latest 50), median", median_ms(ls()), ls_budget),
        ("traces ls --agent crm, median", median_ms(ls(agent="crm")), ls_budget),
        ("traces ls --status error (none match), median", median_ms(ls(status="error", limit=50)), ls_budget),
        (
            "traces ls --tool lookup --since 1h, median",
            median_ms(ls(tool="lookup", since=time.time() - 3600)),
            ls_budget,
        ),
    ]
    store.close()
    return results


def median_ms(operation: Callable[[], object], repeat: int = 200) -> float:
    """Median wall time of `operation`, in milliseconds."""
    timings: list[float] = []
    for _ in range(repeat):
        started = time.perf_counter()
        operation()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


if __name__ == "__main__":
    main()
