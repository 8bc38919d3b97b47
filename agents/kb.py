"""kb: a small support knowledge base. `search(query, limit)` ranks articles with BM25; `article(id)`.

Its articles are resources too (`kb://articles/{id}`, and the index at `kb://articles`), and the
prompt `answer_ticket` drafts a reply from the articles that match a ticket. Deterministic and
offline: the articles are built in. Run it with `mesh run agents/kb.py`.
"""

from __future__ import annotations

import math
import re
from collections import Counter

from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from pydantic import BaseModel

from mesh import Agent

agent = Agent(
    "kb",
    description="Support knowledge base: search help articles, fetch one by id",
    owner="support-team",
    jurisdiction="eu",
    data_class="public",
)


class Article(BaseModel):
    """A help article; `score` is its relevance to the query (0 when fetched by id)."""

    id: str
    title: str
    category: str
    body: str
    score: float = 0.0


_ARTICLES = [
    Article(id="KB-101", title="Understanding your invoice", category="billing",
            body="Each invoice lists your plan, seats, taxes and the billing period. Download past invoices "
            "as PDF from Settings > Billing. VAT is added for EU customers unless a VAT ID is on file."),
    Article(id="KB-102", title="Updating your payment method or card", category="billing",
            body="Change the credit card or switch to invoice payment in Settings > Billing > Payment method. "
            "A failed charge is retried after three days; the account stays active for fourteen days."),
    Article(id="KB-103", title="Charged twice or wrong amount", category="billing",
            body="A duplicate charge is usually a pending authorisation that drops off within five business "
            "days. If both charges settle, we refund the duplicate charge automatically."),
    Article(id="KB-201", title="Requesting a refund", category="refunds",
            body="Annual plans can be refunded pro rata within 30 days of renewal. Monthly plans are not "
            "refunded, but you can cancel any time. Refunds reach your card in 5-10 business days."),
    Article(id="KB-202", title="Refund status and timelines", category="refunds",
            body="Once a refund is issued you get an email with its reference. Banks take 5-10 business days "
            "to show the refund on your statement."),
    Article(id="KB-301", title="Resetting your password", category="account",
            body="Use 'Forgot password' on the sign-in page; the reset link is valid for one hour. If the "
            "email does not arrive, check spam or ask your admin whether SSO is enforced."),
    Article(id="KB-302", title="Two-factor authentication and lost devices", category="account",
            body="Sign in with a backup code if you lost your phone. Admins can reset two-factor "
            "authentication for a user from the Members page. Locked accounts unlock after 30 minutes."),
    Article(id="KB-401", title="Shipping times and tracking", category="shipping",
            body="Hardware ships within two business days. The tracking number is emailed when the parcel "
            "leaves the warehouse. EU delivery takes 3-5 days, US delivery 5-8 days."),
    Article(id="KB-402", title="Damaged or missing delivery", category="shipping",
            body="Report a damaged or missing parcel within 14 days with a photo of the package. We ship "
            "a replacement at no cost once the carrier confirms the claim."),
    Article(id="KB-501", title="Exporting your personal data (GDPR)", category="privacy",
            body="Under GDPR article 15 you can request a copy of your personal data. Go to Settings > "
            "Privacy > Export data; the archive is ready within 72 hours and the link expires after 7 days."),
    Article(id="KB-502", title="Deleting your account and data", category="privacy",
            body="Account deletion erases personal data within 30 days, as GDPR article 17 requires. "
            "Invoices are kept for ten years for tax law. Deletion cannot be undone."),
    Article(id="KB-601", title="API rate limits and errors", category="technical",
            body="The API allows 600 requests per minute per token. A 429 error means you hit the rate "
            "limit: retry after the Retry-After header. 5xx errors are retried with backoff."),
]  # fmt: skip

_BY_ID = {a.id: a for a in _ARTICLES}
_STOP = frozenset(
    ("a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how", "i", "in", "is",
     "it", "my", "of", "on", "or", "the", "to", "we", "what", "when", "where", "why", "with", "you", "your")
)  # fmt: skip
_K1, _B = 1.2, 0.75


@agent.tool(read_only=True, idempotent=True)
async def search(query: str, limit: int = 3) -> list[Article]:
    """The `limit` articles most relevant to `query` (BM25 over title, category and body), best first."""
    terms = set(tokens(query))
    scored = [(bm25(terms, doc), a) for a, doc in zip(_ARTICLES, _DOCS, strict=True)]
    ranked = sorted(((s, a) for s, a in scored if s > 0), key=lambda pair: (-pair[0], pair[1].id))
    return [a.model_copy(update={"score": round(s, 3)}) for s, a in ranked[: max(limit, 0)]]


@agent.tool(read_only=True, idempotent=True)
async def article(id: str) -> Article:
    """The article with this id (`KB-101`); an error naming the known ids if there is none."""
    found = _BY_ID.get(id.strip().upper())
    if found is None:
        raise ToolError(f"no article {id!r}; known: {', '.join(_BY_ID)}")
    return found


@agent.resource("kb://articles", name="articles", title="All help articles", mime_type="text/markdown")
async def article_index() -> str:
    """Every article's id, title and category, one per line: what `kb://articles/{id}` can read."""
    return "\n".join(f"- {a.id} [{a.category}] {a.title}" for a in _ARTICLES)


@agent.resource("kb://articles/{id}", name="article", title="A help article", mime_type="text/markdown")
async def article_resource(id: str) -> str:
    """The article with this id (`kb://articles/KB-101`) as Markdown: title, category, body."""
    found = _BY_ID.get(id.strip().upper())
    if found is None:
        raise ResourceError(f"no article {id!r}; known: {', '.join(_BY_ID)}")
    return markdown(found)


@agent.prompt(title="Answer a support ticket")
async def answer_ticket(ticket: str) -> str:
    """A reply to `ticket` drafted from the help articles that match it best, each cited by id."""
    hits = await search(ticket, 3)
    sources = "\n\n".join(markdown(a) for a in hits) or "(no article matches this ticket)"
    return (
        "You answer customer support tickets. Use only the help articles below; cite each one you use by "
        "its id in brackets, like [KB-101]. If they do not answer the ticket, say that a person will follow up.\n\n"
        f"Ticket:\n{ticket.strip()}\n\nHelp articles:\n\n{sources}"
    )


def markdown(article: Article) -> str:
    """An article as Markdown: a heading with its id and title, its category, its body."""
    return f"# {article.id}: {article.title}\n\n*{article.category}*\n\n{article.body}"


def tokens(text: str) -> list[str]:
    """Lowercase word stems without stop words: `Refunds` -> `refund`, `charged` -> `charg`."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return [_stem(w) for w in words if w not in _STOP]


def bm25(terms: set[str], doc: Counter[str]) -> float:
    """BM25 score of a document (term counts) for a set of query terms."""
    length = sum(doc.values())
    score = 0.0
    for term in terms:
        tf = doc.get(term, 0)
        if tf:
            idf = math.log(1 + (len(_DOCS) - _DF[term] + 0.5) / (_DF[term] + 0.5))
            score += idf * tf * (_K1 + 1) / (tf + _K1 * (1 - _B + _B * length / _AVG_LEN))
    return score


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


# Title and category count twice: a word in the title says more than one in the body.
_DOCS = [Counter(tokens(f"{a.title} {a.title} {a.category} {a.category} {a.body}")) for a in _ARTICLES]
_DF = Counter(term for doc in _DOCS for term in doc)
_AVG_LEN = sum(sum(d.values()) for d in _DOCS) / len(_DOCS)
