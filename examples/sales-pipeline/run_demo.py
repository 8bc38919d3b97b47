"""Run the sample leads through the pipeline and print where each one ended up.

Start the mesh first (`mesh up examples/sales-pipeline`), then: `python3 examples/sales-pipeline/run_demo.py`.
Qualified leads wait for a sign-off: approve them from another terminal (`mesh approvals ls`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio

import mesh

MESH = os.environ.get("MESH_NAME") or "sales-pipeline"
LEADS = Path(__file__).with_name("leads.json")


async def main() -> None:
    """Run every lead in leads.json through `pipeline.run`, one after the other."""
    leads: list[dict[str, Any]] = json.loads(LEADS.read_text(encoding="utf-8"))
    async with mesh.connect(mesh=MESH, name="sales-demo") as m:
        for lead in leads:
            print(f"{lead['company']}: running (a sign-off waits for `mesh approvals approve ID`)...", flush=True)
            try:
                result = await m.call("pipeline", "run", lead, timeout=600)
            except mesh.MeshError as exc:
                print(f"  failed: {exc}")
                continue
            print(summary(result))
    print("\nWhy did each lead end where it did?  mesh traces ls --mesh", MESH)


def summary(result: dict[str, Any]) -> str:
    """Stage, score and the step that decided it, on a few indented lines."""
    score = result["score"]
    lines = [f"  stage {result['stage']}, score {score['score']} ({score['decision']}, {score['confidence']:.2f})"]
    if result["proposal"]:
        lines.append(f"  proposal {result['proposal']['proposal_id']} by {result['proposal']['desk']}: ")
        lines[-1] += result["proposal"]["summary"]
    if result["compliance"]:
        failed = [c["rule"] for c in result["compliance"]["checks"] if not c["passed"]]
        lines.append(f"  compliance: {'failed ' + ', '.join(failed) if failed else 'passed'}")
    lines.extend(f"  note: {note}" for note in result["notes"])
    return "\n".join(lines)


if __name__ == "__main__":
    anyio.run(main)
