"""Benchmark: the registry's inventory on SQLite and on PostgreSQL, side by side in one run.

With N instances registered (1,000 by default, each with three tools), it times what the registry
does for them: a heartbeat (`renew`, CPU of this process and wall time per call) and the listing
behind `GET /api/agents` (`find` of every live instance). PostgreSQL runs in a throwaway cluster
on this host (`mesh.testing.postgres`), so its figures include loopback round trips. Rounds
alternate between the backends; medians are reported, with PostgreSQL's ratio to SQLite.

    python bench/registry_stores.py [--instances 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mesh.testing.postgres import postgres_cluster
from mesh.wire import Governance, Registration, ToolInfo
from registry.inventory import Inventory
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


def round_of(store: InventoryStore, regs: list[Registration]) -> dict[str, float]:
    now = time.time()
    renew_wall, renew_cpu = timed(len(regs), lambda i: store.renew(regs[i].name, regs[i].instance, now))
    list_wall, list_cpu = timed(20, lambda _: store.find(now))
    return {"renew_wall": renew_wall, "renew_cpu": renew_cpu, "list_wall": list_wall, "list_cpu": list_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    regs = [registration(n) for n in range(args.instances)]
    with tempfile.TemporaryDirectory() as folder, postgres_cluster() as cluster:
        database = PgDatabase(cluster.create_database("bench"), mesh="bench")
        stores: dict[str, InventoryStore] = {
            "sqlite": Inventory(Path(folder) / "registry.sqlite3"),
            "postgresql": PgInventory(database),
        }
        results: dict[str, list[dict[str, float]]] = {name: [] for name in stores}
        for store in stores.values():
            for reg in regs:
                store.upsert(reg, time.time())
        for _ in range(args.rounds):
            for name, store in stores.items():
                results[name].append(round_of(store, regs))
        for store in stores.values():
            store.close()
        database.close()
    print(f"{args.instances} instances, {args.rounds} rounds alternating, medians")
    print(f"{'':12}{'renew wall':>12}{'renew CPU':>12}{'list wall':>12}{'list CPU':>12}")
    medians = {
        name: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]} for name, rounds in results.items()
    }
    for name, m in medians.items():
        print(
            f"{name:12}{m['renew_wall']:10.3f}ms{m['renew_cpu']:10.3f}ms{m['list_wall']:10.2f}ms{m['list_cpu']:10.2f}ms"
        )
    ratio = {key: medians["postgresql"][key] / medians["sqlite"][key] for key in medians["sqlite"]}
    print("pg/sqlite   " + "".join(f"{value:11.2f}x" for value in ratio.values()))


if __name__ == "__main__":
    main()
