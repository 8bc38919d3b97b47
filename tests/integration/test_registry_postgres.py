"""`mesh registry --db postgresql://...`: a real registry on PostgreSQL, alone or as two replicas of one mesh."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mesh.runtime.node import MeshNode
from mesh.testing import AgentProcess, RegistryProcess
from mesh.testing.postgres import postgres_cluster
from tests.integration.helpers import VAULT, mesh_cli, until
from tests.security.helpers import cli_as, person_token

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ECHO = str(Path(__file__).resolve().parents[2] / "agents" / "echo.py")


async def cli(*args: str, token: str | None = None) -> Any:
    """`mesh ARGS --json` as the local operator (or as `token`'s holder), parsed; the command must succeed."""
    done = await anyio.to_thread.run_sync(lambda: cli_as(token, *args, "--json"))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def approved_withdrawal(node: MeshNode, queued_at: RegistryProcess, decided_at: RegistryProcess) -> Any:
    """Call vault.withdraw through `node`; once the approval is queued (seen through `queued_at`), approve it
    through `decided_at`; return the call's result."""
    outcome: dict[str, Any] = {}

    async def call() -> None:
        outcome["result"] = await node.call("vault", "withdraw", {"account": "acme", "amount": 50}, timeout=60)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        [pending] = await until(
            lambda: cli("approvals", "ls", "--status", "pending", "--registry", queued_at.base_url), bool
        )
        alice = person_token("alice", "approver")
        await cli("approvals", "approve", pending["id"], "--registry", decided_at.base_url, token=alice)
    return outcome["result"]


async def test_a_registry_on_postgresql_lists_agents_and_runs_approvals(mesh_env: dict[str, str], pg_url: str) -> None:
    async with (
        RegistryProcess("--db", pg_url) as registry,
        AgentProcess(ECHO, "--registry", registry.base_url),
        AgentProcess(f"{VAULT}:vault", "--registry", registry.base_url),
        MeshNode("script", registry=registry.base_url) as node,
    ):
        listed = await until(
            lambda: cli("ls", "--registry", registry.base_url),
            lambda peers: {"echo", "vault"} <= {p["name"] for p in peers if "registry" in p["sources"]},
        )
        await node.settle()
        result = await approved_withdrawal(node, registry, registry)
        history = await cli("approvals", "ls", "--registry", registry.base_url)
        async with httpx2.AsyncClient() as http:
            health = (await http.get(registry.base_url + "/healthz")).json()
    assert next(p for p in listed if p["name"] == "echo")["tools"] == ["echo"]
    assert result == {"account": "acme", "withdrawn": 50, "status": "done"}
    assert (history[0]["status"], history[0]["decided_by"]) == ("approved", {"person": "alice", "groups": []})
    assert health["db"] == pg_url  # no password in it to hide
    assert "sqlite" not in json.dumps(health)


async def test_two_replicas_serve_one_mesh_and_a_decision_through_one_releases_a_call_waiting_on_the_other(
    mesh_env: dict[str, str], pg_url: str
) -> None:
    async with (
        RegistryProcess("--db", pg_url) as one,
        RegistryProcess("--db", pg_url) as other,
        AgentProcess(f"{VAULT}:vault", "--registry", one.base_url),
        MeshNode("script", registry=one.base_url) as node,
    ):
        await node.settle()
        listed = await until(
            lambda: cli("ls", "--registry", other.base_url),
            lambda peers: any(p["name"] == "vault" and "registry" in p["sources"] for p in peers),
        )
        result = await approved_withdrawal(node, queued_at=other, decided_at=other)
        seen_from_one = await cli("approvals", "ls", "--registry", one.base_url)
        seen_from_other = await cli("approvals", "ls", "--registry", other.base_url)
        verified = [
            await anyio.to_thread.run_sync(lambda url=url: cli_as(None, "audit", "verify", "--registry", url))
            for url in (one.base_url, other.base_url)
        ]
    assert [(v.returncode, v.stderr) for v in verified] == [(0, ""), (0, "")]
    assert result == {"account": "acme", "withdrawn": 50, "status": "done"}
    assert [p["url"] for p in listed if p["name"] == "vault"]
    assert seen_from_one == seen_from_other
    assert seen_from_one[0]["status"] == "approved"


async def test_a_registry_that_loses_its_database_answers_503_and_recovers_by_itself(mesh_env: dict[str, str]) -> None:
    with postgres_cluster() as cluster:
        url = cluster.create_database("registry")
        async with RegistryProcess("--db", url, "--no-mdns") as registry, httpx2.AsyncClient(timeout=30) as http:
            before = await http.get(registry.base_url + "/api/agents")
            await anyio.to_thread.run_sync(cluster.stop)
            lost = {
                path: await http.get(registry.base_url + path) for path in ("/api/agents", "/api/approvals", "/healthz")
            }
            await anyio.to_thread.run_sync(cluster.start)
            back = await until(lambda: http.get(registry.base_url + "/api/agents"), lambda r: r.status_code == 200)
            alive = registry.returncode is None
    assert (before.status_code, before.json()) == (200, [])
    for path, answer in lost.items():
        assert answer.status_code == 503, path
        assert "PostgreSQL at" in answer.json()["error"], path
        assert answer.headers["retry-after"] == "1"
    assert back.json() == []
    assert alive


@pytest.mark.parametrize("how", ["--db", "MESH_REGISTRY_DB"])
def test_an_unreachable_database_at_start_is_one_line_and_a_non_zero_exit(
    mesh_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    url = "postgresql://127.0.0.1:1/x"
    if how == "MESH_REGISTRY_DB":
        monkeypatch.setenv("MESH_REGISTRY_DB", url)
    done = mesh_cli("registry", "--port", "0", "--no-mdns", *(["--db", url] if how == "--db" else []))
    assert done.returncode != 0
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"mesh: error: cannot reach PostgreSQL at {url}: "), line
