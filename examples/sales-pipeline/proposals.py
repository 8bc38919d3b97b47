"""proposals: prices a deal and drafts a proposal. `mesh.toml` deploys it twice: EU and US desks.

Pricing: a plan by company size, a volume discount, and a deeper discount (up to 40 %) to meet
the customer's budget; whether that discount is allowed is compliance's call, not ours.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel

from mesh import Agent, Context

agent = Agent(
    "proposals",
    description="Prices deals and drafts sales proposals",
    owner="sales-team",
    jurisdiction="eu",
    data_class="confidential",
)

_PLANS = (("enterprise", 1000, 60), ("business", 200, 45), ("team", 0, 30))  # (plan, from employees, EUR/seat/month)
_NORTH_AMERICA = frozenset({"US", "CA"})


class Proposal(BaseModel):
    """A priced offer, ready for a compliance check and sign-off."""

    proposal_id: str
    desk: str
    company: str
    country: str
    plan: str
    seats: int
    list_price_eur: int
    discount_pct: int
    total_eur: int
    hosting_region: str
    summary: str


@agent.tool(idempotent=True)
async def draft(company: str, country: str, employees: int, seats: int, budget_eur: int, ctx: Context) -> Proposal:
    """A one-year proposal for `seats` seats, discounted towards `budget_eur` where possible."""
    plan, _, per_seat = next(p for p in _PLANS if employees >= p[1])
    list_price = seats * per_seat * 12
    discount = 15 if seats >= 200 else 5 if seats >= 50 else 0
    if list_price * (100 - discount) // 100 > budget_eur:
        needed = 100 - (budget_eur * 100) // max(list_price, 1)
        discount = min(40, max(discount, needed))
    total = list_price * (100 - discount) // 100
    region = "us" if country.upper() in _NORTH_AMERICA else "eu"
    digest = hashlib.sha256(f"{company}|{seats}|{plan}".encode()).hexdigest()[:6].upper()
    ctx.decide(
        "pricing",
        choice=f"{discount}% off",
        reason=f"list EUR {list_price:,}, budget EUR {budget_eur:,}",
        alternatives=["0% off", "volume discount", "budget match"],
    )
    return Proposal(
        proposal_id=f"P-{digest}",
        desk=ctx.agent,
        company=company,
        country=country.upper(),
        plan=plan,
        seats=seats,
        list_price_eur=list_price,
        discount_pct=discount,
        total_eur=total,
        hosting_region=region,
        summary=f"{seats} {plan} seats for {company}, 12 months, EUR {total:,} ({discount}% off), hosted in {region}",
    )
