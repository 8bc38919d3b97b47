"""pipeline: takes a lead from first contact to a signed-off proposal, one agent per step.

scoring -> crm -> proposals (the US desk for US leads, where the policy allows) -> compliance
-> signoff (a person approves). Every step and every choice is in the call's decision trace.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from mesh import Agent, ApprovalDenied, ApprovalRequired, Context, DeadlineExceeded, PolicyDenied

agent = Agent(
    "pipeline",
    description="Runs a B2B lead through scoring, CRM, proposal, compliance and sign-off",
    owner="sales-ops",
    jurisdiction="eu",
    data_class="confidential",
)

SIGN_OFF_WAIT = 180.0
"""Seconds the sign-off may wait for a person (within the caller's own budget)."""


class Result(BaseModel):
    """Where the lead ended up, and what each step said."""

    company: str
    stage: str
    score: dict[str, Any]
    proposal: dict[str, Any] | None = None
    compliance: dict[str, Any] | None = None
    signoff: dict[str, Any] | None = None
    notes: list[str] = []


@agent.tool()
async def run(
    email: str,
    company: str,
    country: str,
    employees: int,
    industry: str,
    budget_eur: int,
    seats: int,
    ctx: Context,
    name: str = "",
    contact_role: str = "",
) -> Result:
    """Score the lead, record it, and for a qualified one draft, check and sign off a proposal."""
    lead = {"company": company, "employees": employees, "industry": industry, "budget_eur": budget_eur}
    score = await ctx.call("scoring", "score", {**lead, "contact_role": contact_role})
    result = Result(company=company, stage="nurture", score=score)

    async def record(stage: str) -> Result:
        result.stage = stage
        crm = {"email": email, "company": company, "name": name, "country": country, "score": score["score"]}
        await ctx.call("crm", "upsert_lead", {**crm, "stage": stage})
        return result

    if score["decision"] != "qualify":
        return await record("nurture")
    request = {"company": company, "country": country, "employees": employees, "seats": seats, "budget_eur": budget_eur}
    proposal = result.proposal = await _draft(ctx, request, country, result.notes)
    checked = ("country", "hosting_region", "discount_pct", "total_eur")
    verdict = result.compliance = await ctx.call("compliance", "check", _fields(proposal, *checked))
    if not verdict["passed"]:
        return await record("blocked")
    try:
        result.signoff = await ctx.call(
            "signoff",
            "approve_proposal",
            _fields(proposal, "proposal_id", "company", "total_eur", "summary"),
            timeout=SIGN_OFF_WAIT,
        )
    except ApprovalDenied as exc:
        result.notes.append(f"sign-off refused: {exc}")
        return await record("sign-off-refused")
    except (ApprovalRequired, DeadlineExceeded) as exc:
        result.notes.append(f"sign-off pending: {exc}")
        return await record("awaiting-sign-off")
    return await record("proposal-sent")


async def _draft(ctx: Context, request: dict[str, Any], country: str, notes: list[str]) -> dict[str, Any]:
    """The proposal, from the US desk for North American leads, else (or when refused) from the EU desk."""
    desk = "proposals-us" if country.upper() in ("US", "CA") else "proposals"
    ctx.decide("route", choice=desk, reason=f"lead in {country.upper()}", alternatives=["proposals", "proposals-us"])
    if desk == "proposals-us":
        try:
            return await ctx.call(desk, "draft", request)
        except PolicyDenied as exc:
            ctx.decide("fallback", choice="proposals", reason=str(exc), alternatives=["proposals-us"])
            notes.append(f"the US desk was not allowed: {exc}")
    return await ctx.call("proposals", "draft", request)


def _fields(source: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: source[key] for key in keys}
