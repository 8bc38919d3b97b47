"""agents/kb.py: search ranks the right article first; article fetches one by id (in-process)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from mesh.runtime.loader import load_agent
from mesh.runtime.tools import build_server

pytestmark = pytest.mark.anyio

KB = Path(__file__).resolve().parents[2] / "agents" / "kb.py"


@pytest.fixture
async def kb() -> AsyncGenerator[Client]:
    async with Client(build_server(load_agent(str(KB)), peers=None)) as client:
        yield client


async def search(client: Client, query: str, limit: int = 3) -> list[dict[str, Any]]:
    result = await client.call_tool("search", {"query": query, "limit": limit})
    assert result.is_error is False
    assert result.structured_content is not None
    return result.structured_content["result"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("I was charged twice on my card", "KB-103"),
        ("forgot my password, the reset link never arrives", "KB-301"),
        ("please export my personal data under GDPR", "KB-501"),
        ("how do I get a refund for my annual plan", "KB-201"),
        ("where is my parcel? no tracking number yet", "KB-401"),
        ("API returns 429 rate limit errors", "KB-601"),
    ],
)
async def test_search_ranks_the_matching_article_first(kb: Client, query: str, expected: str) -> None:
    hits = await search(kb, query)
    assert hits[0]["id"] == expected
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


async def test_search_honours_the_limit_and_finds_nothing_for_unrelated_words(kb: Client) -> None:
    assert len(await search(kb, "invoice billing payment refund", limit=2)) == 2
    assert await search(kb, "zebra quantum banana") == []


async def test_search_is_read_only_and_idempotent(kb: Client) -> None:
    tools = {t.name: t for t in (await kb.list_tools()).tools}
    annotations = tools["search"].annotations
    assert annotations is not None
    assert annotations.read_only_hint is True
    assert annotations.idempotent_hint is True


async def test_article_returns_one_by_id_case_insensitively(kb: Client) -> None:
    result = await kb.call_tool("article", {"id": "kb-502"})
    assert result.structured_content is not None
    assert result.structured_content["title"] == "Deleting your account and data"
    assert result.structured_content["category"] == "privacy"


async def test_an_unknown_article_is_an_error_naming_the_known_ids(kb: Client) -> None:
    result = await kb.call_tool("article", {"id": "KB-999"})
    assert result.is_error is True
    text = "".join(getattr(block, "text", "") for block in result.content)
    assert "KB-999" in text
    assert "KB-101" in text
