"""Facts a policy reads about a caller come from whoever can vouch for them, never from the caller."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx2
import pytest

from mesh.identity import MeshKeys
from mesh.testing import RegistryProcess
from mesh.wire import Registration
from tests.integration.helpers import sdk_client
from tests.security.helpers import cli_as, ledger_mesh, person_token

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_a_client_describing_itself_as_qa_is_still_denied(mesh_env: dict[str, str], tmp_path: Path) -> None:
    async with ledger_mesh(tmp_path) as mesh:
        url = await _agent_url(mesh.registry.base_url, "ledger")
        async with sdk_client(url, caller="mallory") as client:
            lie = {"agentplex/caller": {"name": "mallory", "owner": "qa"}, "agentplex/person": {"name": "alice"}}
            result = await client.call_tool("probe", {}, meta=lie)  # pyright: ignore[reportArgumentType]
    assert result.is_error
    text = result.content[0].text  # pyright: ignore[reportAttributeAccessIssue]
    assert text.startswith("PolicyDenied: mallory may not call ledger.probe: denied by policy 'probes-are-qa-only'")
    assert "no record here: its attributes are empty" in text


async def test_an_agent_whose_record_says_qa_may_probe(mesh_env: dict[str, str], tmp_path: Path) -> None:
    async with ledger_mesh(tmp_path, "ledger", "qabot") as mesh:
        # The ledger learns qabot's signed record from the registry within a poll or two.
        with anyio.fail_after(20):
            while (result := cli_as(None, "call", "qabot", "check", "--registry", mesh.registry.base_url)).returncode:
                await anyio.sleep(0.3)
    assert result.stdout.strip() == "probed"


async def test_a_client_token_cannot_register_an_agent(mesh_env: dict[str, str]) -> None:
    minted = cli_as(None, "token")  # `mesh token` with no role mints a client token
    assert minted.returncode == 0, minted.stderr
    registration = Registration(name="mesh-cli", instance="abcd1234", url="http://127.0.0.1:9/mcp")
    async with RegistryProcess() as registry, httpx2.AsyncClient(base_url=registry.base_url) as http:
        body = registration.model_dump_json()
        as_client = await http.post("/api/agents", content=body, headers=_bearer(minted.stdout.strip()))
        as_other_agent = await http.post(
            "/api/agents", content=body, headers=_bearer(MeshKeys.load().mint("crm", "registry"))
        )
        as_itself = await http.post(
            "/api/agents", content=body, headers=_bearer(MeshKeys.load().mint("mesh-cli", "registry"))
        )
        listed = (await http.get("/api/agents")).json()
    assert as_client.status_code == 403
    assert "client token may not register" in as_client.json()["error"]
    assert as_other_agent.status_code == 401
    assert as_itself.status_code == 200  # only an agent's own token registers its name
    assert [a["name"] for a in listed] == ["mesh-cli"]


async def test_only_finance_people_get_a_payout_even_through_another_agent(
    mesh_env: dict[str, str], tmp_path: Path
) -> None:
    alice, bob = person_token("alice", "client", "finance"), person_token("bob", "client", "sales")
    async with ledger_mesh(tmp_path, "ledger", "desk") as mesh:
        registry = ("--registry", mesh.registry.base_url)
        direct = await anyio.to_thread.run_sync(
            lambda: cli_as(alice, "call", "ledger", "payout", "--arg", "amount=5", *registry)
        )
        relayed = await anyio.to_thread.run_sync(
            lambda: cli_as(alice, "call", "desk", "pay", "--arg", "amount=7", *registry)
        )
        refused = await anyio.to_thread.run_sync(
            lambda: cli_as(bob, "call", "desk", "pay", "--arg", "amount=9", *registry)
        )
        runs = mesh.runs()
    assert (direct.returncode, direct.stdout.strip()) == (0, "paid 5"), direct.stderr
    assert (relayed.returncode, relayed.stdout.strip()) == (0, "paid 7"), relayed.stderr
    assert refused.returncode != 0
    assert "payouts-are-finance-only" in refused.stderr
    assert runs == ["payout 5", "payout 7"]


async def test_a_person_claimed_in_meta_by_a_client_is_ignored(mesh_env: dict[str, str], tmp_path: Path) -> None:
    async with ledger_mesh(tmp_path) as mesh:
        url = await _agent_url(mesh.registry.base_url, "ledger")
        async with sdk_client(url, caller="mallory") as client:
            lie = {"agentplex/person": {"name": "alice", "groups": ["finance"]}}
            result = await client.call_tool("payout", {"amount": 1}, meta=lie)  # pyright: ignore[reportArgumentType]
    assert result.is_error
    assert "payouts-are-finance-only" in result.content[0].text  # pyright: ignore[reportAttributeAccessIssue]
    assert mesh.runs() == []


async def _agent_url(registry: str, name: str) -> str:
    async with httpx2.AsyncClient(base_url=registry) as http:
        with anyio.fail_after(10):
            while True:
                agents = (await http.get("/api/agents")).json()
                found = [a["url"] for a in agents if a["name"] == name]
                if found:
                    return found[0]
                await anyio.sleep(0.1)


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", "content-type": "application/json"}


def test_an_over_long_token_is_a_one_line_error(mesh_env: dict[str, str]) -> None:
    result = cli_as(None, "token", "--ttl", "36500d")
    assert result.returncode == 1
    assert result.stderr.strip() == "mesh: error: a token lives at most 30d, not 36500d: mint a new one when it expires"
    assert json.dumps(result.stdout) == '""'
