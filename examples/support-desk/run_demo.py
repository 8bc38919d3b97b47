"""Send the sample tickets to triage and print what happened to each.

Start the mesh first (`mesh up examples/support-desk`), then: `python3 examples/support-desk/run_demo.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio

import mesh

MESH = os.environ.get("MESH_NAME") or "support-desk"
TICKETS = Path(__file__).with_name("tickets.json")


async def main() -> None:
    """Handle every ticket in tickets.json, one after the other."""
    tickets: list[dict[str, str]] = json.loads(TICKETS.read_text(encoding="utf-8"))
    async with mesh.connect(mesh=MESH, name="support-demo") as m:
        for ticket in tickets:
            try:
                # An escalation waits for a human: approve it with `mesh approvals approve ID`.
                outcome = await m.call("triage", "handle", ticket, timeout=600)
            except mesh.MeshError as exc:
                print(f"{ticket['ticket_id']}  failed: {exc}")
                continue
            print(summary(outcome))
    print("\nWhy did each ticket go where it went?  mesh traces ls --mesh", MESH)


def summary(outcome: dict[str, Any]) -> str:
    """One line per ticket: route, confidence, customer, and what happened."""
    if outcome["escalated"]:
        done = f"escalated to a human: {outcome['escalation']}"
    else:
        done = f"reply drafted from {', '.join(outcome['draft']['sources']) or 'no article'}"
    who = outcome["customer"] or "unknown sender"
    return f"{outcome['ticket_id']}  {outcome['route']:<9} {outcome['confidence']:.2f}  {who:<16} {done}"


if __name__ == "__main__":
    anyio.run(main)
