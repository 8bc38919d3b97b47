"""Benchmark: SQLite trace store ingest with failed and denied spans, against another version of the store.

Feeds 512-span batches of 8-span traces into a fresh store file at 0, 1 and 10 % failed spans (every
other one a policy's denial, with its `mesh.decision` event) and reports spans per CPU second
(`time.process_time`, the best of interleaved rounds: the host is shared). `--other FILE` loads a
second `SqliteTraceStore` from a copy of an older `registry/tracestore.py`, to compare:

    git show COMMIT:registry/tracestore.py > /tmp/old_tracestore.py
    python bench/trace_outcomes.py --other /tmp/old_tracestore.py [--batches 200] [--rounds 9]
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mesh.wire import SpanEventRecord, SpanRecord
from registry.otlp import SpanRow, decode_protobuf, encode_spans
from registry.tracestore import SqliteTraceStore

T0 = 1_700_000_000_000_000_000
DENY = {"mesh.decision.kind": "policy", "mesh.decision.choice": "deny", "mesh.decision.reason": "denied by policy"}


def batches(count: int, failed_share: float) -> list[list[SpanRow]]:
    rng = random.Random(1)
    made: list[list[SpanRow]] = []
    n = 0
    for _ in range(count):
        spans: list[SpanRecord] = []
        for _ in range(512):
            trace, hop = divmod(n, 8)
            n += 1
            failed = rng.random() < failed_share
            spans.append(
                SpanRecord(
                    trace_id=f"{trace + 1:032x}",
                    span_id=f"{trace + 1:08x}{hop + 1:08x}",
                    parent_id=f"{trace + 1:08x}{hop:08x}" if hop else None,
                    name=f"tools/call tool{hop}",
                    kind="server",
                    agent=f"agent{hop}",
                    start_ns=T0 + n * 1000,
                    end_ns=T0 + n * 1000 + 500,
                    status="error" if failed else "ok",
                    status_message="failed" if failed else None,
                    events=[SpanEventRecord(name="mesh.decision", time_ns=T0, attributes=DENY)]
                    if failed and hop % 2
                    else [],
                )
            )
        made.append(decode_protobuf(encode_spans(spans)))
    return made


def ingest_seconds(store_class: Any, data: list[list[SpanRow]]) -> float:
    with tempfile.TemporaryDirectory() as folder:
        store = store_class(Path(folder) / "traces.sqlite3")
        started = time.process_time()
        for rows in data:
            store.ingest(rows)
        spent = time.process_time() - started
        store.close()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description="SQLite trace store ingest with failed and denied spans.")
    parser.add_argument("--other", type=Path, help="a copy of another registry/tracestore.py to compare with")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    stores: dict[str, Any] = {"this": SqliteTraceStore}
    if args.other:
        spec = importlib.util.spec_from_file_location("other_tracestore", args.other)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        stores["other"] = module.SqliteTraceStore
    for share in (0.0, 0.01, 0.1):
        data = batches(args.batches, share)
        best = dict.fromkeys(stores, float("inf"))
        for _ in range(args.rounds):  # interleaved, so that a busy moment of the host weighs on both
            for name, store in stores.items():
                best[name] = min(best[name], ingest_seconds(store, data))
        spans = args.batches * 512
        shown = "  ".join(f"{name} {spans / seconds / 1e3:.0f}k spans/s" for name, seconds in best.items())
        print(f"{share:>4.0%} failed: {shown}")


if __name__ == "__main__":
    main()
