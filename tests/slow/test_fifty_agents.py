"""Fifty agents under one `mesh up`: a ten-link chain and forty echo agents, forked from the launcher.

The whole chain answers one call and its trace arrives complete in the registry; an echo agent
answers; Ctrl-C stops all of it and leaves no process behind (the launcher included).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.integration.helpers import sdk_client, until
from tests.integration.test_up import mesh_up

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]

CHAIN = Path(__file__).resolve().parents[2] / "bench" / "fixtures" / "chain.py"
LINKS = 10
ECHOES = 40


def _mesh_file(directory: Path) -> str:
    entries = ["[registry]\nport = 0\n"]
    for k in range(1, LINKS + 1):
        meta = f'meta = {{ next = "chain-{k + 1}" }}\n' if k < LINKS else ""
        entries.append(f'[[agents]]\ntarget = "{CHAIN}"\nname = "chain-{k}"\n{meta}')
    entries += [f'[[agents]]\ntarget = "echo"\nname = "echo-{k}"\n' for k in range(1, ECHOES + 1)]
    (directory / "mesh.toml").write_text("\n".join(entries))
    return str(directory)


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _alive(pids: set[int]) -> set[int]:
    alive: set[int] = set()
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.add(pid)
    return alive


async def test_fifty_agents_answer_a_ten_hop_chain_and_stop_on_ctrl_c(mesh_env: dict[str, str], tmp_path: Path) -> None:
    async with mesh_up(_mesh_file(tmp_path), "--registry-port", "0") as up:
        ready = await up.wait_for("mesh up: ready:", timeout=300)
        registry = up.url("registry")
        first, echo = up.url("chain-1"), up.url("echo-17")
        assert registry is not None
        assert first is not None
        assert echo is not None
        launchers = {_parent(pid) for label, pid in up.pids.items() if label != "registry"}
        async with sdk_client(first) as client:
            chained = await client.call_tool("hop", {"hops": LINKS - 1}, read_timeout_seconds=60)
        async with sdk_client(echo) as client:
            echoed = await client.call_tool("echo", {"text": "seventeen"})

        async def traces() -> list[dict[str, Any]]:
            async with httpx2.AsyncClient(base_url=registry) as http:
                return (await http.get("/api/traces", params={"agent": "chain-1"})).json()

        [summary] = await until(traces, lambda found: len(found) == 1 and found[0]["span_count"] == 2 * LINKS - 1, 60)
        async with httpx2.AsyncClient(base_url=registry) as http:
            tree = (await http.get(f"/api/traces/{summary['trace_id']}")).json()
        code = await up.interrupt(timeout=120)

    assert ready.startswith(f"mesh up: ready: {LINKS + ECHOES} of {LINKS + ECHOES} agents")
    assert len(launchers) == 1  # every agent a fork of the one launcher
    assert chained.structured_content == {"result": [f"chain-{k}" for k in range(1, LINKS + 1)]}
    assert echoed.structured_content == {"result": "seventeen"}
    assert tree["complete"] is True
    assert sorted(summary["agents"]) == sorted(f"chain-{k}" for k in range(1, LINKS + 1))
    assert code == 0
    assert _alive({*up.all_pids, *launchers}) == set()
