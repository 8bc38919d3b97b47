"""human-desk: the queue of tickets a person takes over. `escalate` needs a human's approval.

When the mesh pauses an `escalate` call for approval, the person approving it is accepting
the case; the tool then files it in a queue and names who picks it up.
"""

from __future__ import annotations

from pydantic import BaseModel

from mesh import Agent

agent = Agent(
    "human-desk",
    description="Escalation desk: hands tickets to a person",
    owner="support-team",
    jurisdiction="eu",
    data_class="confidential",
)


class Case(BaseModel):
    """An escalated ticket, assigned to a queue."""

    case_id: str
    ticket_id: str
    subject: str
    reason: str
    queue: str
    assignee: str
    customer: str | None


_QUEUES = {"privacy": ("dpo", "Data protection officer"), "billing": ("finance", "Billing specialist")}
_cases: dict[str, Case] = {}


@agent.tool(approval=True, idempotent=True)
async def escalate(ticket_id: str, subject: str, reason: str, route: str, customer: str | None = None) -> Case:
    """Hand the ticket to a person (asks a human first); escalating the same ticket twice returns its case."""
    if ticket_id in _cases:
        return _cases[ticket_id]
    queue, assignee = _QUEUES.get(route, ("tier-2", "Senior support agent"))
    case = Case(
        case_id=f"ESC-{len(_cases) + 1:04d}",
        ticket_id=ticket_id,
        subject=subject,
        reason=reason,
        queue=queue,
        assignee=assignee,
        customer=customer,
    )
    _cases[ticket_id] = case
    return case


@agent.tool(read_only=True, idempotent=True)
async def cases() -> list[Case]:
    """Every case escalated since this desk started, oldest first."""
    return list(_cases.values())
