"""agents/kb.py: search ranks the right article first; article fetches one by id (in-process)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

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


async def test_each_article_is_a_resource_read_by_id_and_the_index_lists_them_all(kb: Client) -> None:
    templates = [t.uri_template for t in (await kb.list_resource_templates()).resource_templates]
    [index] = (await kb.list_resources()).resources
    listed = (await kb.read_resource("kb://articles")).contents[0].model_dump()["text"]
    [content] = (await kb.read_resource("kb://articles/kb-103")).contents
    assert templates == ["kb://articles/{id}"]
    assert (index.uri, index.mime_type) == ("kb://articles", "text/markdown")
    assert len(listed.splitlines()) == 12
    assert "- KB-601 [technical] API rate limits and errors" in listed
    assert content.mime_type == "text/markdown"
    assert content.model_dump()["text"].startswith("# KB-103: Charged twice or wrong amount\n\n*billing*\n\n")


async def test_an_unknown_article_resource_is_an_error_naming_the_known_ids(kb: Client) -> None:
    with pytest.raises(MCPError, match="no article 'KB-999'; known: KB-101"):
        await kb.read_resource("kb://articles/KB-999")


async def test_the_answer_ticket_prompt_carries_the_best_matching_articles(kb: Client) -> None:
    [prompt] = (await kb.list_prompts()).prompts
    rendered = await kb.get_prompt("answer_ticket", {"ticket": "I was charged twice on my card"})
    [message] = rendered.messages
    text = message.content.model_dump()["text"]
    assert (prompt.name, prompt.title) == ("answer_ticket", "Answer a support ticket")
    assert [(a.name, a.required) for a in prompt.arguments or []] == [("ticket", True)]
    assert "I was charged twice on my card" in text
    assert text.split("Help articles:\n\n")[1].startswith("# KB-103: Charged twice")  # the best match first
    assert "cite each one you use" in text
