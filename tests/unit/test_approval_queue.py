"""The approvals queue, on SQLite and PostgreSQL: who may decide, single decisions, requests nobody waits on."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from mesh.errors import ConfigError
from mesh.identity import Claims, MeshKeys, Role
from mesh.wire import Approval, ApprovalDecision, ApprovalRequest
from registry.approvals import ABANDONED_AFTER, ApprovalQueue, DecisionRefused, shown_to
from registry.sqlite_approvals import SqliteApprovals
from tests.unit.store_backends import BACKENDS, Backend, opened

pytestmark = pytest.mark.anyio

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


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with opened(request, tmp_path) as backend:
        yield backend


@pytest.fixture
def queue(backend: Backend, clock: Clock, audit: list[tuple[str, dict[str, Any]]]) -> ApprovalQueue:
    return ApprovalQueue(
        backend.approvals(), audit=lambda kind, record: audit.append((kind, dict(record))), clock=clock
    )


async def test_a_group_approval_is_decided_by_a_member_and_names_them(queue: ApprovalQueue) -> None:
    filed = await queue.file(request(approvers=["finance"], requested_by="bob"), NOW)
    decided = await queue.decide(filed.id, APPROVE, claims("alice", "approver", "finance", "ops"), NOW)
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
async def test_who_may_not_decide_a_finance_approval(queue: ApprovalQueue, who: tuple[Any, ...], why: str) -> None:
    filed = await queue.file(request(approvers=["finance"], requested_by="bob"), NOW)
    with pytest.raises(DecisionRefused, match=why) as refused:
        await queue.decide(filed.id, APPROVE, claims(*who), NOW)
    assert refused.value.status == 403
    assert (await queue.get(filed.id, NOW)).status == "pending"  # pyright: ignore[reportOptionalMemberAccess]


async def test_a_plain_approval_may_be_decided_by_any_approver_or_admin_but_once(queue: ApprovalQueue) -> None:
    filed = await queue.file(request(), NOW)
    await queue.decide(filed.id, APPROVE, claims("root", "admin"), NOW)
    with pytest.raises(DecisionRefused, match="already approved") as again:
        await queue.decide(filed.id, ApprovalDecision(decision="deny"), claims("alice"), NOW)
    assert again.value.status == 409


async def test_an_approval_nobody_waits_on_is_cancelled_and_cannot_be_approved(
    queue: ApprovalQueue, clock: Clock
) -> None:
    filed = await queue.file(request(), NOW)
    clock.now = NOW + ABANDONED_AFTER + 1
    with pytest.raises(DecisionRefused, match="already cancelled"):
        await queue.decide(filed.id, APPROVE, claims("alice"), clock.now)
    closed = await queue.get(filed.id, clock.now)
    assert closed is not None
    assert (closed.status, closed.reason) == ("cancelled", "its call stopped waiting (refused, out of time, or gone)")


async def test_only_the_filing_agent_cancels_its_request(queue: ApprovalQueue) -> None:
    filed = await queue.file(request(), NOW)
    with pytest.raises(DecisionRefused, match="filed by 'ledger', not 'desk'"):
        await queue.cancel(filed.id, "desk", "no", NOW)
    assert (await queue.cancel(filed.id, "ledger", "gave up", NOW)).status == "cancelled"


async def test_every_change_is_in_the_governance_record(
    queue: ApprovalQueue, audit: list[tuple[str, dict[str, Any]]]
) -> None:
    filed = await queue.file(request(approvers=["finance"]), NOW)
    with pytest.raises(DecisionRefused):
        await queue.decide(filed.id, APPROVE, claims("carol", "approver", "legal"), NOW)
    await queue.decide(filed.id, APPROVE, claims("alice", "approver", "finance"), NOW)
    assert [(kind, r["event"]) for kind, r in audit] == [
        ("approval", "requested"),
        ("approval", "decision refused"),
        ("approval", "approved"),
    ]
    assert audit[-1][1]["decided_by"] == {"person": "alice", "groups": ["finance"]}


async def test_an_older_approvals_table_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE approvals (id TEXT PRIMARY KEY, agent TEXT, tool TEXT, caller TEXT, arguments_digest TEXT,"
            " requested_at REAL, expires_at REAL, status TEXT, trace_id TEXT, decided_by TEXT, decided_at REAL,"
            " reason TEXT, summary TEXT)"
        )
        db.execute("INSERT INTO approvals VALUES ('old1','a','t','c','d',1,2,'approved',NULL,'alice',1.5,NULL,NULL)")
    store = SqliteApprovals(path)
    try:
        [row] = await ApprovalQueue(store).list(NOW)
    finally:
        store.close()
    assert (row.id, str(row.decided_by), row.approvers, row.arguments) == ("old1", "alice", [], None)


async def test_a_call_s_arguments_are_stored_and_shown_to_approvers_and_admins_only(queue: ApprovalQueue) -> None:
    arguments = {"account": "acme", "amount": 50, "card": "***", "note": {"z": 1, "a": [1, 2]}}
    filed = await queue.file(request(arguments=arguments), NOW)
    [listed] = await queue.list(NOW)
    plain = await queue.file(request(), NOW)

    assert filed.arguments == listed.arguments == arguments
    assert list(listed.arguments or {}) == ["account", "amount", "card", "note"]  # in the order the agent sent
    assert (await queue.get(plain.id, NOW)).arguments is None  # pyright: ignore[reportOptionalMemberAccess]
    assert shown_to(listed, claims("alice", "approver")).arguments == arguments
    assert shown_to(listed, claims("root", "admin")).arguments == arguments
    for role in ("client", "agent"):
        assert shown_to(listed, claims("bob", role)).arguments is None
    assert shown_to(listed, None).arguments is None


async def test_arguments_stay_out_of_the_governance_record(
    queue: ApprovalQueue, audit: list[tuple[str, dict[str, Any]]]
) -> None:
    filed = await queue.file(request(arguments={"amount": 50}), NOW)
    await queue.decide(filed.id, APPROVE, claims("alice"), NOW)

    assert [r["event"] for _, r in audit] == ["requested", "approved"]
    assert all("arguments" not in r and r["arguments_digest"] == "a" * 64 for _, r in audit)


def test_approvals_written_by_a_newer_agentplex_are_refused_in_one_line(backend: Backend) -> None:
    backend.approvals()
    backend.edit("UPDATE schema_version SET version = 7 WHERE component = 'approvals'")

    with pytest.raises(ConfigError, match=r"the approvals tables in .* were written by a newer agentplex \(layout 7"):
        backend.approvals()


async def test_an_expired_approval_is_closed_once_however_many_replicas_sweep(backend: Backend, clock: Clock) -> None:
    records: list[tuple[str, dict[str, Any]]] = []
    replicas = [
        ApprovalQueue(backend.approvals(), audit=lambda kind, r: records.append((kind, dict(r))), clock=clock)
        for _ in range(3)
    ]
    filed = await replicas[0].file(request(expires_at=NOW + 5), NOW)
    later = NOW + 6

    seen: list[Approval | None] = []

    async def read(n: int) -> None:
        seen.append(await replicas[n % 3].get(filed.id, later))

    async with anyio.create_task_group() as tg:  # twelve reads at once, each sweeping in a thread of its own
        for n in range(12):
            tg.start_soon(read, n)

    assert {a.status for a in seen if a is not None} == {"expired"}
    assert [r["event"] for _, r in records] == ["requested", "expired"]


async def test_a_call_waiting_through_one_replica_is_not_cancelled_as_abandoned_by_another(
    backend: Backend, clock: Clock
) -> None:
    here, there = (ApprovalQueue(backend.approvals(), clock=clock) for _ in range(2))
    filed = await here.file(request(expires_at=time.time() + 600), NOW)
    clock.now = NOW + ABANDONED_AFTER - 1
    assert (await here.wait(filed.id, 0.01)).status == "pending"  # pyright: ignore[reportOptionalMemberAccess]

    clock.now = NOW + ABANDONED_AFTER + 5
    assert (await there.get(filed.id, time.time())).status == "pending"  # pyright: ignore[reportOptionalMemberAccess]
    clock.now = NOW + 2 * ABANDONED_AFTER + 5
    assert (await there.get(filed.id, time.time())).status == "cancelled"  # pyright: ignore[reportOptionalMemberAccess]
