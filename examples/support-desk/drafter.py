"""drafter: writes a reply to a ticket from knowledge-base articles (fetched from kb).

Deterministic templating, no model: a greeting, one paragraph per article, a sign-off.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from mesh import Agent, Context

agent = Agent(
    "drafter",
    description="Drafts replies to support tickets from knowledge-base articles",
    owner="support-team",
    jurisdiction="eu",
    data_class="confidential",
)


class Draft(BaseModel):
    """A reply ready for review."""

    ticket_id: str
    subject: str
    body: str
    sources: list[str]


@agent.tool(read_only=True)
async def draft(
    ticket_id: str, subject: str, article_ids: list[str], ctx: Context, customer: str | None = None
) -> Draft:
    """A reply to the ticket built from the given articles (at most two are quoted)."""
    articles: list[dict[str, Any]] = [await ctx.call("kb", "article", {"id": i}) for i in article_ids[:2]]
    greeting = f"Hello {customer.split()[0]}," if customer else "Hello,"
    paragraphs = [f"{a['title']}: {a['body']} ({a['id']})" for a in articles]
    if not paragraphs:
        paragraphs = ["Thank you for reaching out. A specialist will look into this and reply within one day."]
    body = "\n\n".join([greeting, "thanks for contacting us.", *paragraphs, "Kind regards,\nThe support team"])
    ctx.decide(
        "template",
        choice="from-articles" if articles else "holding-reply",
        reason=f"{len(articles)} article(s) quoted",
        alternatives=["from-articles", "holding-reply"],
    )
    return Draft(ticket_id=ticket_id, subject=f"Re: {subject}", body=body, sources=[a["id"] for a in articles])
