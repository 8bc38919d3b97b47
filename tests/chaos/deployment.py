"""The mesh the chaos tests deploy: a registry on host `reg`, two relay agents on each of hosts `a` and `b`.

`front-a` hands each call to `back-b` on the other host, and `front-b` to `back-a`, so every call
crosses the switch. Agents listen and announce on the LAN and register with the registry, which
keeps its inventory and traces in its default SQLite files under the test's MESH_HOME. Each process
lives in a task of its own, so any can be killed and started again (same name, host, registry port
and files) in any order; all are stopped on exit.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, final

import anyio
import anyio.abc

from mesh.config import DEFAULT_REGISTRY_PORT, mesh_paths
from mesh.identity import MeshKeys
from tests.chaos.netns import ROOT, HostProcess, Lan, host_json

__all__ = ["AGENTS", "REGISTRY_HOST", "Deployment", "deployment"]

RELAY: Final = str(ROOT / "tests" / "integration" / "fixtures" / "relay.py")
REGISTRY_HOST: Final = "reg"
AGENTS: Final = {"front-a": ("a", "back-b"), "back-a": ("a", None), "front-b": ("b", "back-a"), "back-b": ("b", None)}
"""Each agent's host and the agent it relays to (None: it answers)."""


@final
@dataclass
class Deployment:
    """The running processes of the chaos mesh, by agent name; `registry` is the current registry process.

    `db` is the registry's database file (the default one of the test's mesh and MESH_HOME).
    """

    net: Lan
    db: Path
    port: int
    tasks: anyio.abc.TaskGroup
    registry: HostProcess | None = None
    agents: dict[str, HostProcess] = field(default_factory=dict[str, HostProcess])

    @property
    def registry_url(self) -> str:
        """The registry's URL as the agents dial it (the same across restarts)."""
        return f"http://{self.net.ip(REGISTRY_HOST)}:{self.port}"

    @property
    def traces_db(self) -> Path:
        """The registry's trace store, a file beside its database."""
        return self.db.with_name(f"{self.db.stem}-traces.sqlite3")

    async def start_registry(self) -> HostProcess:
        """Start the registry on its host (again, after a kill: same port, same files)."""
        args = ["registry", "--lan", "--port", str(self.port)]  # its files: the default, under MESH_HOME
        self.registry = await self._run(HostProcess(self.net, REGISTRY_HOST, args))
        return self.registry

    async def start_agent(self, name: str) -> HostProcess:
        """Start agent `name` on its host (again, after a kill: a new instance of the same agent)."""
        host, following = AGENTS[name]
        args = ["run", RELAY, "--name", name, "--lan", "--registry", self.registry_url]
        if following is not None:
            args += ["--meta", f"next={following}"]
        self.agents[name] = await self._run(HostProcess(self.net, host, args))
        return self.agents[name]

    async def _run(self, process: HostProcess) -> HostProcess:
        """Run `process` in a task of its own until the deployment ends; return it once it is ready."""
        started: HostProcess = await self.tasks.start(_hold, process)
        return started

    async def kill(self, process: HostProcess) -> None:
        """kill -9 `process` and wait until it is gone."""
        await process.stop(signal.SIGKILL)

    async def span_counters(self, name: str) -> dict[str, int]:
        """Agent `name`'s span export counters, from its /healthz inside its host."""
        agent = self.agents[name]
        health = await host_json(self.net, agent.host, agent.base_url + "/healthz")
        return {str(k): int(v) for k, v in health["spans"].items()}

    async def registered(self) -> list[dict[str, object]]:
        """The registry's live registrations, asked from inside its host."""
        token = MeshKeys.load().mint("chaos-test", "registry", ttl=600, role="admin")
        return await host_json(self.net, REGISTRY_HOST, self.registry_url + "/api/agents", token=token)


@asynccontextmanager
async def deployment(net: Lan) -> AsyncGenerator[Deployment]:
    """Start the registry, then the four agents; on exit stop the agents, then the registry."""
    async with anyio.create_task_group() as tasks:
        mesh = Deployment(net, mesh_paths().registry_db, DEFAULT_REGISTRY_PORT, tasks)
        await mesh.start_registry()
        async with anyio.create_task_group() as starting:
            for name in AGENTS:
                starting.start_soon(mesh.start_agent, name)
        try:
            yield mesh
        finally:
            with anyio.CancelScope(shield=True):
                async with anyio.create_task_group() as stopping:
                    for agent in mesh.agents.values():
                        stopping.start_soon(agent.stop)
            tasks.cancel_scope.cancel()


async def _hold(process: HostProcess, *, task_status: anyio.abc.TaskStatus[HostProcess]) -> None:
    async with process:  # entered and left by this one task, whatever the others do meanwhile
        task_status.started(process)
        await anyio.sleep_forever()
