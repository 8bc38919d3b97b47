"""A person has minutes to decide, by default or as the tool says; never longer than the call waits."""

from __future__ import annotations

import time

import pytest

from mesh import Agent
from mesh.errors import ConfigError
from mesh.identity import MeshKeys
from mesh.runtime.approval_gate import APPROVAL_TTL, ApprovalGate

KEYS = MeshKeys(b"secret", "acme")


def gate() -> ApprovalGate:
    return ApprovalGate(agent="vault", keys=KEYS, registry_url=lambda: None, instance="i-1")


def test_the_default_approval_ttl_is_minutes() -> None:
    ticket = gate().ticket("withdraw", {"amount": 5}, "teller", budget=None)

    assert APPROVAL_TTL == 300
    assert ticket.expires_at - time.time() == pytest.approx(300, abs=5)


def test_a_tool_s_own_ttl_wins_but_never_outlasts_the_call_s_budget() -> None:
    own = gate().ticket("withdraw", None, "teller", budget=None, ttl=1800)
    capped = gate().ticket("withdraw", None, "teller", budget=60, ttl=1800)

    assert own.expires_at - time.time() == pytest.approx(1800, abs=5)
    assert capped.expires_at - time.time() == pytest.approx(60, abs=5)


def test_approval_ttl_on_a_tool_implies_approval() -> None:
    vault = Agent("vault")

    @vault.tool(approval_ttl=900)
    async def withdraw(amount: int) -> int:  # pyright: ignore[reportUnusedFunction]
        return amount

    assert vault.tools["withdraw"].approval is True
    assert vault.tools["withdraw"].approval_ttl == 900


def test_a_non_positive_approval_ttl_is_refused_in_one_line() -> None:
    vault = Agent("vault")

    with pytest.raises(ConfigError, match="approval_ttl must be a positive number of seconds"):

        @vault.tool(approval_ttl=0)
        async def withdraw(amount: int) -> int:  # pyright: ignore[reportUnusedFunction]
            return amount
