"""Benchmark: a `mesh registry` process under 1,000 heartbeating instances, on SQLite and PostgreSQL.

For each backend, a registry process of this source tree (and, with `--baseline DIR`, one of another
tree, e.g. `git archive HEAD | tar -x -C DIR`, side by side in the same run, rounds alternating)
gets N registrations (three tools each, as in `bench/registry_stores.py`); then, for `--seconds`,
every instance renews its lease every `lease / 3` seconds, spread evenly (300 a second for 1,000
instances at a 10 s lease), sent from `--senders` processes of their own, while this process times
`GET /api/agents` (every live instance) every `--every` seconds. Per run: the listing's wall time
before the heartbeats start ("idle", median of 10) and under them (median, p90), the heartbeats'
(median, p99), how many were sent and why any failed, and the registry's CPU over the window
(utime + stime, % of one core), with the load average beside it. PostgreSQL runs in a throwaway
cluster on this host (`mesh.testing.postgres`).

    python bench/registry_scale.py [--instances 1000] [--seconds 20] [--rounds 3] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import anyio
import httpx2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.proc_cpu import cpu_seconds  # noqa: E402
from bench.registry_stores import registration  # noqa: E402
from mesh.identity import MeshKeys  # noqa: E402
from mesh.testing.postgres import PostgresCluster, postgres_cluster  # noqa: E402
from mesh.testing.processes import RegistryProcess  # noqa: E402

LEASE = 10.0
IN_FLIGHT = 64
"""Heartbeats outstanding at most per sender; a beat due while that many wait is counted as skipped."""


@dataclass
class Run:
    """What one registry process did in one window."""

    idle_ms: list[float] = field(default_factory=list[float])
    """Listings before the heartbeats start."""
    listing_ms: list[float] = field(default_factory=list[float])
    beat_ms: list[float] = field(default_factory=list[float])
    skipped: int = 0
    failed: list[str] = field(default_factory=list[str])
    """Why heartbeats failed: a status code or an exception's name, each."""
    cpu_percent: float = 0.0
    load: float = 0.0


@dataclass(frozen=True)
class Schedule:
    """When a window's heartbeats start, when they count, and when they stop (`time.monotonic()`, every process)."""

    start: float
    measuring_from: float
    until: float


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def measure(tree: Path, db: str | None, args: argparse.Namespace) -> Run:
    """One registry process of `tree`, loaded for `args.seconds` after a warm-up; its figures."""
    mesh = f"scale-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as home:
        env = {"MESH_HOME": home, "MESH_NAME": mesh, "PYTHONPATH": str(tree)}
        os.environ["MESH_HOME"] = home  # MeshKeys.load below reads the secret the registry made
        registry_args = ["--no-mdns", *(["--db", db] if db else [])]
        async with RegistryProcess(*registry_args, env=env, ready_timeout=60) as registry:
            keys = MeshKeys.load(mesh)
            regs = [registration(n) for n in range(args.instances)]
            tokens = {reg.name: keys.mint(reg.name, "registry", ttl=3600) for reg in regs}
            async with httpx2.AsyncClient(base_url=registry.base_url, timeout=30) as http:
                with anyio.fail_after(120):
                    async with anyio.create_task_group() as tg:
                        limiter = anyio.CapacityLimiter(16)
                        for reg in regs:
                            tg.start_soon(_register, http, limiter, reg.model_dump_json(), tokens[reg.name])
                beats = [
                    [(r.name, r.instance, tokens[r.name]) for r in regs[k :: args.senders]] for k in range(args.senders)
                ]
                return await _window(http, registry.pid, beats, args)


async def _register(http: httpx2.AsyncClient, limiter: anyio.CapacityLimiter, body: str, token: str) -> None:
    async with limiter:
        response = await http.post("/api/agents", content=body, headers={"authorization": f"Bearer {token}"})
        response.raise_for_status()


async def _window(http: httpx2.AsyncClient, pid: int, beats: list[list[Beat]], args: argparse.Namespace) -> Run:
    """Heartbeats from `args.senders` processes of their own; listings timed, and the CPU read, from this one."""
    context = multiprocessing.get_context("spawn")
    pipes = [context.Pipe() for _ in beats]
    senders = [
        context.Process(target=_sender, args=(str(http.base_url), share, theirs), daemon=True)
        for share, (_, theirs) in zip(beats, pipes, strict=True)
    ]
    for sender in senders:
        sender.start()
    run = Run()
    for n in range(11):  # the first one warms the connection (and any cache) up
        sent = time.perf_counter()
        (await http.get("/api/agents")).raise_for_status()
        if n:
            run.idle_ms.append((time.perf_counter() - sent) * 1000)
    try:
        for ours, _ in pipes:  # each has imported what it needs and holds its client
            with anyio.fail_after(60):
                await anyio.to_thread.run_sync(ours.recv)
        warm_up = 3.0
        start = time.monotonic() + 0.2
        schedule = Schedule(start, start + warm_up, start + warm_up + args.seconds)
        for ours, _ in pipes:
            ours.send(schedule)
        await anyio.sleep(max(0.0, schedule.measuring_from - time.monotonic()))
        cpu_before, cpu_from = cpu_seconds(pid, children=True), time.monotonic()
        while time.monotonic() < schedule.until:
            sent = time.perf_counter()
            response = await http.get("/api/agents")
            response.raise_for_status()
            run.listing_ms.append((time.perf_counter() - sent) * 1000)
            await anyio.sleep(max(0.0, args.every - (time.perf_counter() - sent)))
        run.cpu_percent = (cpu_seconds(pid, children=True) - cpu_before) / (time.monotonic() - cpu_from) * 100
        run.load = os.getloadavg()[0]
        for reader, _ in pipes:
            with anyio.fail_after(60):
                beat_ms, skipped, failed = await anyio.to_thread.run_sync(reader.recv)
            run.beat_ms += beat_ms
            run.skipped += skipped
            run.failed += failed
    finally:
        for sender in senders:
            sender.join(10)
            if sender.is_alive():
                sender.kill()
    return run


Beat = tuple[str, str, str]
"""One instance's heartbeat: its name, its instance, its token."""


def _sender(base_url: str, beats: list[Beat], parent: Connection) -> None:
    """A process that renews `beats`' leases every LEASE / 3 seconds, spread evenly, on the schedule it is sent.

    It says when it is ready ("ready"), then takes the `Schedule`, and answers (ms, skipped, failed).
    """
    parent.send(anyio.run(_send_beats, base_url, beats, parent))


async def _send_beats(base_url: str, beats: list[Beat], parent: Connection) -> tuple[list[float], int, list[str]]:
    beat_ms: list[float] = []
    failed: list[str] = []
    skipped = in_flight = 0
    limits = httpx2.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    async with httpx2.AsyncClient(base_url=base_url, timeout=30, limits=limits) as http:
        parent.send("ready")
        schedule: Schedule = await anyio.to_thread.run_sync(parent.recv)

        async def beat(name: str, instance: str, token: str) -> None:
            nonlocal in_flight
            sent = time.monotonic()
            try:
                response = await http.put(
                    f"/api/agents/{name}/{instance}/lease", headers={"authorization": f"Bearer {token}"}
                )
                if response.status_code != 200:
                    failed.append(f"{response.status_code} {response.text[:200]}")
            except httpx2.HTTPError as exc:
                failed.append(type(exc).__name__)
            finally:
                in_flight -= 1
            if sent >= schedule.measuring_from:
                beat_ms.append((time.monotonic() - sent) * 1000)

        gap = LEASE / 3 / len(beats)
        async with anyio.create_task_group() as tg:
            k = 0
            while (due := schedule.start + k * gap) < schedule.until:
                await anyio.sleep(max(0.0, due - time.monotonic()))
                if in_flight >= IN_FLIGHT:
                    skipped += due >= schedule.measuring_from
                else:
                    in_flight += 1
                    tg.start_soon(beat, *beats[k % len(beats)])
                k += 1
    return beat_ms, skipped, failed


@contextmanager
def databases(backends: list[str]) -> Generator[dict[str, PostgresCluster | None]]:
    """A PostgreSQL cluster when asked for (None for SQLite)."""
    if "postgresql" not in backends:
        yield {"sqlite": None}
        return
    with postgres_cluster() as cluster:
        yield {name: (cluster if name == "postgresql" else None) for name in backends}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--every", type=float, default=0.5, help="seconds between two timed listings")
    parser.add_argument("--senders", type=int, default=2, help="processes sending the heartbeats")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--baseline", type=Path, help="another source tree to run beside this one")
    args = parser.parse_args()
    trees = {"this": ROOT, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    backends = args.backends.split(",")
    work = Path(tempfile.mkdtemp(prefix="registry-scale-"))
    os.chdir(work)  # the children import `mesh` and `registry` from PYTHONPATH, not from a checkout here
    results: dict[tuple[str, str], list[Run]] = {(b, t): [] for b in backends for t in trees}
    with databases(backends) as clusters:
        for round_ in range(args.rounds):
            for backend in backends:
                for tree_name, tree in trees.items():
                    cluster = clusters.get(backend)
                    db = cluster.create_database(f"scale_{round_}_{tree_name}") if cluster else None
                    run = await measure(tree, db, args)
                    results[(backend, tree_name)].append(run)
                    print(f"  round {round_ + 1} {backend:10} {tree_name:8} {_row(run)}", flush=True)
    print(
        f"\n{args.instances} instances, lease {LEASE:g} s, {args.seconds:g} s windows, medians of {args.rounds} rounds"
    )
    print(
        f"{'':22}{'idle list':>10}{'list p50':>10}{'list p90':>10}{'beat p50':>10}{'beat p99':>10}"
        f"{'beats/s':>9}{'CPU %':>8}{'load':>6}"
    )
    for (backend, tree_name), runs in results.items():
        print(f"{backend + ' ' + tree_name:22}{_medians(runs, args.seconds)}")


def _why(failed: list[str]) -> str:
    return (": " + "; ".join(sorted(set(failed))[:3])) if failed else ""


def _row(run: Run) -> str:
    return (
        f"idle list p50 {statistics.median(run.idle_ms):5.1f} ms, "
        f"list p50 {statistics.median(run.listing_ms):6.1f} ms p90 {percentile(run.listing_ms, 0.9):6.1f} ms, "
        f"beat p50 {statistics.median(run.beat_ms):5.2f} ms p99 {percentile(run.beat_ms, 0.99):6.1f} ms, "
        f"{len(run.beat_ms)} beats ({run.skipped} skipped, {len(run.failed)} failed{_why(run.failed)}), "
        f"CPU {run.cpu_percent:4.1f} %, load {run.load:.1f}"
    )


def _medians(runs: list[Run], seconds: float) -> str:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    return (
        f"{med([statistics.median(r.idle_ms) for r in runs]):8.1f}ms"
        f"{med([statistics.median(r.listing_ms) for r in runs]):8.1f}ms"
        f"{med([percentile(r.listing_ms, 0.9) for r in runs]):8.1f}ms"
        f"{med([statistics.median(r.beat_ms) for r in runs]):8.2f}ms"
        f"{med([percentile(r.beat_ms, 0.99) for r in runs]):8.1f}ms"
        f"{med([len(r.beat_ms) / seconds for r in runs]):9.0f}"
        f"{med([r.cpu_percent for r in runs]):8.1f}"
        f"{med([r.load for r in runs]):6.1f}"
    )


if __name__ == "__main__":
    anyio.run(main)
