"""Benchmark: the registry's inventory on SQLite and on PostgreSQL, side by side in one run.

With N instances registered (1,000 by default, each with three tools), it times what the registry
does for them: a heartbeat (`renew`, CPU of this process and wall time per call) and the body of
`GET /api/agents` (every live instance, as JSON), built two ways side by side: as the store builds
it (`find_json`: each distinct tools or metadata text parsed once, the JSON of a row unchanged
since the last listing reused), once right after every row was renewed ("changed": nothing to
reuse) and then with no row changed ("same"); and by validating every row afresh and dumping the
records (`record_from_row`, as the stores did before; the rows fetched with the same query).
PostgreSQL runs in a throwaway cluster on this host (`mesh.testing.postgres`), so its figures
include loopback round trips. Rounds alternate between the backends; medians are reported, with
PostgreSQL's ratio to SQLite, and the load average of the host.

    python bench/registry_stores.py [--instances 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from mesh.testing.postgres import postgres_cluster
from mesh.wire import AgentRecord, Governance, Registration, ToolInfo
from registry.inventory import Inventory
from registry.inventory_rows import record_from_row
from registry.pg import PgDatabase
from registry.pg_inventory import PgInventory
from registry.stores import InventoryStore


def registration(n: int) -> Registration:
    tools = [ToolInfo(name=f"tool{t}", description="does a thing", input_schema={"type": "object"}) for t in range(3)]
    return Registration(
        name=f"agent{n % 50}",
        instance=f"i{n:05d}",
        url=f"http://127.0.0.1:{9000 + n}/mcp",
        tools=tools,
        metadata=Governance.model_validate({"owner": "team", "jurisdiction": "eu", "data_class": "internal"}),
        lease_seconds=10,
    )


def timed(calls: int, fn: Callable[[int], object]) -> tuple[float, float]:
    """(wall ms, CPU ms) per call of fn(i) for i in range(calls)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(calls):
        fn(i)
    return (time.perf_counter() - wall) * 1000 / calls, (time.process_time() - cpu) * 1000 / calls


Rows = Callable[[float], list[tuple[Any, ...]]]
"""The `agents` rows alive at a time, fetched as the store fetches them."""

_records: TypeAdapter[list[AgentRecord]] = TypeAdapter(list[AgentRecord])
_SELECT = (
    "SELECT name, instance, url, version, {json}, lease_seconds, authenticated, first_seen, last_seen, expires_at"
    " FROM agents WHERE expires_at > {mark} ORDER BY name, instance"
)


def round_of(store: InventoryStore, rows: Rows, regs: list[Registration]) -> dict[str, float]:
    now = time.time()
    renew_wall, renew_cpu = timed(len(regs), lambda i: store.renew(regs[i].name, regs[i].instance, now))
    changed_wall, changed_cpu = timed(1, lambda _: store.find_json(now))  # every row renewed since the last
    same_wall, same_cpu = timed(20, lambda _: store.find_json(now))  # no row changed since the last
    before_wall, before_cpu = timed(20, lambda _: _records.dump_json([record_from_row(row) for row in rows(now)]))
    return {
        "renew_wall": renew_wall,
        "renew_cpu": renew_cpu,
        "changed_wall": changed_wall,
        "changed_cpu": changed_cpu,
        "same_wall": same_wall,
        "same_cpu": same_cpu,
        "before_wall": before_wall,
        "before_cpu": before_cpu,
    }


def sqlite_rows(path: Path, stack: contextlib.ExitStack) -> Rows:
    db = stack.enter_context(contextlib.closing(sqlite3.connect(path)))
    query = _SELECT.format(json="tools, metadata", mark="?")
    return lambda now: db.execute(query, (now,)).fetchall()


def pg_rows(database: PgDatabase) -> Rows:
    query = _SELECT.format(json="tools::text, metadata::text", mark="%s")

    def rows(now: float) -> list[tuple[Any, ...]]:
        with database.connection() as conn:
            return conn.execute(query, (now,)).fetchall()  # pyright: ignore[reportArgumentType, reportCallIssue]

    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    regs = [registration(n) for n in range(args.instances)]
    loads: list[float] = []
    with tempfile.TemporaryDirectory() as folder, postgres_cluster() as cluster, contextlib.ExitStack() as stack:
        database = PgDatabase(cluster.create_database("bench"), mesh="bench")
        stack.callback(database.close)
        path = Path(folder) / "registry.sqlite3"
        stores: dict[str, tuple[InventoryStore, Rows]] = {
            "sqlite": (Inventory(path), sqlite_rows(path, stack)),
            "postgresql": (PgInventory(database), pg_rows(database)),
        }
        for store, _ in stores.values():
            stack.callback(store.close)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in stores}
        for store, _ in stores.values():
            for reg in regs:
                store.upsert(reg, time.time())
        for _ in range(args.rounds):
            for name, (store, rows) in stores.items():
                results[name].append(round_of(store, rows, regs))
            loads.append(os.getloadavg()[0])
    print(f"{args.instances} instances, {args.rounds} rounds alternating, medians; load average {_span(loads)}")
    heads = ("renew", "renew CPU", "changed", "changed CPU", "same", "same CPU", "before", "before CPU")
    print(f"{'':12}" + "".join(f"{head:>13}" for head in heads))
    medians = {
        name: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]} for name, rounds in results.items()
    }
    for name, m in medians.items():
        print(f"{name:12}" + "".join(f"{m[key]:11.3f}ms" for key in m))
    ratio = {key: medians["postgresql"][key] / medians["sqlite"][key] for key in medians["sqlite"]}
    print("pg/sqlite   " + "".join(f"{value:12.2f}x" for value in ratio.values()))
    for name, m in medians.items():
        changed, same = m["changed_cpu"] / m["before_cpu"], m["same_cpu"] / m["before_cpu"]
        print(f"{name}: a listing takes {changed:.2f}x (every row changed) to {same:.2f}x (none) the CPU of before")


def _span(values: list[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f}" if values else "?"


if __name__ == "__main__":
    main()
