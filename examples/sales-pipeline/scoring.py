"""scoring: scores a B2B lead (0-100) and decides whether sales should qualify or nurture it.

A transparent points table instead of a model, so every decision explains itself in the trace.
"""

from __future__ import annotations

from pydantic import BaseModel

from mesh import Agent, Context

agent = Agent(
    "scoring",
    description="Scores B2B leads and decides qualify or nurture",
    owner="sales-ops",
    jurisdiction="eu",
    data_class="confidential",
)

QUALIFY_AT = 60
"""A lead scoring at least this is qualified; below it is nurtured."""

_GOOD_FIT = frozenset({"software", "saas", "fintech", "healthcare", "logistics"})
_SENIOR = ("cto", "cio", "ceo", "vp", "head", "director", "chief")


class Score(BaseModel):
    """A lead's score, the decision taken on it, and why."""

    score: int
    decision: str
    confidence: float
    reasons: list[str]


@agent.tool(read_only=True, idempotent=True)
async def score(
    company: str, employees: int, industry: str, budget_eur: int, ctx: Context, contact_role: str = ""
) -> Score:
    """Score the lead from company size, budget, industry fit and the contact's seniority."""
    size = 30 if employees >= 1000 else 25 if employees >= 200 else 15 if employees >= 50 else 5
    budget = 30 if budget_eur >= 100_000 else 20 if budget_eur >= 20_000 else 10 if budget_eur >= 5_000 else 0
    fit = 20 if industry.lower() in _GOOD_FIT else 10 if industry.lower() in ("retail", "manufacturing") else 5
    role = contact_role.lower()
    seniority = 20 if any(word in role for word in _SENIOR) else 10 if "manager" in role else 5
    total = size + budget + fit + seniority
    reasons = [
        f"size {employees} employees: {size}",
        f"budget EUR {budget_eur:,}: {budget}",
        f"industry {industry}: {fit}",
        f"contact {contact_role or 'unknown'}: {seniority}",
    ]
    decision = "qualify" if total >= QUALIFY_AT else "nurture"
    confidence = round(min(1.0, 0.5 + abs(total - QUALIFY_AT) / 80), 2)
    ctx.decide(
        "qualification",
        choice=decision,
        reason=f"{company} scores {total} (threshold {QUALIFY_AT}): " + "; ".join(reasons),
        confidence=confidence,
        alternatives=["qualify", "nurture"],
    )
    return Score(score=total, decision=decision, confidence=confidence, reasons=reasons)
