"""Registry replicas on one PostgreSQL database: decisions reach every replica, the database is one mesh's."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from mesh.errors import ConfigError
from mesh.identity import Claims, MeshKeys
from mesh.wire import ApprovalDecision, ApprovalRequest
from registry.approvals import MAX_WAIT, ApprovalQueue
from registry.pg import PgDatabase, channel, redacted
from registry.pg_inventory import PgInventory
from registry.sqlite_approvals import SqliteApprovals
from registry.stores import StoreUnavailable
from tests.unit.store_backends import Backend

pytestmark = pytest.mark.anyio

KEYS = MeshKeys(b"secret", "acme")


def alice() -> Claims:
    token = KEYS.mint("alice", role="approver", person="alice")
    return KEYS.verify(token, audience="registry")


def request(**fields: Any) -> ApprovalRequest:
    base: dict[str, Any] = {"agent": "ledger", "tool": "refund", "caller": "desk", "arguments_digest": "a" * 64}
    return ApprovalRequest.model_validate({**base, "expires_at": time.time() + 600, **fields})


@pytest.fixture
def backend(pg_url: str) -> Iterator[Backend]:
    backend = Backend("postgresql", pg_url)
    try:
        yield backend
    finally:
        backend.close()


def replica(backend: Backend) -> ApprovalQueue:
    # Long-polls re-read only when woken: a release can only come from the other replica's NOTIFY.
    return ApprovalQueue(backend.approvals(), touch_every=3600)


async def test_a_decision_through_one_replica_releases_a_call_waiting_on_another(backend: Backend) -> None:
    here, there = replica(backend), replica(backend)
    released: dict[str, Any] = {}
    async with here, there:
        filed = await here.file(request(), time.time())

        async def call() -> None:
            released["approval"] = await here.wait(filed.id, MAX_WAIT)

        with anyio.fail_after(MAX_WAIT / 2):  # the wait itself would end only after MAX_WAIT
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await anyio.wait_all_tasks_blocked()
                await there.decide(filed.id, ApprovalDecision(decision="approve"), alice(), time.time())
    assert released["approval"].status == "approved"
    assert str(released["approval"].decided_by) == "alice"


async def test_a_call_cancelled_through_one_replica_releases_its_wait_on_another(backend: Backend) -> None:
    here, there = replica(backend), replica(backend)
    released: dict[str, Any] = {}
    async with here, there:
        filed = await here.file(request(), time.time())

        async def call() -> None:
            released["approval"] = await here.wait(filed.id, MAX_WAIT)

        with anyio.fail_after(MAX_WAIT / 2):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await anyio.wait_all_tasks_blocked()
                await there.cancel(filed.id, "ledger", "the caller gave up", time.time())
    assert (released["approval"].status, released["approval"].reason) == ("cancelled", "the caller gave up")


async def test_a_queue_listens_once(tmp_path: Path) -> None:
    store = SqliteApprovals(tmp_path / "q.sqlite3")
    queue = ApprovalQueue(store)
    async with queue:
        pass
    with pytest.raises(RuntimeError, match="already entered"):
        async with queue:
            pass
    store.close()


def test_a_database_of_another_mesh_is_refused_in_one_line(pg_url: str) -> None:
    PgDatabase(pg_url, mesh="acme").close()

    with pytest.raises(ConfigError, match=r"holds mesh 'acme', not 'other': give each mesh its own database$"):
        PgDatabase(pg_url, mesh="other")


def test_a_closed_database_refuses_further_use(pg_url: str) -> None:
    database = PgDatabase(pg_url, mesh="acme")
    inventory = PgInventory(database)
    database.close()

    with pytest.raises(StoreUnavailable, match="the store is closed"):
        inventory.all()


def test_an_unreachable_database_at_start_is_one_line_naming_it() -> None:
    with pytest.raises(
        StoreUnavailable, match=r"^cannot reach PostgreSQL at postgresql://u:\*\*\*@127\.0\.0\.1:1/x: "
    ) as e:
        PgDatabase("postgresql://u:hunter2@127.0.0.1:1/x", mesh="acme", connect_timeout=2)
    assert "hunter2" not in str(e.value)
    assert "\n" not in str(e.value)


def test_a_password_never_shows_where_the_database_is_named() -> None:
    assert redacted("postgresql://bob:s3cret@db.example:5433/mesh") == "postgresql://bob:***@db.example:5433/mesh"
    assert redacted("postgresql://bob@db.example/mesh") == "postgresql://bob@db.example/mesh"


def test_each_mesh_has_its_own_channel_within_postgresql_s_name_limit() -> None:
    channels = [channel("approvals", mesh) for mesh in ("acme", "m" * 62 + "a", "m" * 62 + "b")]
    assert channels[0] == "agentplex.approvals.acme"
    assert len(set(channels)) == 3
    assert all(len(c.encode()) <= 63 for c in channels)
