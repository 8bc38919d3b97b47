"""Soak: a chain of three agents called at a steady rate, for `MESH_SOAK_SECONDS` (short by default, for CI).

No call fails; each agent's memory (RSS, from /proc/PID/smaps_rollup) at the end is within 5 % of
what it was after the warm-up; and the spans the agents emitted are the spans the registry stored,
agent by agent, one server span per call at every agent. Set `MESH_SOAK_SECONDS=600` for a real soak.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Final

import anyio
import httpx2
import pytest

from mesh.errors import MeshError
from mesh.runtime.node import MeshNode
from mesh.testing import AgentProcess, MeshProcess, RegistryProcess
from tests.chaos.stored_spans import stored_spans
from tests.integration.helpers import until

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]

SECONDS: Final = float(os.environ.get("MESH_SOAK_SECONDS", "20"))
RATE: Final = 10.0
"""Calls per second, each crossing all three agents."""
WARM_UP: Final = 0.25
"""The share of the run after which memory is first read."""
FLAT: Final = 0.05
"""How far (relative) an agent's memory may move between the end of the warm-up and the end of the run."""
RELAY: Final = str(Path(__file__).resolve().parents[1] / "integration" / "fixtures" / "relay.py")
CHAIN: Final = ("soak-a", "soak-b", "soak-c")


async def test_three_agents_at_a_steady_rate_fail_no_call_keep_their_memory_and_store_every_span_they_emit(
    mesh_env: dict[str, str], tmp_path: Path
) -> None:
    db = tmp_path / "registry.sqlite3"
    calls = max(1, int(SECONDS * RATE))
    failed: list[str] = []
    async with RegistryProcess("--db", str(db)) as registry:
        url = registry.base_url
        async with (
            AgentProcess(RELAY, "--name", "soak-c", "--registry", url) as c,
            AgentProcess(RELAY, "--name", "soak-b", "--meta", "next=soak-c", "--registry", url) as b,
            AgentProcess(RELAY, "--name", "soak-a", "--meta", "next=soak-b", "--registry", url) as a,
            MeshNode("soak", registry=url) as node,
        ):
            agents = {"soak-a": a, "soak-b": b, "soak-c": c}
            await node.settle()
            warm: dict[str, int] = {}
            started = time.monotonic()
            for k in range(calls):
                await anyio.sleep(max(0.0, started + k / RATE - time.monotonic()))  # the rate's schedule
                if k == int(calls * WARM_UP):
                    warm = {name: _memory(agent.pid)["Rss"] for name, agent in agents.items()}
                try:
                    answer = await node.call("soak-a", "relay", {"text": str(k)}, timeout=10)
                except MeshError as exc:
                    failed.append(f"call {k}: {type(exc).__name__}: {exc}")
                    continue
                if answer != f"{k}>soak-a>soak-b>soak-c":
                    failed.append(f"call {k} answered {answer!r}")
            took = time.monotonic() - started
            end = {name: _memory(agent.pid) for name, agent in agents.items()}
            emitted = {name: await _drained(agent) for name, agent in agents.items()}
    stored, spans = stored_spans(db.with_name(f"{db.stem}-traces.sqlite3"))
    served = Counter(s.agent for s in spans if s.kind == "server" and s.attributes.get("gen_ai.tool.name") == "relay")

    grew = {name: round(end[name]["Rss"] / warm[name] - 1, 4) for name in CHAIN}
    print(
        f"\nsoak: {calls} calls in {took:.1f} s; RSS kB after warm-up {warm}, at the end "
        f"{ {n: m['Rss'] for n, m in end.items()} } (PSS { {n: m['Pss'] for n, m in end.items()} }), "
        f"change {grew}; emitted {emitted}; stored {dict(stored)}"
    )
    assert failed == [], failed[:10]
    assert {name: abs(change) <= FLAT for name, change in grew.items()} == dict.fromkeys(CHAIN, True), grew
    assert {name: counters["dropped_spans"] for name, counters in emitted.items()} == dict.fromkeys(CHAIN, 0)
    assert {name: counters["exported_spans"] for name, counters in emitted.items()} == {n: stored[n] for n in CHAIN}
    assert served == dict.fromkeys(CHAIN, calls)


def _memory(pid: int) -> dict[str, int]:
    """A process's memory figures in kB (Rss, Pss, ...), from /proc/PID/smaps_rollup."""
    figures: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        figures[key] = int(value.split()[0])
    return figures


async def _drained(agent: MeshProcess) -> dict[str, int]:
    """An agent's span counters once it holds no span unsent: nothing queued, nothing spooled (bounded)."""
    async with httpx2.AsyncClient(base_url=agent.base_url) as http:

        async def counters() -> dict[str, int]:
            return (await http.get("/healthz")).json()["spans"]

        return await until(counters, lambda c: c["queued_spans"] == 0 and c["pending_batches"] == 0, timeout=30)
