"""analytics: a product-analytics service that counts events. `mesh.toml` deploys it in the US.

Its point in this example is governance: triage handles confidential EU customer data, and the
policy (`no-confidential-abroad`) denies triage's calls to it, which shows up in every trace.
"""

from __future__ import annotations

from collections import Counter

from mesh import Agent

agent = Agent(
    "analytics",
    description="Counts product events for dashboards",
    owner="growth-team",
    data_class="internal",
)

_counts: Counter[str] = Counter()


@agent.tool()
async def record(event: str, key: str, label: str = "") -> int:
    """Count one `event` (with a label such as a route); returns the new count for that event and label."""
    del key  # the event's subject: not stored, only counted
    _counts[f"{event}:{label}"] += 1
    return _counts[f"{event}:{label}"]


@agent.tool(read_only=True, idempotent=True)
async def counts() -> dict[str, int]:
    """Every event:label counted so far."""
    return dict(_counts)
