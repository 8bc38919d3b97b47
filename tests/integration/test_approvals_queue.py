"""Headless approvals: a call that needs a person waits in the registry's queue until one decides."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from mesh.errors import ApprovalDenied
from mesh.runtime.node import MeshNode
from mesh.testing import AgentProcess, RegistryProcess
from tests.integration.helpers import mesh_cli
from tests.security.helpers import cli_as, person_token

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def alice() -> str:
    """alice's approver token, minted in this test's mesh."""
    return person_token("alice", "approver")


VAULT = str(Path(__file__).resolve().parent / "fixtures" / "vault.py")


async def _pending(registry: RegistryProcess) -> list[dict[str, Any]]:
    """Wait (bounded) for one pending approval and return the listing."""
    with anyio.fail_after(15):
        while True:
            result = await anyio.to_thread.run_sync(
                lambda: mesh_cli("approvals", "ls", "--status", "pending", "--json", "--registry", registry.base_url)
            )
            assert result.returncode == 0, result.stderr
            rows: list[dict[str, Any]] = json.loads(result.stdout)
            if rows:
                return rows
            await anyio.sleep(0.2)


async def _decide(registry: RegistryProcess, verb: str, approval_id: str) -> None:
    result = await anyio.to_thread.run_sync(
        lambda: cli_as(alice(), "approvals", verb, approval_id, "--registry", registry.base_url)
    )
    assert result.returncode == 0, result.stderr


async def test_an_approved_call_runs_and_the_audit_record_names_who(mesh_env: dict[str, str]) -> None:
    async with (
        RegistryProcess() as registry,
        AgentProcess(f"{VAULT}:vault", "--registry", registry.base_url),
        MeshNode("script", registry=registry.base_url) as node,
    ):
        await node.settle()
        outcome: dict[str, Any] = {}
        pending: dict[str, Any] = {}

        async def call() -> None:
            outcome["result"] = await node.call("vault", "withdraw", {"account": "acme", "amount": 50}, timeout=30)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            [first] = await _pending(registry)
            pending.update(first)
            await _decide(registry, "approve", pending["id"])
        history = json.loads(mesh_cli("approvals", "ls", "--json", "--registry", registry.base_url).stdout)
    assert outcome["result"] == {"account": "acme", "withdrawn": 50, "status": "done"}
    assert pending["agent"] == "vault"
    assert pending["tool"] == "withdraw"
    assert pending["caller"] == "script"
    assert len(pending["arguments_digest"]) == 64
    assert history[0]["status"] == "approved"
    assert history[0]["decided_by"] == {"person": "alice", "groups": []}


async def test_a_denied_call_is_refused_cleanly(mesh_env: dict[str, str]) -> None:
    async with (
        RegistryProcess() as registry,
        AgentProcess(f"{VAULT}:vault", "--registry", registry.base_url),
        MeshNode("script", registry=registry.base_url) as node,
    ):
        await node.settle()
        errors: list[BaseException] = []

        async def call() -> None:
            try:
                await node.call("vault", "withdraw", {"account": "acme", "amount": 5000}, timeout=30)
            except ApprovalDenied as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            [pending] = await _pending(registry)
            await _decide(registry, "deny", pending["id"])
    [error] = errors
    assert "denied" in str(error)


async def test_an_unanswered_call_is_refused_at_expiry(mesh_env: dict[str, str]) -> None:
    async with (
        RegistryProcess() as registry,
        AgentProcess(f"{VAULT}:vault", "--registry", registry.base_url, env={"MESH_APPROVAL_TTL": "1.5"}),
        MeshNode("script", registry=registry.base_url) as node,
    ):
        await node.settle()
        with pytest.raises(ApprovalDenied, match="expired"):
            await node.call("vault", "withdraw", {"account": "acme", "amount": 1}, timeout=30)
        rows = json.loads(mesh_cli("approvals", "ls", "--json", "--registry", registry.base_url).stdout)
    assert rows[0]["status"] == "expired"


async def test_tools_without_approval_run_at_once(mesh_env: dict[str, str]) -> None:
    async with (
        RegistryProcess() as registry,
        AgentProcess(f"{VAULT}:vault", "--registry", registry.base_url),
        MeshNode("script", registry=registry.base_url) as node,
    ):
        await node.settle()
        assert await node.call("vault", "balance", {"account": "acme"}) == 1004


async def test_a_cedar_approval_verdict_pauses_a_call_like_the_tool_flag(mesh_env: dict[str, str]) -> None:
    policy = str(Path(VAULT).parent / "approval.cedar")
    async with (
        RegistryProcess() as registry,
        AgentProcess(f"{VAULT}:vault", "--registry", registry.base_url, "--policy", policy),
        MeshNode("script", registry=registry.base_url) as node,
    ):
        await node.settle()
        outcome: dict[str, Any] = {}
        filed: list[dict[str, Any]] = []

        async def call() -> None:
            outcome["balance"] = await node.call("vault", "balance", {"account": "acme"}, timeout=30)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            filed.extend(await _pending(registry))
            await _decide(registry, "approve", filed[0]["id"])
    assert outcome["balance"] == 1004
    assert [a["tool"] for a in filed] == ["balance"]
