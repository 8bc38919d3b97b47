"""signoff: a sales director's sign-off on a proposal. `approve_proposal` waits for a person.

The mesh pauses each call for a human's approval (`mesh approvals ls`, then `approve ID` or
`deny ID`); once approved, the tool records the sign-off.
"""

from __future__ import annotations

import time

from pydantic import BaseModel

from mesh import Agent

agent = Agent(
    "signoff",
    description="Sales director sign-off on proposals (a person approves each one)",
    owner="sales-leadership",
    jurisdiction="eu",
    data_class="confidential",
)


class SignOff(BaseModel):
    """A signed-off proposal."""

    proposal_id: str
    company: str
    total_eur: int
    status: str
    signed_at: float


_signed: dict[str, SignOff] = {}


@agent.tool(approval=True, idempotent=True)
async def approve_proposal(proposal_id: str, company: str, total_eur: int, summary: str = "") -> SignOff:
    """Sign off the proposal (a person approves the call first); signing twice returns the first sign-off."""
    del summary  # shown to the approver with the call's arguments
    if proposal_id not in _signed:
        _signed[proposal_id] = SignOff(
            proposal_id=proposal_id, company=company, total_eur=total_eur, status="signed-off", signed_at=time.time()
        )
    return _signed[proposal_id]
