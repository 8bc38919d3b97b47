"""A PostgreSQL database that goes away and comes back: the stores say so, never guess, and recover by themselves."""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from mesh.identity import MeshKeys
from mesh.testing.postgres import PostgresCluster, postgres_cluster
from mesh.wire import ApprovalDecision, ApprovalRequest, Registration
from registry.approvals import MAX_WAIT, ApprovalQueue
from registry.pg import PgDatabase
from registry.pg_approvals import PgApprovals
from registry.pg_inventory import PgInventory
from registry.stores import StoreUnavailable

KEYS = MeshKeys(b"secret", "acme")


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    """A cluster of this module's own, so that stopping it disturbs no other test."""
    with postgres_cluster() as cluster:
        yield cluster


def registration(instance: str) -> Registration:
    return Registration(name="crm", instance=instance, url="http://127.0.0.1:9/mcp", lease_seconds=600)


async def eventually(check: Any) -> Any:
    """`check()`'s first answer (awaited if it is a coroutine) that is not StoreUnavailable, trying (bounded)."""
    with anyio.fail_after(20):
        while True:
            try:
                found = check()
                return await found if inspect.isawaitable(found) else found
            except StoreUnavailable:
                await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_a_lost_database_fails_calls_at_once_and_they_work_again_once_it_is_back(
    cluster: PostgresCluster,
) -> None:
    url = cluster.create_database("lost_and_found")
    with PgDatabase(url, mesh="acme") as database:
        inventory = PgInventory(database)
        inventory.upsert(registration("a1"), time.time())

        await anyio.to_thread.run_sync(cluster.stop)
        with pytest.raises(StoreUnavailable, match=r"^PostgreSQL at postgresql://\S+ is unavailable \("):
            inventory.all()
        with pytest.raises(StoreUnavailable):  # known to be lost: no wait for a timeout
            inventory.upsert(registration("a2"), time.time())
        assert not database.available
        await anyio.to_thread.run_sync(cluster.start)

        assert [r.instance for r in await eventually(inventory.all)] == ["a1"]
        inventory.upsert(registration("a2"), time.time())
        assert [r.instance for r in inventory.all()] == ["a1", "a2"]


@pytest.mark.anyio
async def test_replicas_listen_again_after_an_outage(cluster: PostgresCluster) -> None:
    url = cluster.create_database("listen_again")
    with PgDatabase(url, mesh="acme") as one, PgDatabase(url, mesh="acme") as two:
        here = ApprovalQueue(PgApprovals(one), touch_every=3600)
        there = ApprovalQueue(PgApprovals(two), touch_every=3600)
        async with here, there:
            await anyio.to_thread.run_sync(cluster.stop)
            await anyio.to_thread.run_sync(cluster.start)
            request = ApprovalRequest(
                agent="ledger", tool="refund", caller="desk", arguments_digest="b" * 64, expires_at=time.time() + 600
            )
            filed = await eventually(lambda: here.file(request, time.time()))
            await eventually(lambda: there.list(time.time()))
            released: dict[str, Any] = {}

            async def call() -> None:
                released["approval"] = await here.wait(filed.id, MAX_WAIT)

            approver = KEYS.verify(KEYS.mint("alice", role="approver", person="alice"), audience="registry")
            with anyio.fail_after(MAX_WAIT / 2):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(call)
                    await anyio.wait_all_tasks_blocked()
                    await there.decide(filed.id, ApprovalDecision(decision="approve"), approver, time.time())
    assert released["approval"].status == "approved"
