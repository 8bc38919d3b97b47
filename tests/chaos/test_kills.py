"""kill -9 under load, at seeded random moments: agents, the registry, the registry's ingest workers.

The registry runs on host `reg` (SQLite files under the test's directory), two relays on each of
hosts `a` and `b` (`tests.chaos.deployment`); on each agent host a caller calls its `front` relay
through the mesh, which calls the `back` relay of the other host. A killed agent or registry is
started again at once (same name, host, port and files); a killed ingest worker is replaced by the
registry. Every call ends, ok or with a typed error, within its deadline; every span an agent's
exporter got a 2xx for is stored; after each restart of the registry, every live agent is listed
again, renewed through the new registry, within a lease. `MESH_CHAOS_SEED` picks other moments.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from functools import partial
from pathlib import Path

import pytest

from mesh.runtime.process import LEASE_SECONDS
from tests.chaos.deployment import AGENTS, REGISTRY_HOST, Deployment, deployment
from tests.chaos.load import Load, odd, summary
from tests.chaos.netns import lan
from tests.chaos.stored_spans import stored_spans
from tests.integration.helpers import child_pids, until

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]

SEED = int(os.environ.get("MESH_CHAOS_SEED", "25"))
KILLS = 6
"""Kills in a run: at least one of each kind, the rest drawn at random."""
DEADLINE = 4.0
GRACE = 10.0
"""How long past its deadline a call may take to end before it counts as a hang (a generous bound)."""
RELISTED_WITHIN = 2 * LEASE_SECONDS
"""The bound on every live agent being listed again after a registry restart: a lease, and the asking
from another namespace on a busy machine."""
_LOAD_ARGS = ["--deadline", str(DEADLINE), "--grace", str(GRACE), "--concurrency", "2", "--max-seconds", "240"]


async def test_kill_9_of_agents_registry_and_ingest_workers_loses_no_acknowledged_span_nor_registration(
    mesh_env: dict[str, str],
) -> None:
    rng = random.Random(SEED)
    kinds = ["agent", "registry", "worker", *rng.choices(["agent", "registry", "worker"], k=KILLS - 3)]
    rng.shuffle(kinds)
    acked: dict[tuple[str, str], int] = {}
    final: dict[tuple[str, str], dict[str, int]] = {}
    relisted: list[float | None] = []
    done: list[str] = []
    with lan(REGISTRY_HOST, "a", "b") as net:
        async with deployment(net) as mesh:
            loads = [
                Load(net, host, ["--agent", f"front-{host}", "--registry", mesh.registry_url, *_LOAD_ARGS])
                for host in ("a", "b")
            ]
            async with loads[0], loads[1]:
                for load in loads:
                    await load.wait_for(lambda it: it.count("ok") >= 3)
                for kind in kinds:
                    mark, step = len(loads[0].outcomes), rng.randint(4, 16)
                    await loads[0].wait_for(lambda it, mark=mark, step=step: len(it.outcomes) >= mark + step)
                    await _read_acked(mesh, acked)
                    done.append(await _kill(mesh, kind, rng, relisted))
                marks = [len(load.outcomes) for load in loads]
                for load, mark in zip(loads, marks, strict=True):
                    await load.wait_for(lambda it, mark=mark: it.count("ok", since=mark) >= 5)
                outcomes = {load.host: await load.finish() for load in loads}
            for name in AGENTS:
                final[(name, mesh.agents[name].instance)] = await _drained(mesh, name)
            await _read_acked(mesh, acked)
            listed_at_end = await _relisted(mesh, since=0.0)
        stored, _ = stored_spans(mesh.traces_db)

    print(
        f"\nseed {SEED}: {done}; relisted after {relisted} s; "
        f"stored {dict(stored)}; acknowledged {dict(_per_agent(acked))}"
    )
    print("; ".join(summary(host, seen) for host, seen in outcomes.items()))
    for load in loads:
        seen = outcomes[load.host]
        assert load.issued == len(seen), f"calls from {load.host} never ended: {load.issued} made, {len(seen)} ended"
        assert not odd(seen), summary(load.host, seen)
    assert all(after is not None for after in relisted), f"not every live agent was listed again: {relisted}"
    assert listed_at_end is not None
    lost = {name: n - stored[name] for name, n in _per_agent(acked).items() if n > stored[name]}
    assert not lost, f"acknowledged spans not stored, per agent: {lost} (seed {SEED}: {done})"
    assert not {key: c for key, c in final.items() if c["dropped_spans"]}, final


async def _kill(mesh: Deployment, kind: str, rng: random.Random, relisted: list[float | None]) -> str:
    """kill -9 one process of `kind` and have it replaced; what was killed."""
    registry = mesh.registry
    assert registry is not None
    if kind == "agent":
        name = rng.choice(sorted(AGENTS))
        await mesh.kill(mesh.agents[name])
        await mesh.start_agent(name)
        return f"agent {name}"
    if kind == "registry":
        await mesh.kill(registry)
        restarted = time.time()
        await mesh.start_registry()
        relisted.append(await _relisted(mesh, since=restarted))
        return "registry"
    workers = sorted(_ingest_workers(registry.pid))
    assert workers, f"the registry (pid {registry.pid}) runs no ingest worker to kill"
    victim = rng.choice(workers)
    os.kill(victim, signal.SIGKILL)
    return f"ingest worker {victim}"


async def _relisted(mesh: Deployment, *, since: float) -> float | None:
    """Seconds until the registry lists every live agent instance as renewed after `since`; None if not in time."""
    began = time.monotonic()
    live = {(name, agent.instance) for name, agent in mesh.agents.items()}

    def renewed(records: list[dict[str, object]]) -> bool:
        return live <= {(str(r["name"]), str(r["instance"])) for r in records if float(str(r["last_seen"])) >= since}

    try:
        await until(mesh.registered, renewed, timeout=RELISTED_WITHIN)
    except TimeoutError:
        return None
    return round(time.monotonic() - began, 2)


async def _read_acked(mesh: Deployment, acked: dict[tuple[str, str], int]) -> None:
    """Note each live instance's count of spans its tracer acknowledged (counts only grow)."""
    for name, agent in mesh.agents.items():
        counters = await mesh.span_counters(name)
        acked[(name, agent.instance)] = max(acked.get((name, agent.instance), 0), counters["exported_spans"])


async def _drained(mesh: Deployment, name: str) -> dict[str, int]:
    """Agent `name`'s counters once it holds no span unsent: nothing queued, nothing spooled (bounded)."""
    return await until(partial(mesh.span_counters, name), _holds_nothing, timeout=60)


def _holds_nothing(counters: dict[str, int]) -> bool:
    return counters["queued_spans"] == 0 and counters["pending_batches"] == 0


def _ingest_workers(registry: int) -> set[int]:
    workers: set[int] = set()
    for pid in child_pids(registry):
        try:
            if b"registry.ingest_worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.add(pid)
        except OSError:  # exited meanwhile
            continue
    return workers


def _per_agent(acked: dict[tuple[str, str], int]) -> Counter[str]:
    total: Counter[str] = Counter()
    for (name, _), n in acked.items():
        total[name] += n
    return total
