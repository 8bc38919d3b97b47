"""Benchmark: what a trace's id costs the trace store once it holds many traces.

Each tool call reaches the store as two spans in two batches: the caller's client span, then,
from the agent's exporter, its server span. This stores such pairs of batches into two stores
side by side, each first filled with `--stored` traces the same way: one with ids as agents
make them (`mesh.tracing.spans.trace_id_at`: the time in 256ths of a second, then 88 random
bits), one with fully random ids (as some other SDKs send). Slices alternate between the two;
reported per trace: CPU (user and system, from getrusage) and the bytes this process wrote (the
WAL frames, from /proc/self/io), which do not depend on the host's speed.

    python bench/trace_ids.py [--stored 200000] [--traces 320] [--slices 6] [--pairs 10]
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mesh.tracing.spans import TRACE_ID_RANDOM_BITS, trace_id_at
from mesh.wire import SpanRecord
from registry.otlp import SpanRow, decode_protobuf, encode_spans
from registry.tracestore import TraceStore

CALL_NS = 3_000_000  # one call every 3 ms, as a caller with ~1.5 ms hops makes them
ATTRIBUTES = {"mcp.method.name": "tools/call", "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "echo"}


@dataclass
class Side:
    """One store and the ids it is fed."""

    label: str
    timed: bool
    store: TraceStore
    rng: random.Random
    clock_ns: int = field(default_factory=time.time_ns)
    cpu_us: list[float] = field(default_factory=list[float])
    system_us: list[float] = field(default_factory=list[float])
    written: list[float] = field(default_factory=list[float])

    def batches(self, traces: int) -> tuple[list[SpanRow], list[SpanRow]]:
        """The caller's batch and the agent's, for `traces` calls starting now on this side's clock."""
        client: list[SpanRecord] = []
        server: list[SpanRecord] = []
        for index in range(traces):
            start = self.clock_ns + index * CALL_NS
            if self.timed:
                trace_id = trace_id_at(start, self.rng.getrandbits(TRACE_ID_RANDOM_BITS))
            else:
                trace_id = self.rng.getrandbits(128)
            caller_span = f"{self.rng.getrandbits(64) | 1:016x}"
            client.append(
                SpanRecord(
                    trace_id=f"{trace_id:032x}",
                    span_id=caller_span,
                    parent_id=None,
                    name="MCP send tools/call echo",
                    kind="client",
                    agent="caller",
                    instance="c-1",
                    start_ns=start,
                    end_ns=start + 1_500_000,
                    status="ok",
                    attributes=ATTRIBUTES | {"jsonrpc.request.id": str(index)},
                )
            )
            server.append(
                SpanRecord(
                    trace_id=f"{trace_id:032x}",
                    span_id=f"{self.rng.getrandbits(64) | 1:016x}",
                    parent_id=caller_span,
                    name="tools/call echo",
                    kind="server",
                    agent="echo",
                    instance="e-1",
                    start_ns=start + 300_000,
                    end_ns=start + 1_200_000,
                    status="ok",
                    attributes=ATTRIBUTES | {"jsonrpc.request.id": str(index)},
                )
            )
        self.clock_ns += traces * CALL_NS
        return decode_protobuf(encode_spans(client)), decode_protobuf(encode_spans(server))


def main() -> None:
    """Fill both stores, then time alternating slices and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stored", type=int, default=200_000, help="traces in each store before timing")
    parser.add_argument("--traces", type=int, default=320, help="calls per batch (one export a second)")
    parser.add_argument("--slices", type=int, default=6, help="timed slices per side, alternating")
    parser.add_argument("--pairs", type=int, default=10, help="pairs of batches per slice")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as tmp:
        sides = [
            Side("timed ids (agents')", True, TraceStore(Path(tmp) / "timed.sqlite3"), random.Random(1)),
            Side("random ids", False, TraceStore(Path(tmp) / "random.sqlite3"), random.Random(1)),
        ]
        try:
            for side in sides:
                started = time.perf_counter()
                for _ in range(args.stored // args.traces):
                    for batch in side.batches(args.traces):
                        side.store.ingest(batch)
                side.store.checkpoint()
                elapsed = time.perf_counter() - started
                print(f"{side.label}: {side.store.span_count():,} spans stored in {elapsed:.0f} s")
            for index in range(args.slices * 2):
                side = sides[index % 2 if index // 2 % 2 == 0 else 1 - index % 2]  # ABBA
                time_slice(side, args.traces, args.pairs)
        finally:
            for side in sides:
                side.store.close()
    print(f"\n{args.stored:,} traces stored; batches of {args.traces} calls; medians of {args.slices} slices")
    print(f"{'ids':<22}{'CPU µs/trace':>14}{'of it system':>14}{'bytes written/trace':>21}")
    for side in sides:
        print(
            f"{side.label:<22}{statistics.median(side.cpu_us):>14.1f}{statistics.median(side.system_us):>14.1f}"
            f"{statistics.median(side.written):>21,.0f}"
        )
    timed, random_ = sides
    ratio = statistics.median(random_.cpu_us) / statistics.median(timed.cpu_us)
    written = statistics.median(random_.written) / statistics.median(timed.written)
    print(f"random ids cost x{ratio:.2f} the CPU and x{written:.2f} the bytes written")


def time_slice(side: Side, traces: int, pairs: int) -> None:
    """Store `pairs` call batches (made beforehand) and record the cost per trace."""
    work = [side.batches(traces) for _ in range(pairs)]
    side.store.checkpoint()  # its writes land outside the slice
    before, written_before = resource.getrusage(resource.RUSAGE_SELF), written_bytes()
    for first, second in work:
        side.store.ingest(first)
        side.store.ingest(second)
    after, written_after = resource.getrusage(resource.RUSAGE_SELF), written_bytes()
    calls = traces * pairs
    system = after.ru_stime - before.ru_stime
    side.cpu_us.append((after.ru_utime - before.ru_utime + system) / calls * 1e6)
    side.system_us.append(system / calls * 1e6)
    side.written.append((written_after - written_before) / calls)


def written_bytes() -> int:
    """Bytes this process has passed to write() so far (/proc/self/io's wchar)."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["wchar"])


if __name__ == "__main__":
    main()
