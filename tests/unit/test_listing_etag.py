"""The conditional listing: `GET /api/agents` tagged over its records but their lease times, 304 when unchanged."""

from __future__ import annotations

import httpx2
import pytest
from pydantic import TypeAdapter

from mesh.peers.directory import Instance, PeerDirectory
from mesh.registry_client import RegistryClient
from mesh.wire import LEASE_FLOOR_HEADER, AgentRecord, ToolInfo
from registry.inventory_rows import Listing, Row, RowReader, record_from_row
from tests.unit.test_inventory_api import NOW, Registry, auth, post, registration
from tests.unit.test_inventory_api import registry as registry  # the fixture, on both backends
from tests.unit.test_registry_client import URL, token_of

pytestmark = pytest.mark.anyio

TOOLS = (
    '[{"name":"lookup","description":null,"input_schema":{},"output_schema":null,"annotations":{},"approval":false}]'
)


def row(instance: str = "a1", *, last: float = NOW, lease: float = 10.0, version: str = "1.0") -> Row:
    return ("crm", instance, "http://127.0.0.1:9000/crm/mcp", version, TOOLS, "{}", lease, 1, NOW, last, last + lease)


async def listed(registry: Registry, tag: str | None = None, **params: str) -> httpx2.Response:
    headers = {"if-none-match": tag} if tag is not None else None
    return await registry.http.get("/api/agents", params=params, headers=headers)


# --- the tag itself ---


def test_the_tag_ignores_lease_times_and_follows_everything_else() -> None:
    reader = RowReader()
    first = reader.listing([row("a1"), row("a2")])
    renewed = reader.listing([row("a1", last=NOW + 3), row("a2", last=NOW + 4)])
    upgraded = reader.listing([row("a1", last=NOW + 3, version="1.1"), row("a2", last=NOW + 4)])
    fewer = reader.listing([row("a1", last=NOW + 3)])

    assert isinstance(first, Listing)
    assert bytes(first) != bytes(renewed)
    assert first.tag == renewed.tag
    assert len({first.tag, upgraded.tag, fewer.tag}) == 3
    assert (first.lease_floor, renewed.lease_floor) == (NOW + 10, NOW + 13)


def test_the_listing_bytes_are_the_records_json_and_an_empty_one_has_no_floor() -> None:
    reader = RowReader()
    body = reader.listing([row("a1", last=NOW + 1)])

    (record,) = [AgentRecord.model_validate(r) for r in httpx2.Response(200, content=body).json()]
    assert (record.instance, record.expires_at, record.tools[0]) == ("a1", NOW + 11, ToolInfo(name="lookup"))
    empty = reader.listing([])
    assert (bytes(empty), empty.lease_floor) == (b"[]", None)
    assert empty.tag != body.tag


def test_a_row_renewed_reuses_its_json_and_stays_byte_for_byte_what_a_full_dump_gives() -> None:
    reader = RowReader()
    times = [NOW, NOW + 0.1, NOW + 1 / 3, 1_700_000_123, NOW + 123456.789012345, 1e16, 0.5]
    for last in times:
        spliced = bytes(reader.listing([row("a1", last=last)]))
        fresh = bytes(RowReader().listing([row("a1", last=last)]))
        expected = b"[" + TypeAdapter(AgentRecord).dump_json(record_from_row(row("a1", last=last))) + b"]"
        assert spliced == fresh == expected


# --- the registry's answers ---


async def test_an_unchanged_listing_answers_304_without_a_body_after_heartbeats(registry: Registry) -> None:
    await post(registry, registration("crm"), auth("crm"))
    await post(registry, registration("kb"), auth("kb"))
    first = await listed(registry)
    tag = first.headers["etag"]
    registry.clock.now = NOW + 4
    await registry.http.put("/api/agents/crm/a1/lease", headers=auth("crm"))

    again = await listed(registry, tag)

    assert first.status_code == 200
    assert [r["name"] for r in first.json()] == ["crm", "kb"]
    assert float(first.headers[LEASE_FLOOR_HEADER]) == NOW + 10
    assert (again.status_code, again.content) == (304, b"")
    assert again.headers["etag"] == tag
    assert float(again.headers[LEASE_FLOOR_HEADER]) == NOW + 10  # kb's lease, the earliest; crm's moved on
    weak = await listed(registry, f'"other", W/{tag}')
    assert weak.status_code == 304


async def test_a_registration_a_departure_or_a_change_answers_200_with_a_new_tag(registry: Registry) -> None:
    await post(registry, registration("crm"), auth("crm"))
    tags = [(await listed(registry)).headers["etag"]]

    await post(registry, registration("kb"), auth("kb"))
    joined = await listed(registry, tags[-1])
    tags.append(joined.headers["etag"])
    await post(registry, registration("kb", jurisdiction="eu"), auth("kb"))
    changed = await listed(registry, tags[-1])
    tags.append(changed.headers["etag"])
    await registry.http.delete("/api/agents/kb/a1", headers=auth("kb"))
    left = await listed(registry, tags[-1])
    tags.append(left.headers["etag"])

    assert [r.status_code for r in (joined, changed, left)] == [200, 200, 200]
    assert [r["name"] for r in left.json()] == ["crm"]
    assert [r["metadata"].get("jurisdiction") for r in changed.json()] == [None, "eu"]
    assert len(set(tags[1:])) == 3


async def test_a_lapsed_lease_drops_the_record_and_so_changes_the_tag(registry: Registry) -> None:
    await post(registry, registration("crm"), auth("crm"))
    await post(registry, registration("kb"), auth("kb"))
    tag = (await listed(registry)).headers["etag"]
    registry.clock.now = NOW + 6
    await registry.http.put("/api/agents/kb/a1/lease", headers=auth("kb"))

    registry.clock.now = NOW + 11  # crm's lease (until NOW + 10) has lapsed, kb's holds
    after = await listed(registry, tag)

    assert after.status_code == 200
    assert [r["name"] for r in after.json()] == ["kb"]
    assert after.headers["etag"] != tag
    assert float(after.headers[LEASE_FLOOR_HEADER]) == NOW + 16


async def test_a_filtered_listing_is_tagged_over_its_own_records(registry: Registry) -> None:
    await post(registry, registration("crm", jurisdiction="eu"), auth("crm"))
    await post(registry, registration("kb", jurisdiction="us"), auth("kb"))
    eu = await listed(registry, jurisdiction="eu")
    everyone = await listed(registry)

    assert eu.headers["etag"] != everyone.headers["etag"]
    assert (await listed(registry, eu.headers["etag"], jurisdiction="eu")).status_code == 304
    assert (await listed(registry, eu.headers["etag"])).status_code == 200


async def test_a_listing_with_lapsed_records_is_never_conditional(registry: Registry) -> None:
    await post(registry, registration("crm"), auth("crm"))
    tag = (await listed(registry)).headers["etag"]

    everything = await listed(registry, tag, all="1")
    star = await listed(registry, "*", all="1")

    assert (everything.status_code, star.status_code) == (200, 200)
    assert "etag" not in everything.headers
    assert [r["name"] for r in everything.json()] == ["crm"]


# --- the client ---


async def test_the_client_keeps_its_tag_and_hears_a_304_as_the_same_records_leased_longer(registry: Registry) -> None:
    transport = httpx2.ASGITransport(registry.app)
    async with RegistryClient(URL, token_factory=lambda: token_of("crm"), transport=transport) as client:
        await post(registry, registration("crm"), auth("crm"))
        first = await client.live_agents()
        registry.clock.now = NOW + 4
        await registry.http.put("/api/agents/crm/a1/lease", headers=auth("crm"))
        same = await client.live_agents(tag=first.tag)
        await post(registry, registration("kb"), auth("kb"))
        changed = await client.live_agents(tag=first.tag)

    assert first.records is not None
    assert [r.name for r in first.records] == ["crm"]
    assert (first.tag is not None, first.lease_floor) == (True, NOW + 10)
    assert (same.records, same.tag, same.lease_floor) == (None, first.tag, NOW + 14)
    assert changed.records is not None
    assert [r.name for r in changed.records] == ["crm", "kb"]
    assert changed.tag not in (None, first.tag)


def test_an_unchanged_listings_floor_raises_only_the_registrys_leases_and_never_lowers_one() -> None:
    directory = PeerDirectory()
    directory.sync("registry", [Instance("kb", "a", "http://a/mcp", lease_until=100.0)])
    directory.sync("registry", [Instance("kb", "a", "http://a/mcp", lease_until=100.0),
                                Instance("kb", "b", "http://b/mcp", lease_until=300.0)])  # fmt: skip
    directory.report("mdns", Instance("kb", "c", "http://c/mcp", lease_until=50.0))

    directory.extend_leases("registry", 200.0)

    leases = {inst.instance: inst.lease_until for inst in directory.all()}
    assert leases == {"a": 200.0, "b": 300.0, "c": 50.0}
    raised = directory.get("kb", "a")
    assert raised is not None
    assert raised.healthy(now=150.0)
