"""agents/crm.py: seeded accounts, interactions and leads in SQLite under MESH_HOME (in-process)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from mesh.config import mesh_paths
from mesh.runtime.loader import load_agent
from mesh.runtime.tools import build_server

pytestmark = pytest.mark.anyio

CRM = Path(__file__).resolve().parents[2] / "agents" / "crm.py"


@pytest.fixture
async def crm(mesh_env: dict[str, str]) -> AsyncGenerator[Client]:
    async with Client(build_server(load_agent(str(CRM)), peers=None)) as client:
        yield client


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    result = await client.call_tool(tool, arguments)
    assert result.is_error is False, result.content
    assert result.structured_content is not None
    data = result.structured_content
    return data["result"] if set(data) == {"result"} else data


async def test_a_seeded_account_is_found_by_email_in_any_case(crm: Client) -> None:
    account = await call(crm, "lookup", email=" Ada@Example.com ")
    assert account["name"] == "Ada Lovelace"
    assert account["country"] == "DE"
    assert account["tier"] == "enterprise"


async def test_an_unknown_email_is_null(crm: Client) -> None:
    assert await call(crm, "lookup", email="nobody@example.org") is None


async def test_the_database_lives_in_the_mesh_data_directory(crm: Client) -> None:
    await call(crm, "lookup", email="ada@example.com")
    assert (mesh_paths().data_dir / "crm.sqlite3").is_file()


async def test_logged_interactions_come_back_newest_first(crm: Client) -> None:
    first = await call(crm, "log_interaction", email="marie@example.fr", note="asked about VAT")
    second = await call(crm, "log_interaction", email="marie@example.fr", note="sent invoice", channel="email")
    history = await call(crm, "interactions", email="marie@example.fr")
    assert second["id"] > first["id"]
    assert [i["note"] for i in history] == ["sent invoice", "asked about VAT"]
    assert history[0]["channel"] == "email"


async def test_upserting_a_lead_twice_updates_it(crm: Client) -> None:
    created = await call(crm, "upsert_lead", email="buyer@acme.io", company="Acme", country="de", score=40)
    updated = await call(crm, "upsert_lead", email="buyer@acme.io", company="Acme", score=75, stage="qualified")
    assert created["stage"] == "new"
    assert created["country"] == "DE"
    assert (updated["score"], updated["stage"]) == (75, "qualified")


async def test_lookup_is_read_only_and_log_interaction_is_not_idempotent(crm: Client) -> None:
    tools = {t.name: t.annotations for t in (await crm.list_tools()).tools}
    lookup, log = tools["lookup"], tools["log_interaction"]
    assert lookup is not None
    assert log is not None
    assert (lookup.read_only_hint, lookup.idempotent_hint) == (True, True)
    assert (log.read_only_hint, log.idempotent_hint) == (False, False)


async def test_the_crm_declares_its_data_confidential() -> None:
    assert load_agent(str(CRM)).data_class == "confidential"
