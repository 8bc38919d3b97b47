"""Two registry replicas on one PostgreSQL: kill -9 one under a steady call load and lose nothing."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mesh.runtime.node import MeshNode
from mesh.testing import AgentProcess, RegistryProcess
from tests.integration.helpers import until

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ECHO = str(Path(__file__).resolve().parents[2] / "agents" / "echo.py")
CALLS = 300
"""The load's bound: calls made one after another, a few milliseconds apart."""


async def echo_records(http: httpx2.AsyncClient, registry: RegistryProcess) -> dict[str, dict[str, Any]]:
    """The live echo instances `registry` lists, by instance id."""
    answer = await http.get(registry.base_url + "/api/agents")
    answer.raise_for_status()
    return {r["instance"]: r for r in answer.json() if r["name"] == "echo"}


async def stored_echo_traces(http: httpx2.AsyncClient, registry: RegistryProcess) -> int:
    answer = await http.get(registry.base_url + "/api/traces", params={"agent": "echo", "limit": 1000})
    answer.raise_for_status()
    return len(answer.json())


async def test_killing_one_replica_under_load_fails_no_call_drops_no_lease_and_loses_no_span(
    mesh_env: dict[str, str], pg_url: str
) -> None:
    async with (
        RegistryProcess("--db", pg_url, "--no-mdns") as one,
        RegistryProcess("--db", pg_url, "--no-mdns") as other,
    ):
        both, reversed_ = f"{one.base_url},{other.base_url}", f"{other.base_url},{one.base_url}"
        async with (
            AgentProcess(ECHO, "--registry", both, "--no-mdns"),  # registers through `one` first
            AgentProcess(ECHO, "--registry", reversed_, "--no-mdns"),  # through `other`
            MeshNode("script", registry=reversed_, mdns=False) as node,
            httpx2.AsyncClient(timeout=10) as http,
        ):
            instances = await until(lambda: echo_records(http, other), lambda found: len(found) == 2)
            await node.settle()
            failures: list[str] = []
            answers: list[str] = []
            seen_after_kill: list[set[str]] = []
            killed = anyio.Event()
            killed_at: list[float] = []

            async def load() -> None:
                for i in range(CALLS):
                    try:
                        answers.append(await node.call("echo", "echo", {"text": f"call {i}"}, timeout=10))
                    except Exception as exc:  # every failure is recorded, none may happen
                        failures.append(f"call {i}: {type(exc).__name__}: {exc}")
                    if i == CALLS // 3:
                        one.signal(signal.SIGKILL)
                        killed_at.append(time.time())
                        killed.set()
                    await anyio.sleep(0.005)

            async def watch_leases() -> None:
                await killed.wait()
                while True:  # until every instance renewed its lease through the survivor
                    seen = await echo_records(http, other)
                    seen_after_kill.append(set(seen))
                    if len(seen) == 2 and all(r["last_seen"] > killed_at[0] + 0.5 for r in seen.values()):
                        return
                    await anyio.sleep(0.1)

            with anyio.fail_after(120):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(load)
                    tg.start_soon(watch_leases)
            stored = await until(lambda: stored_echo_traces(http, other), lambda n: n >= CALLS, timeout=60)
    assert failures == []
    assert answers == [f"call {i}" for i in range(CALLS)]
    assert seen_after_kill, "the survivor was never read after the kill"
    assert all(seen == set(instances) for seen in seen_after_kill), "a lease lapsed during the move"
    assert stored == CALLS  # one trace per call, none duplicated by redelivery
