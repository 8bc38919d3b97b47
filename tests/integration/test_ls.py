"""`mesh ls` with a registry answering: its listing is the picture, each instance asked whether it answers."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mesh.testing import AgentProcess, RegistryProcess
from tests.integration.helpers import mesh_cli

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ECHO = str(Path(__file__).resolve().parents[2] / "agents" / "echo.py")


async def _registered(registry: RegistryProcess, count: int) -> None:
    async with httpx2.AsyncClient(base_url=registry.base_url) as http:
        with anyio.fail_after(10):  # registration follows readiness by a few milliseconds
            while len((await http.get("/api/agents")).json()) < count:
                await anyio.sleep(0.05)


async def _ls(*args: str) -> list[dict[str, Any]]:
    result = await anyio.to_thread.run_sync(lambda: mesh_cli("ls", "--json", *args))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def test_with_a_registry_ls_lists_what_it_lists_with_health_and_span_counters(
    mesh_env: dict[str, str],
) -> None:
    async with RegistryProcess() as registry, AgentProcess(ECHO, "--registry", registry.base_url) as echo:
        await _registered(registry, 1)
        [row] = await _ls("--registry", registry.base_url)
    assert (row["name"], row["url"], row["tools"]) == ("echo", echo.url, ["echo"])
    assert row["sources"] == ["registry"]  # no mDNS wait when a registry answers
    assert row["healthy"] is True
    assert row["spans"] is not None
    assert row["spans"]["dropped_spans"] == 0


async def test_an_agent_that_stops_answering_is_not_healthy_while_its_lease_still_holds(
    mesh_env: dict[str, str],
) -> None:
    async with (
        RegistryProcess() as registry,
        AgentProcess(ECHO, "--registry", registry.base_url),
        AgentProcess(ECHO, "--registry", registry.base_url, "--name", "frozen") as frozen,
    ):
        await _registered(registry, 2)
        frozen.signal(signal.SIGSTOP)  # its lease lasts seconds more; its /healthz does not answer
        try:
            rows = await _ls("--registry", registry.base_url)
        finally:
            frozen.signal(signal.SIGCONT)
    health = {row["name"]: (row["healthy"], row["reason"]) for row in rows}
    assert health == {"echo": (True, None), "frozen": (False, "not answering")}
