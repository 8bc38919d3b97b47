"""An approval runs its call once, and only a person who may decides it: not the requester, not an agent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mesh.errors import MeshError, PeerRejected
from mesh.identity import MeshKeys, StaticToken
from mesh.peers.hop import HopResult
from mesh.peers.rounds import with_answers
from mesh.runtime.node import MeshNode
from mesh.testing import RegistryProcess
from mesh.wire import INTERACTIVE_META_KEY
from tests.security.helpers import LedgerMesh, cli_as, ledger_mesh, pending_approval, person_token

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

YES = {"action": "accept", "content": {"approve": True}}
USED = "this approval was already used: an answer runs its call once; ask again"


async def test_a_replayed_elicitation_answer_runs_the_refund_once(mesh_env: dict[str, str], tmp_path: Path) -> None:
    async with ledger_mesh(tmp_path) as mesh, MeshNode("attacker", registry=mesh.registry.base_url) as node:
        await node.settle()
        [inst] = node.directory.instances("ledger")
        hop = node.pool.hop(inst)
        meta = {INTERACTIVE_META_KEY: True}
        args = {"order": "A-1", "amount": 100}
        asked = await hop.call_tool("refund", args, meta=meta, timeout=10)
        assert asked.input_required
        [key] = asked.raw["inputRequests"]
        state: str = asked.raw["requestState"]

        async def answer() -> HopResult:
            return await hop.call_tool(
                "refund", args, meta=meta, timeout=10, input_responses={key: YES}, request_state=state
            )

        first = await answer()
        replays = [await answer() for _ in range(2)]
    assert first.value == {"order": "A-1", "refunded": 100}
    for replay in replays:
        assert replay.is_error
        assert (
            replay.text
            == "ApprovalDenied: ledger.refund: this approval was already used: an answer runs its call once; ask again"
        )
    assert mesh.runs() == ["refund A-1 100"]


async def test_an_answer_for_one_call_does_not_approve_another(mesh_env: dict[str, str], tmp_path: Path) -> None:
    async with ledger_mesh(tmp_path) as mesh, MeshNode("attacker", registry=mesh.registry.base_url) as node:
        await node.settle()
        [inst] = node.directory.instances("ledger")
        hop = node.pool.hop(inst)
        meta = {INTERACTIVE_META_KEY: True}
        asked = await hop.call_tool("refund", {"order": "A-1", "amount": 1}, meta=meta, timeout=10)
        [key] = asked.raw["inputRequests"]
        # The SDK refuses a round's state sent with other arguments before the mesh sees it.
        with pytest.raises(PeerRejected, match="Invalid or expired requestState"):
            await hop.call_tool(
                "refund", {"order": "A-1", "amount": 10_000}, meta=meta, timeout=10,
                input_responses={key: YES}, request_state=asked.raw["requestState"],
            )  # fmt: skip
    assert mesh.runs() == []


async def test_a_finance_proposal_waits_for_a_finance_member_who_is_not_the_requester(
    mesh_env: dict[str, str], tmp_path: Path
) -> None:
    bob = person_token("bob", "approver", "finance")  # in finance, but he asks for it himself
    carol = person_token("carol", "approver", "legal")
    alice = person_token("alice", "approver", "finance")
    keys = MeshKeys.load()
    async with ledger_mesh(tmp_path) as mesh:
        credential = StaticToken(bob, keys.verify(bob, audience="*"))
        async with MeshNode("script", registry=mesh.registry.base_url, credential=credential) as node:
            await node.settle()
            asked: list[str] = []
            outcome: dict[str, Any] = {}

            async def ask(key: str, request: dict[str, Any]) -> dict[str, Any]:
                asked.append(key)  # the origin may not answer a named group's approval itself
                return YES

            async def propose() -> None:
                outcome["value"] = await with_answers(
                    lambda: node.call("ledger", "propose", {"deal": "acme"}, timeout=60), ask
                )

            pending: dict[str, Any] = {}
            refusals: dict[str, str] = {}
            async with anyio.create_task_group() as tg:
                tg.start_soon(propose)
                pending.update(await mesh.pending())
                refusals |= {
                    "bob": await _decide(mesh, bob, pending["id"]),
                    "ledger": await _decide(mesh, keys.mint("ledger"), pending["id"]),
                    "operator": await _decide(mesh, None, pending["id"]),
                    "carol": await _decide(mesh, carol, pending["id"]),
                }
                pending["still"] = [row["id"] for row in mesh.approvals("--status", "pending")]
                refusals["alice"] = await _decide(mesh, alice, pending["id"])
            [row] = mesh.approvals()
    assert pending["approvers"] == ["finance"]
    assert pending["requested_by"] == "bob"
    assert "bob asked for this call and cannot approve it too" in refusals["bob"]
    assert "a token of role 'agent' cannot decide approvals" in refusals["ledger"]
    assert "only members of finance may decide this" in refusals["operator"]
    assert "only members of finance may decide this; carol is in legal" in refusals["carol"]
    assert pending["still"] == [pending["id"]]
    assert refusals["alice"] == ""
    assert outcome["value"] == "proposal for acme sent"
    assert asked == []
    assert (row["status"], row["decided_by"]) == ("approved", {"person": "alice", "groups": ["finance"]})
    assert mesh.runs() == ["propose acme"]


async def test_an_approval_whose_call_gave_up_is_closed_and_cannot_be_approved(
    mesh_env: dict[str, str], tmp_path: Path
) -> None:
    alice = person_token("alice", "approver", "finance")
    async with ledger_mesh(tmp_path) as mesh, MeshNode("script", registry=mesh.registry.base_url) as node:
        await node.settle()
        with pytest.raises(MeshError):
            await node.call("ledger", "propose", {"deal": "late"}, timeout=3)
        [row] = mesh.approvals()
        late = await _decide(mesh, alice, row["id"])
    assert row["status"] in ("cancelled", "expired")  # whichever the registry saw first: never pending
    assert f"approval {row['id']} is already {row['status']}" in late
    assert mesh.runs() == []


async def _decide(mesh: LedgerMesh, token: str | None, approval_id: str) -> str:
    """`mesh approvals approve ID` as the holder of `token`; its stderr ("" when it succeeded)."""
    result = await anyio.to_thread.run_sync(
        lambda: cli_as(token, "approvals", "approve", approval_id, "--registry", mesh.registry.base_url)
    )
    return result.stderr.strip() if result.returncode else ""


async def test_only_the_filing_agent_may_cancel_its_approval(mesh_env: dict[str, str]) -> None:
    keys = MeshKeys.load()
    async with (
        RegistryProcess() as registry,
        pending_approval(registry.base_url) as filed,
        httpx2.AsyncClient(base_url=registry.base_url, timeout=10) as http,
    ):
        path = f"/api/approvals/{filed['id']}/cancel"

        async def cancel(token: str) -> httpx2.Response:
            return await http.post(path, content="stop", headers={"authorization": f"Bearer {token}"})

        by_client = await cancel(keys.mint("vault", "registry", role="client"))
        by_approver = await cancel(keys.mint("alice", "registry", role="approver", person="alice"))
        by_other_agent = await cancel(keys.mint("teller", "registry"))
        still = (await http.get(f"/api/approvals/{filed['id']}")).json()["status"]
        by_filer = await cancel(keys.mint("vault", "registry"))
    assert [r.status_code for r in (by_client, by_approver, by_other_agent)] == [403, 403, 403]
    assert "filed by 'vault', not 'teller'" in by_other_agent.json()["error"]
    assert still == "pending"
    assert (by_filer.status_code, by_filer.json()["status"]) == (200, "cancelled")
