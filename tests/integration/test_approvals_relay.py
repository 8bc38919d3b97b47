"""Interactive approvals: a question two hops down reaches the person at the origin, and only their yes runs it."""

from __future__ import annotations

from typing import Any

import pytest

from mesh.errors import ApprovalDenied
from mesh.peers.rounds import with_answers
from tests.integration.helpers import vault_chain

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def _person(approve: bool, asked: list[str]):  # type: ignore[no-untyped-def]
    async def ask(key: str, request: dict[str, Any]) -> dict[str, Any]:
        asked.append(f"{key}: {request['params']['message']}")
        return {"action": "accept", "content": {"approve": approve}}

    return ask


async def test_an_approval_two_hops_down_reaches_the_origin_and_runs_on_yes(mesh_env: dict[str, str]) -> None:
    asked: list[str] = []
    async with vault_chain("desk") as (_registry, node):
        result = await with_answers(
            lambda: node.call("teller", "cash", {"account": "acme", "amount": 20}), _person(True, asked)
        )
    assert result == {"handed_out": 20, "vault": {"account": "acme", "withdrawn": 20, "status": "done"}}
    [question] = asked
    assert question.startswith("agentplex/approval/vault: teller wants to run vault.withdraw(")
    assert '"amount": 20' in question


async def test_a_declined_approval_is_a_clean_refusal_and_nothing_runs(mesh_env: dict[str, str]) -> None:
    asked: list[str] = []
    async with vault_chain("desk") as (_registry, node):
        with pytest.raises(Exception, match="declined") as caught:
            await with_answers(
                lambda: node.call("teller", "cash", {"account": "acme", "amount": 20}), _person(False, asked)
            )
    assert len(asked) == 1
    assert "ApprovalDenied" in str(caught.value) or isinstance(caught.value, ApprovalDenied)
