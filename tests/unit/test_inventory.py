"""The inventory store, on SQLite and PostgreSQL: leases, first/last seen, filters, durability across reopen."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from mesh.errors import ConfigError
from mesh.wire import AgentRecord, Governance, Registration, ToolInfo
from registry.inventory import Inventory
from registry.stores import InventoryStore
from tests.unit.store_backends import BACKENDS, Backend, opened


def registration(
    name: str = "crm",
    instance: str = "a1",
    *,
    tools: tuple[str, ...] = ("lookup",),
    lease: float = 10.0,
    **metadata: str,
) -> Registration:
    return Registration(
        name=name,
        instance=instance,
        url=f"http://127.0.0.1:9000/{name}/{instance}/mcp",
        version="1.0",
        tools=[ToolInfo(name=tool, annotations={"readOnlyHint": True}) for tool in tools],
        metadata=Governance.model_validate(metadata),
        lease_seconds=lease,
    )


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with opened(request, tmp_path) as backend:
        yield backend


@pytest.fixture
def inventory(backend: Backend) -> InventoryStore:
    return backend.inventory()


def test_a_registration_is_stored_with_its_tools_metadata_and_lease(inventory: InventoryStore) -> None:
    record = inventory.upsert(registration(owner="sales", jurisdiction="eu", team="blue"), now=100.0)

    assert (record.first_seen, record.last_seen, record.expires_at) == (100.0, 100.0, 110.0)
    assert record.tools[0].name == "lookup"
    assert record.tools[0].annotations == {"readOnlyHint": True}
    assert record.metadata.owner == "sales"
    assert record.metadata.model_dump()["team"] == "blue"
    assert inventory.all() == [record]


def test_re_registering_keeps_first_seen_and_replaces_the_rest(inventory: InventoryStore) -> None:
    inventory.upsert(registration(), now=100.0)

    again = inventory.upsert(registration(tools=("lookup", "update"), owner="crm-team"), now=150.0)

    assert (again.first_seen, again.last_seen, again.expires_at) == (100.0, 150.0, 160.0)
    assert [tool.name for tool in again.tools] == ["lookup", "update"]
    assert again.metadata.owner == "crm-team"
    assert len(inventory.all()) == 1


def test_a_lease_lapses_unless_renewed(inventory: InventoryStore) -> None:
    inventory.upsert(registration("crm", lease=10.0), now=100.0)
    inventory.upsert(registration("kb", lease=10.0), now=100.0)

    renewed = inventory.renew("crm", "a1", now=108.0)

    assert renewed is not None
    assert (renewed.first_seen, renewed.last_seen, renewed.expires_at) == (100.0, 108.0, 118.0)
    assert [r.name for r in inventory.alive(now=109.0)] == ["crm", "kb"]
    assert [r.name for r in inventory.alive(now=112.0)] == ["crm"]
    assert [r.name for r in inventory.all()] == ["crm", "kb"]


def test_the_count_is_of_the_registrations_alive_then(inventory: InventoryStore) -> None:
    inventory.upsert(registration("crm", lease=10.0), now=100.0)
    inventory.upsert(registration("kb", lease=5.0), now=100.0)

    assert [inventory.count(now) for now in (99.0, 104.0, 105.0, 110.0)] == [2, 2, 1, 0]
    assert inventory.count(104.0) == len(inventory.alive(104.0))


def test_heartbeats_from_many_threads_each_get_their_own_record_and_are_stored(backend: Backend) -> None:
    inventory = backend.inventory()
    for n in range(40):
        inventory.upsert(registration("crm", f"i{n}", lease=10.0), now=100.0)
    asked = [(f"i{n}", 101.0 + n) for n in range(40)] + [(f"ghost{n}", 150.0) for n in range(8)]

    def heartbeat(asking: tuple[str, float]) -> AgentRecord | None:
        return inventory.renew("crm", asking[0], now=asking[1])

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(heartbeat, asked))

    assert [(r.instance, r.last_seen, r.expires_at) if r else None for r in answers] == [
        *((instance, now, now + 10.0) for instance, now in asked[:40]),
        *([None] * 8),
    ]
    elsewhere = backend.inventory()  # another replica, or the file opened again
    assert {r.instance: r.last_seen for r in elsewhere.all()} == dict(asked[:40])


def test_renewing_an_unknown_registration_returns_none(inventory: InventoryStore) -> None:
    assert inventory.renew("ghost", "a1", now=100.0) is None


def test_removing_forgets_a_registration_once(inventory: InventoryStore) -> None:
    inventory.upsert(registration(), now=100.0)

    assert inventory.remove("crm", "a1") is True
    assert inventory.remove("crm", "a1") is False
    assert inventory.all() == []


def test_instances_of_one_agent_are_separate_rows(inventory: InventoryStore) -> None:
    inventory.upsert(registration(instance="a1"), now=100.0)
    inventory.upsert(registration(instance="b2"), now=100.0)

    assert [r.instance for r in inventory.find(100.0, name="crm")] == ["a1", "b2"]


def test_find_matches_every_filter_and_governance_case_insensitively(inventory: InventoryStore) -> None:
    inventory.upsert(registration("crm", owner="sales", jurisdiction="EU", data_class="confidential"), now=100.0)
    inventory.upsert(
        registration("kb", tools=("search",), owner="support", jurisdiction="eu", data_class="public"),
        now=100.0,
    )
    inventory.upsert(registration("ledger", jurisdiction="us", data_class="confidential"), now=100.0)

    def names(**filters: str) -> list[str]:
        return [r.name for r in inventory.find(101.0, **filters)]

    assert names(jurisdiction="eu", data_class="confidential") == ["crm"]
    assert names(jurisdiction="eu") == ["crm", "kb"]
    assert names(data_class="CONFIDENTIAL") == ["crm", "ledger"]
    assert names(tool="search") == ["kb"]
    assert names(tool="lookup", owner="sales") == ["crm"]
    assert names(owner="nobody") == []
    assert names(name="ledger") == ["ledger"]


def test_find_skips_lapsed_leases_unless_asked_for_them(inventory: InventoryStore) -> None:
    inventory.upsert(registration("crm", jurisdiction="eu", lease=5.0), now=100.0)

    assert inventory.find(200.0, jurisdiction="eu") == []
    assert [r.name for r in inventory.find(None, jurisdiction="eu")] == ["crm"]


def test_a_reopened_inventory_keeps_its_rows_and_first_seen(backend: Backend) -> None:
    first = backend.inventory()
    first.upsert(registration(), now=100.0)
    first.close()

    again = backend.inventory().upsert(registration(), now=200.0)

    assert again.first_seen == 100.0


def test_a_write_through_one_replica_is_read_through_another(backend: Backend) -> None:
    one, other = backend.inventory(), backend.inventory()

    one.upsert(registration("crm", jurisdiction="eu"), now=100.0)
    other.renew("crm", "a1", now=105.0)

    assert [(r.name, r.last_seen) for r in one.find(106.0, jurisdiction="EU")] == [("crm", 105.0)]


def test_an_inventory_written_by_a_newer_agentplex_is_refused_in_one_line(backend: Backend) -> None:
    backend.inventory()
    backend.edit("UPDATE schema_version SET version = 99 WHERE component = 'inventory'")

    with pytest.raises(
        ConfigError, match=r"the inventory tables in .* were written by a newer agentplex \(layout 99"
    ) as error:
        backend.inventory()
    assert "\n" not in str(error.value)


def test_a_reopened_sqlite_file_passes_the_integrity_check(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    with Inventory(path) as first:
        first.upsert(registration(), now=100.0)

    with Inventory(path) as second:
        assert second.integrity_check() == "ok"


def test_the_database_is_in_wal_mode_and_passes_the_integrity_check(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    with Inventory(path) as inventory:
        inventory.upsert(registration(), now=100.0)
        # A second connection, as another process would open it, sees the acknowledged write.
        other = sqlite3.connect(path)
        try:
            assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert other.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert other.execute("SELECT name, instance FROM agents").fetchall() == [("crm", "a1")]
        finally:
            other.close()


def test_a_closed_inventory_refuses_further_use(tmp_path: Path) -> None:
    inventory = Inventory(tmp_path / "registry.sqlite3")
    inventory.close()

    with pytest.raises(sqlite3.ProgrammingError):
        inventory.all()


_WRITER = """
import sys
from mesh.wire import Registration
from registry.inventory import Inventory

inventory = Inventory(sys.argv[1])
for i in range(1_000_000):
    inventory.upsert(Registration(name="crm", instance=f"i{i}", url="http://127.0.0.1:1/mcp"), now=float(i))
    print(i, flush=True)
"""


@pytest.mark.anyio
async def test_every_acknowledged_write_survives_kill_9_and_the_file_stays_sound(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    acknowledged = -1
    async with await anyio.open_process([sys.executable, "-c", _WRITER, str(path)]) as writer:
        assert writer.stdout is not None
        lines = BufferedByteReceiveStream(writer.stdout)
        with anyio.fail_after(10):
            while acknowledged < 50:
                acknowledged = int(await lines.receive_until(b"\n", 32))
        writer.kill()  # SIGKILL, mid-write most likely
        with anyio.fail_after(5):
            await writer.wait()

    with Inventory(path) as inventory:
        assert inventory.integrity_check() == "ok"
        stored = {record.instance for record in inventory.all()}
    assert {f"i{i}" for i in range(acknowledged + 1)} <= stored
