"""`GET /api/agents` on both backends: the same bytes as validating every row, and no wait on a stuck store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from pydantic import TypeAdapter

from mesh.testing.gate import Gate
from mesh.wire import AgentRecord, Governance, Registration, ToolInfo
from registry.inventory_rows import RowReader, record_from_row
from registry.stores import InventoryStore
from tests.unit.store_backends import BACKENDS, Backend, opened
from tests.unit.test_inventory_api import NOW, Registry, auth, post, running_registry

pytestmark = pytest.mark.anyio

_records = TypeAdapter(list[AgentRecord])
_COLUMNS = (
    "name, instance, url, version, {tools}, {metadata}, lease_seconds, authenticated, first_seen, last_seen, expires_at"
)


@dataclass
class Setup:
    backend: Backend
    registry: Registry


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with opened(request, tmp_path) as backend:
        yield backend


@pytest.fixture
async def setup(backend: Backend) -> AsyncIterator[Setup]:
    async with running_registry(backend.inventory()) as registry:
        yield Setup(backend, registry)


def validated(backend: Backend, *, alive_at: float | None, name: str | None = None) -> bytes:
    """The listing as validating every stored row (`record_from_row`) and dumping the records gives it."""
    json_text = ("tools::text", "metadata::text") if backend.kind == "postgresql" else ("tools", "metadata")
    columns = _COLUMNS.format(tools=json_text[0], metadata=json_text[1])
    rows = backend.rows(f"SELECT {columns} FROM agents ORDER BY name, instance")
    chosen = [row for row in rows if (alive_at is None or row[-1] > alive_at) and name in (None, row[0])]
    return _records.dump_json([record_from_row(row) for row in chosen])


def tools(*names: str, note: str = "") -> list[ToolInfo]:
    return [
        ToolInfo(
            name=name,
            description=f'Find "{name}" \\ in the CRM — naïve ✓ {note}\u2028\t',
            input_schema={"type": "object", "properties": {"q": {"type": "string", "maxLength": 1e3}}},
            output_schema={"type": "object"} if name.startswith("get") else None,
            annotations={"readOnlyHint": True, "title": "Ünïcode"},
            approval=name == "refund",
        )
        for name in names
    ]


def registration(name: str, instance: str, toolset: list[ToolInfo], lease: float = 7.25, **meta: Any) -> Registration:
    return Registration(
        name=name,
        instance=instance,
        url=f"http://127.0.0.1:9000/{name}/{instance}/mcp",
        version="" if name == "bare" else "2.0.1-β",
        tools=toolset,
        metadata=Governance.model_validate(meta),
        lease_seconds=lease,
        authenticated=name != "bare",
    )


async def test_a_listing_is_byte_for_byte_what_validating_every_row_gives(setup: Setup) -> None:
    registry, backend = setup.registry, setup.backend
    shared = tools("lookup", "get_account", "refund")
    registrations = [
        registration("crm", "a1", shared, owner="sales", jurisdiction="EU", data_class="confidential"),
        registration("crm", "a2", shared, owner="sales", jurisdiction="EU", data_class="confidential"),
        registration("kb", "k1", tools("search", note="ü"), team={"lead": "Zoë", "size": 3}, tier=1.5),
        registration("bare", "b1", []),
        registration("ledger", "l1", tools("refund"), lease=0.5, owner="finance"),
    ]
    for reg in registrations:
        registry.clock.now = NOW + 0.1 * len(reg.instance)
        assert (await post(registry, reg, auth(reg.name))).status_code == 200
    first = await registry.http.get("/api/agents", params={"all": "1"})
    assert first.content == validated(backend, alive_at=None)

    registry.clock.now = NOW + 3.3
    assert (await registry.http.put("/api/agents/crm/a2/lease", headers=auth("crm"))).status_code == 200
    # A new registration of a known instance replaces its tools: neither its parse nor its JSON may be served.
    await post(registry, registration("kb", "k1", tools("search", "get_page")), auth("kb"))
    everything = await registry.http.get("/api/agents", params={"all": "1"})
    alive = await registry.http.get("/api/agents")
    filtered = await registry.http.get("/api/agents", params={"jurisdiction": "eu", "tool": "refund"})

    assert everything.content == validated(backend, alive_at=None) != first.content
    assert alive.content == validated(backend, alive_at=registry.clock.now)
    assert [r["instance"] for r in alive.json()] == ["b1", "a1", "a2", "k1"]  # ledger's lease lapsed
    assert [r["instance"] for r in filtered.json()] == ["a1", "a2"]
    assert filtered.content == validated(backend, alive_at=registry.clock.now, name="crm")
    assert _records.dump_json(registry.inventory.find(None)) == everything.content  # the records say the same


def test_the_row_reader_gives_what_validating_the_row_gives_also_after_its_cache_let_a_text_go() -> None:
    reader = RowReader(size=2)
    texts = [TypeAdapter(list[ToolInfo]).dump_json(tools(f"t{n}")).decode() for n in range(3)]
    metadata = '{"owner":"o","x":[1,{"y":null}]}'
    url = "http://127.0.0.1:1/mcp"
    rows = [(f"agent{n}", "i1", url, "1", text, metadata, 10.0, 1, 1.5, 2.5, 12.5) for n, text in enumerate(texts)]
    rows.append(rows[0])  # its tools text was let go to keep two

    for row in rows:
        assert reader.record(row) == record_from_row(row)
    assert reader.listing(rows) == reader.listing(rows) == _records.dump_json([record_from_row(row) for row in rows])
    assert reader.listing([]) == b"[]"
    assert reader.record(rows[0]).tools is not reader.record(rows[0]).tools  # each record has a list of its own


async def test_a_heartbeat_stuck_in_the_store_holds_up_no_other_request(backend: Backend) -> None:
    gate = Gate()
    async with running_registry(StuckRenewals(backend.inventory(), gate)) as registry:
        await post(registry, registration("crm", "a1", tools("lookup")), auth("crm"))
        answers: dict[str, httpx2.Response] = {}

        async def heartbeat() -> None:
            answers["lease"] = await registry.http.put("/api/agents/crm/a1/lease", headers=auth("crm"))

        gate.close()
        async with anyio.create_task_group() as tg:
            tg.start_soon(heartbeat)
            try:
                await gate.held()
                with anyio.fail_after(10):
                    document = await registry.http.get("/openapi.json")
                    listing = await registry.http.get("/api/agents")
                    assert "lease" not in answers  # the heartbeat is still stuck in the store
                    assert (document.status_code, listing.status_code) == (200, 200)
                    assert [r["name"] for r in listing.json()] == ["crm"]
            finally:
                gate.open()
        assert answers["lease"].status_code == 200


class StuckRenewals:
    """An inventory whose lease renewals wait at `gate` before reaching the real store (a database that hangs)."""

    def __init__(self, store: InventoryStore, gate: Gate) -> None:
        self._store = store
        self._gate = gate

    def renew(self, name: str, instance: str, now: float) -> AgentRecord | None:
        self._gate.through()
        return self._store.renew(name, instance, now)

    def upsert(self, reg: Registration, now: float) -> AgentRecord:
        return self._store.upsert(reg, now)

    def remove(self, name: str, instance: str) -> bool:
        return self._store.remove(name, instance)

    def alive(self, now: float) -> list[AgentRecord]:
        return self._store.alive(now)

    def all(self) -> list[AgentRecord]:
        return self._store.all()

    def count(self, now: float) -> int:
        return self._store.count(now)

    def find(
        self,
        now: float | None,
        *,
        tool: str | None = None,
        owner: str | None = None,
        jurisdiction: str | None = None,
        data_class: str | None = None,
        name: str | None = None,
    ) -> list[AgentRecord]:
        return self._store.find(
            now, tool=tool, owner=owner, jurisdiction=jurisdiction, data_class=data_class, name=name
        )

    def find_json(
        self,
        now: float | None,
        *,
        tool: str | None = None,
        owner: str | None = None,
        jurisdiction: str | None = None,
        data_class: str | None = None,
        name: str | None = None,
    ) -> bytes:
        return self._store.find_json(
            now, tool=tool, owner=owner, jurisdiction=jurisdiction, data_class=data_class, name=name
        )

    def close(self) -> None:
        self._store.close()
