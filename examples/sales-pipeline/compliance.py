"""compliance: checks a proposal against export, data-residency and discount rules; pass or fail.

Each rule is one line of reasoning in the result and in the trace's `compliance` decision.
"""

from __future__ import annotations

from pydantic import BaseModel

from mesh import Agent, Context

agent = Agent(
    "compliance",
    description="Checks proposals against export, data-residency and discount rules",
    owner="legal-team",
    jurisdiction="eu",
    data_class="confidential",
)

EMBARGOED = frozenset({"CU", "IR", "KP", "RU", "SY"})
EU = frozenset({"AT", "BE", "DE", "DK", "ES", "FI", "FR", "IE", "IT", "NL", "PL", "PT", "SE"})
MAX_DISCOUNT = 30
"""Deeper discounts need the CFO, outside this pipeline."""


class Check(BaseModel):
    """One rule applied to one proposal."""

    rule: str
    passed: bool
    reason: str


class Verdict(BaseModel):
    """Whether the proposal may go to sign-off, with every rule's result."""

    passed: bool
    checks: list[Check]


@agent.tool(read_only=True, idempotent=True)
async def check(country: str, hosting_region: str, discount_pct: int, total_eur: int, ctx: Context) -> Verdict:
    """Apply the export, data-residency and discount rules to a proposal."""
    country = country.upper()
    checks = [
        Check(
            rule="export-control",
            passed=country not in EMBARGOED,
            reason=f"{country} is {'under embargo' if country in EMBARGOED else 'not embargoed'}",
        ),
        Check(
            rule="data-residency",
            passed=country not in EU or hosting_region == "eu",
            reason=f"customer in {country}, data hosted in {hosting_region}",
        ),
        Check(
            rule="discount-limit",
            passed=discount_pct <= MAX_DISCOUNT,
            reason=f"{discount_pct}% off EUR {total_eur:,} (limit {MAX_DISCOUNT}%)",
        ),
    ]
    failed = [c for c in checks if not c.passed]
    ctx.decide(
        "compliance",
        choice="fail" if failed else "pass",
        reason="; ".join(f"{c.rule}: {c.reason}" for c in (failed or checks)),
        confidence=1.0,
        alternatives=["pass", "fail"],
    )
    return Verdict(passed=not failed, checks=checks)
