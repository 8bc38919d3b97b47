"""Approvers see what they approve: a queued call's arguments, secret fields masked, and only for approvers."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mesh.errors import ApprovalDenied
from mesh.runtime.node import MeshNode
from mesh.testing import AgentProcess, RegistryProcess
from tests.integration.helpers import until
from tests.security.helpers import cli_as, person_token

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

KEYRING = str(Path(__file__).resolve().parent / "fixtures" / "keyring.py")
ARGUMENTS = {"service": "billing-db", "password": "hunter2", "card": {"holder": "Ann Lee", "pin": "4921"}}


@asynccontextmanager
async def waiting_rotation() -> AsyncGenerator[tuple[RegistryProcess, dict[str, Any]]]:
    """A registry and a keyring whose `rotate` call (with secrets) waits in the queue; denied on the way out."""
    async with (
        RegistryProcess() as registry,
        AgentProcess(f"{KEYRING}:keyring", "--registry", registry.base_url),
        MeshNode("rotation-bot", registry=registry.base_url) as node,
        httpx2.AsyncClient(base_url=registry.base_url, headers=_bearer("closer")) as http,
        anyio.create_task_group() as tg,
    ):
        await node.settle()

        async def call() -> None:
            with pytest.raises(ApprovalDenied, match="denied"):
                await node.call("keyring", "rotate", ARGUMENTS, timeout=60)

        tg.start_soon(call)

        async def fetch() -> list[dict[str, Any]]:
            return (await http.get("/api/approvals", params={"status": "pending"})).json()

        [pending] = await until(fetch, bool)
        yield registry, pending
        denied = await http.post(f"/api/approvals/{pending['id']}/decision", json={"decision": "deny"})
        assert denied.status_code == 200, denied.text


def _bearer(person: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {person_token(person, 'approver')}"}


def _listing(registry: RegistryProcess, token: str | None, *args: str) -> list[dict[str, Any]]:
    result = cli_as(token, "approvals", "ls", "--json", "--registry", registry.base_url, *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def test_an_approver_sees_the_plain_arguments_and_stars_for_the_secret_ones_and_a_client_none(
    mesh_env: dict[str, str],
) -> None:
    async with waiting_rotation() as (registry, pending):
        [seen] = await anyio.to_thread.run_sync(
            lambda: _listing(registry, person_token("alice", "approver"), "--status", "pending")
        )
        [unseen] = await anyio.to_thread.run_sync(
            lambda: _listing(registry, person_token("carl", "client"), "--status", "pending")
        )
    assert seen["id"] == unseen["id"] == pending["id"]
    assert seen["arguments"] == {
        "service": "billing-db",
        "password": "***",
        "card": {"holder": "Ann Lee", "pin": "***"},
    }
    assert "hunter2" not in json.dumps(seen)
    assert "4921" not in json.dumps(seen)
    assert unseen["arguments"] is None


async def test_the_human_listing_shows_the_arguments_under_the_request(mesh_env: dict[str, str]) -> None:
    async with waiting_rotation() as (registry, pending):
        result = await anyio.to_thread.run_sync(
            lambda: cli_as(person_token("alice", "approver"), "approvals", "ls", "--registry", registry.base_url)
        )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(pending["id"]))
    assert lines[at + 1].strip().startswith('service=billing-db password=*** card={"holder":"Ann Lee","pin":"***"}')
