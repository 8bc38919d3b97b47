"""What the security tests share: the ledger mesh, people's tokens, and the CLI run as someone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2

from mesh.identity import MeshKeys, Role
from mesh.testing import AgentProcess, RegistryProcess
from mesh.wire import ApprovalRequest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LEDGER = str(FIXTURES / "ledger.py")
POLICY = str(FIXTURES / "governance.cedar")


def person_token(person: str, role: Role = "client", *groups: str) -> str:
    """A token of this test's mesh for `person`, as `mesh token --person` mints it."""
    return MeshKeys.load().mint(person, role=role, person=person, groups=groups, ttl=600)


def cli_as(token: str | None, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run `mesh ARGS` with MESH_TOKEN set to `token` (None: as the local operator)."""
    env = {k: v for k, v in os.environ.items() if k != "MESH_TOKEN"}
    if token is not None:
        env["MESH_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "mesh", *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


@dataclass(frozen=True)
class LedgerMesh:
    """A registry and the ledger agents, all under the governance policy."""

    registry: RegistryProcess
    ledger_file: Path

    def runs(self) -> list[str]:
        """What the ledger did, one line a run of a tool with side effects."""
        return self.ledger_file.read_text().splitlines() if self.ledger_file.exists() else []

    async def pending(self, timeout: float = 15.0) -> dict[str, Any]:
        """The one pending approval, once it is filed."""
        with anyio.fail_after(timeout):
            while True:
                rows = await anyio.to_thread.run_sync(lambda: self.approvals("--status", "pending"))
                if rows:
                    return rows[0]
                await anyio.sleep(0.2)

    def approvals(self, *args: str) -> list[dict[str, Any]]:
        """`mesh approvals ls --json ARGS` against this mesh's registry."""
        result = cli_as(None, "approvals", "ls", "--json", "--registry", self.registry.base_url, *args)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


@asynccontextmanager
async def ledger_mesh(tmp_path: Path, *agents: str) -> AsyncGenerator[LedgerMesh]:
    """A registry plus `ledger:NAME` agents (default: ledger), each run with the governance policy."""
    ledger_file = tmp_path / "ledger.log"
    env = {"LEDGER_FILE": str(ledger_file)}
    async with RegistryProcess() as registry:
        processes = [
            AgentProcess(f"{LEDGER}:{name}", "--registry", registry.base_url, "--policy", POLICY, env=env)
            for name in agents or ("ledger",)
        ]
        async with _all(processes):
            yield LedgerMesh(registry, ledger_file)


@asynccontextmanager
async def _all(processes: list[AgentProcess]) -> AsyncGenerator[None]:
    if not processes:
        yield
        return
    async with processes[0], _all(processes[1:]):
        yield


@asynccontextmanager
async def pending_approval(base: str) -> AsyncGenerator[dict[str, Any]]:
    """An approval `vault` filed (finance decides, on behalf of bob), kept pending by its long-poll until exit."""
    request = ApprovalRequest(
        agent="vault",
        tool="withdraw",
        caller="teller",
        arguments_digest="0" * 64,
        expires_at=time.time() + 120,
        requested_by="bob",
        approvers=["finance"],
    )
    agent = {"Authorization": f"Bearer {MeshKeys.load().mint('vault', 'registry', role='agent')}"}
    async with httpx2.AsyncClient(base_url=base, headers=agent, timeout=10) as http:
        response = await http.post("/api/approvals", content=request.model_dump_json())
        assert response.status_code == 201, response.text
        filed: dict[str, Any] = response.json()

        async def wait_on_it() -> None:  # as the filing agent does: unwatched, it is cancelled
            while (await http.get(f"/api/approvals/{filed['id']}", params={"wait": 5})).json()["status"] == "pending":
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_on_it)
            yield filed
            tg.cancel_scope.cancel()
