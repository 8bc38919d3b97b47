"""A row locked in PostgreSQL by another session stalls the one call that needs it, and nothing else."""

from __future__ import annotations

import time
from collections.abc import Generator
from contextlib import contextmanager

import anyio
import anyio.to_thread
import httpx2
import psycopg
import pytest

from mesh.identity import Claims, MeshKeys
from mesh.wire import Approval, ApprovalDecision, ApprovalRequest, Registration
from registry.approvals import ApprovalQueue
from registry.pg import PgDatabase
from registry.pg_approvals import PgApprovals
from registry.pg_inventory import PgInventory
from tests.unit.test_inventory_api import auth, post, running_registry

pytestmark = pytest.mark.anyio

KEYS = MeshKeys(b"secret", "acme")
APPROVE = ApprovalDecision(decision="approve")


@contextmanager
def row_locked(url: str, table: str, column: str, value: str) -> Generator[None]:
    """Hold a lock on the rows whose `column` is `value` (SELECT ... FOR UPDATE, transaction open) in the block."""
    query = f"SELECT 1 FROM {table} WHERE {column} = %s FOR UPDATE"
    with psycopg.connect(url) as conn:  # not autocommit: the transaction stays open until the block ends
        conn.execute(query, (value,))  # pyright: ignore[reportArgumentType]
        try:
            yield
        finally:
            conn.rollback()


async def a_lock_is_awaited(url: str) -> None:
    """Return once a session of the database waits for a lock (bounded)."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"

    def waiting() -> int:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(query).fetchone()
        return int(row[0]) if row else 0

    with anyio.fail_after(10):
        while not await anyio.to_thread.run_sync(waiting):
            await anyio.sleep(0.02)


def alice() -> Claims:
    return KEYS.verify(KEYS.mint("alice", role="approver", person="alice"), audience="registry")


def request() -> ApprovalRequest:
    return ApprovalRequest(
        agent="ledger", tool="refund", caller="desk", arguments_digest="a" * 64, expires_at=time.time() + 600
    )


async def test_a_heartbeat_waiting_on_a_locked_row_holds_up_neither_listings_nor_other_heartbeats(
    pg_url: str,
) -> None:
    with PgDatabase(pg_url, mesh="acme") as database:
        async with running_registry(PgInventory(database)) as registry:
            for instance in ("a1", "a2"):
                reg = Registration(name="crm", instance=instance, url=f"http://127.0.0.1:9/{instance}/mcp")
                assert (await post(registry, reg, auth("crm"))).status_code == 200
            answers: dict[str, httpx2.Response] = {}

            async def heartbeat() -> None:
                answers["a1"] = await registry.http.put("/api/agents/crm/a1/lease", headers=auth("crm"))

            async with anyio.create_task_group() as tg:
                with row_locked(pg_url, "agents", "instance", "a1"):
                    tg.start_soon(heartbeat)
                    await a_lock_is_awaited(pg_url)
                    with anyio.fail_after(10):
                        listing = await registry.http.get("/api/agents")
                        other = await registry.http.put("/api/agents/crm/a2/lease", headers=auth("crm"))
                        assert "a1" not in answers  # still waiting for its row
                        assert [r["instance"] for r in listing.json()] == ["a1", "a2"]
                        assert other.status_code == 200
            assert answers["a1"].status_code == 200  # the row was released: the heartbeat went through


async def test_a_decision_waiting_on_a_locked_row_holds_up_no_other_approval(pg_url: str) -> None:
    with PgDatabase(pg_url, mesh="acme") as database:
        queue = ApprovalQueue(PgApprovals(database))
        stuck, free = [await queue.file(request(), time.time()) for _ in range(2)]
        decided: dict[str, Approval] = {}

        async def decide() -> None:
            decided["stuck"] = await queue.decide(stuck.id, APPROVE, alice(), time.time())

        async with anyio.create_task_group() as tg:
            with row_locked(pg_url, "approvals", "id", stuck.id):
                tg.start_soon(decide)
                await a_lock_is_awaited(pg_url)
                with anyio.fail_after(10):
                    other = await queue.decide(free.id, APPROVE, alice(), time.time())
                    listed = {a.id: a.status for a in await queue.list(time.time())}
                    assert "stuck" not in decided  # still waiting for its row
                    assert (other.status, listed) == ("approved", {stuck.id: "pending", free.id: "approved"})
        assert decided["stuck"].status == "approved"
