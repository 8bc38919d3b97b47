"""triage: reads a support ticket, checks the CRM and the knowledge base, and routes it.

A confident route gets a drafted reply (drafter); below `ESCALATE_BELOW` the ticket goes to
a human (human-desk, whose `escalate` needs a human's approval). Every choice is a decision
in the trace. Deterministic keyword scoring: no model, no network.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from mesh import Agent, ApprovalDenied, ApprovalRequired, Context, DeadlineExceeded, PolicyDenied

agent = Agent(
    "triage",
    description="Reads support tickets, routes them, drafts a reply or escalates to a human",
    owner="support-team",
    jurisdiction="eu",
    data_class="confidential",
)

ESCALATE_BELOW = 0.6
"""Below this confidence a ticket goes to a human instead of getting a drafted reply."""

APPROVAL_WAIT = 180.0
"""Seconds an escalation may wait for a person to approve it (within the caller's own budget)."""

ROUTES: dict[str, tuple[str, ...]] = {
    "billing": ("invoice", "charge", "charged", "billing", "payment", "card", "vat", "twice", "price"),
    "refunds": ("refund", "money back", "reimburse", "cancel my"),
    "account": ("password", "log in", "login", "sign in", "two-factor", "2fa", "locked", "reset"),
    "shipping": ("delivery", "parcel", "package", "shipping", "tracking", "damaged", "arrived"),
    "privacy": ("gdpr", "personal data", "export", "erase", "delete my", "privacy"),
    "technical": ("api", "error", "429", "rate limit", "bug", "crash", "timeout"),
}


class Outcome(BaseModel):
    """What happened to one ticket."""

    ticket_id: str
    customer: str | None
    route: str
    confidence: float
    articles: list[str]
    draft: dict[str, Any] | None = None
    escalated: bool = False
    escalation: str | None = None
    analytics: str = ""


@agent.tool()
async def handle(ticket_id: str, sender: str, subject: str, body: str, ctx: Context) -> Outcome:
    """Route a ticket: draft a reply when confident, escalate to a human when not."""
    account = await ctx.call("crm", "lookup", {"email": sender})
    text = f"{subject}\n{body}"
    articles: list[dict[str, Any]] = await ctx.call("kb", "search", {"query": text, "limit": 3})
    route, confidence, reason, alternatives = classify(text, known_customer=account is not None)
    if articles and articles[0]["category"] == route:
        confidence = min(1.0, round(confidence + 0.1, 2))
        reason += f"; top article {articles[0]['id']} agrees"
    ctx.decide("route", choice=route, reason=reason, confidence=confidence, alternatives=alternatives)
    outcome = Outcome(
        ticket_id=ticket_id,
        customer=account["name"] if account else None,
        route=route,
        confidence=confidence,
        articles=[a["id"] for a in articles],
        analytics=await _share_metrics(ctx, ticket_id, route),
    )
    if confidence < ESCALATE_BELOW:
        why = f"confidence {confidence:.2f} is below {ESCALATE_BELOW}"
        ctx.decide("escalation", choice="human-desk", reason=why, confidence=confidence, alternatives=["drafter"])
        outcome.escalated = True
        try:
            case = await ctx.call(
                "human-desk",
                "escalate",
                {"ticket_id": ticket_id, "subject": subject, "reason": why, "route": route, "customer": sender},
                timeout=APPROVAL_WAIT,
            )
            outcome.escalation = f"{case['case_id']} ({case['queue']})"
        except (ApprovalRequired, ApprovalDenied, DeadlineExceeded) as exc:
            outcome.escalation = f"not accepted by a person: {exc}"
    else:
        outcome.draft = await ctx.call(
            "drafter",
            "draft",
            {"ticket_id": ticket_id, "customer": outcome.customer, "subject": subject, "article_ids": outcome.articles},
        )
    if account:
        note = f"{ticket_id} routed to {route} ({confidence:.2f})" + (", escalated" if outcome.escalated else "")
        await ctx.call("crm", "log_interaction", {"email": sender, "note": note, "channel": "support"})
    return outcome


def classify(text: str, *, known_customer: bool) -> tuple[str, float, str, list[str]]:
    """(route, confidence, reason, other routes considered) from keyword hits in `text`."""
    lowered = text.lower()
    hits = {
        route: [k for k in keywords if re.search(rf"\b{re.escape(k)}\b", lowered)] for route, keywords in ROUTES.items()
    }
    ranked = sorted(hits, key=lambda r: (-len(hits[r]), r))
    best = ranked[0]
    total = sum(len(h) for h in hits.values())
    if total == 0:
        return "general", 0.2, "no route keyword found", list(ROUTES)
    share = len(hits[best]) / total
    strength = min(1.0, len(hits[best]) / 3)
    confidence = 0.5 * share + 0.5 * strength - (0 if known_customer else 0.1)
    reason = f"keywords {', '.join(hits[best])}" + ("" if known_customer else "; sender is not a customer")
    return best, round(max(confidence, 0.0), 2), reason, [r for r in ranked[1:] if hits[r]]


async def _share_metrics(ctx: Context, ticket_id: str, route: str) -> str:
    """Tell the (US-hosted) analytics service about the ticket, if the policy lets us."""
    try:
        await ctx.call("analytics", "record", {"event": "ticket.routed", "key": ticket_id, "label": route})
    except PolicyDenied as exc:
        ctx.decide("fallback", choice="skip analytics", reason=str(exc), alternatives=["analytics"])
        return f"skipped: {exc}"
    return "recorded"
