"""The approvals queue: who may decide, single decisions, and requests whose call stopped waiting."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from mesh.identity import Claims, MeshKeys, Role
from mesh.wire import ApprovalDecision, ApprovalRequest
from registry.approvals import ABANDONED_AFTER, ApprovalQueue, DecisionRefused

KEYS = MeshKeys(b"secret", "acme")
NOW = 1_700_000_000.0
APPROVE = ApprovalDecision(decision="approve")


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def claims(person: str | None, role: Role = "approver", *groups: str) -> Claims:
    token = KEYS.mint(person or "x", role=role, person=person, groups=groups, now=NOW)
    return KEYS.verify(token, audience="registry", now=NOW)


def request(**fields: Any) -> ApprovalRequest:
    base: dict[str, Any] = {"agent": "ledger", "tool": "refund", "caller": "desk", "arguments_digest": "a" * 64}
    return ApprovalRequest.model_validate({**base, "expires_at": NOW + 120, **fields})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def audit() -> list[tuple[str, dict[str, Any]]]:
    return []


@pytest.fixture
def queue(tmp_path: Path, clock: Clock, audit: list[tuple[str, dict[str, Any]]]) -> ApprovalQueue:
    return ApprovalQueue(
        tmp_path / "q.sqlite3", audit=lambda kind, record: audit.append((kind, dict(record))), clock=clock
    )


def test_a_group_approval_is_decided_by_a_member_and_names_them(queue: ApprovalQueue) -> None:
    filed = queue.file(request(approvers=["finance"], requested_by="bob"), NOW)
    decided = queue.decide(filed.id, APPROVE, claims("alice", "approver", "finance", "ops"), NOW)
    assert decided.status == "approved"
    assert decided.decided_by is not None
    assert (decided.decided_by.person, decided.decided_by.groups) == ("alice", ["finance"])
    assert str(decided.decided_by) == "alice (finance)"


@pytest.mark.parametrize(
    ("who", "why"),
    [
        (("bob", "approver", "finance"), "bob asked for this call and cannot approve it too"),
        (("carol", "admin"), "only members of finance may decide this; carol is in no group"),
        (("dan", "client", "finance"), "a token of role 'client' cannot decide approvals"),
        ((None, "agent"), "a token of role 'agent' cannot decide approvals"),
        ((None, "approver", "finance"), "this token names no person"),
    ],
)
def test_who_may_not_decide_a_finance_approval(queue: ApprovalQueue, who: tuple[Any, ...], why: str) -> None:
    filed = queue.file(request(approvers=["finance"], requested_by="bob"), NOW)
    with pytest.raises(DecisionRefused, match=why) as refused:
        queue.decide(filed.id, APPROVE, claims(*who), NOW)
    assert refused.value.status == 403
    assert queue.get(filed.id, NOW).status == "pending"  # pyright: ignore[reportOptionalMemberAccess]


def test_a_plain_approval_may_be_decided_by_any_approver_or_admin_but_once(queue: ApprovalQueue) -> None:
    filed = queue.file(request(), NOW)
    queue.decide(filed.id, APPROVE, claims("root", "admin"), NOW)
    with pytest.raises(DecisionRefused, match="already approved") as again:
        queue.decide(filed.id, ApprovalDecision(decision="deny"), claims("alice"), NOW)
    assert again.value.status == 409


def test_an_approval_nobody_waits_on_is_cancelled_and_cannot_be_approved(queue: ApprovalQueue, clock: Clock) -> None:
    filed = queue.file(request(), NOW)
    clock.now = NOW + ABANDONED_AFTER + 1
    with pytest.raises(DecisionRefused, match="already cancelled"):
        queue.decide(filed.id, APPROVE, claims("alice"), clock.now)
    closed = queue.get(filed.id, clock.now)
    assert closed is not None
    assert (closed.status, closed.reason) == ("cancelled", "its call stopped waiting (refused, out of time, or gone)")


def test_only_the_filing_agent_cancels_its_request(queue: ApprovalQueue) -> None:
    filed = queue.file(request(), NOW)
    with pytest.raises(DecisionRefused, match="filed by 'ledger', not 'desk'"):
        queue.cancel(filed.id, "desk", "no", NOW)
    assert queue.cancel(filed.id, "ledger", "gave up", NOW).status == "cancelled"


def test_every_change_is_in_the_governance_record(
    queue: ApprovalQueue, audit: list[tuple[str, dict[str, Any]]]
) -> None:
    filed = queue.file(request(approvers=["finance"]), NOW)
    with pytest.raises(DecisionRefused):
        queue.decide(filed.id, APPROVE, claims("carol", "approver", "legal"), NOW)
    queue.decide(filed.id, APPROVE, claims("alice", "approver", "finance"), NOW)
    assert [(kind, r["event"]) for kind, r in audit] == [
        ("approval", "requested"),
        ("approval", "decision refused"),
        ("approval", "approved"),
    ]
    assert audit[-1][1]["decided_by"] == {"person": "alice", "groups": ["finance"]}


def test_an_older_approvals_table_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE approvals (id TEXT PRIMARY KEY, agent TEXT, tool TEXT, caller TEXT, arguments_digest TEXT,"
            " requested_at REAL, expires_at REAL, status TEXT, trace_id TEXT, decided_by TEXT, decided_at REAL,"
            " reason TEXT, summary TEXT)"
        )
        db.execute("INSERT INTO approvals VALUES ('old1','a','t','c','d',1,2,'approved',NULL,'alice',1.5,NULL,NULL)")
    queue = ApprovalQueue(path)
    [row] = queue.list(NOW)
    assert (row.id, str(row.decided_by), row.approvers) == ("old1", "alice", [])
