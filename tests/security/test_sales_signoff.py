"""The sales pipeline's sign-off waits for finance: the rep who asked cannot approve it, alice (finance) can."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from mesh.testing import AgentProcess, RegistryProcess
from tests.security.helpers import cli_as, person_token

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sales-pipeline"
AGENTS = ("pipeline.py", "scoring.py", "../../agents/crm.py", "proposals.py", "compliance.py", "signoff.py")


@asynccontextmanager
async def sales_mesh() -> AsyncGenerator[RegistryProcess]:
    """The registry and the EU half of the sales pipeline, under the example's policy."""
    async with RegistryProcess() as registry, AsyncExitStack() as stack:
        policy = str(EXAMPLE / "policy.cedar")
        for target in AGENTS:
            args = ("--registry", registry.base_url, "--policy", policy)
            await stack.enter_async_context(AgentProcess(str(EXAMPLE / target), *args))
        yield registry


async def test_a_sign_off_waits_for_finance_and_names_who_approved(mesh_env: dict[str, str]) -> None:
    sam = person_token("sam", "client", "sales")  # the sales rep
    alice = person_token("alice", "approver", "finance")
    lead = json.loads((EXAMPLE / "leads.json").read_text())[0]
    async with sales_mesh() as registry:
        url = registry.base_url
        done: dict[str, subprocess.CompletedProcess[str]] = {}

        def run_lead() -> None:
            done["run"] = cli_as(
                sam, "call", "pipeline", "run", "--args", json.dumps(lead), "--registry", url, timeout=180
            )

        pending: dict[str, Any] = {}

        def approve(token: str | None) -> subprocess.CompletedProcess[str]:
            return cli_as(token, "approvals", "approve", pending["id"], "--registry", url)

        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, run_lead)
            pending.update(await _pending(url))
            for who, token in (("sam", sam), ("operator", None), ("alice", alice)):
                done[who] = await anyio.to_thread.run_sync(approve, token)
        trace = json.loads(cli_as(None, "traces", "show", pending["trace_id"], "--json", "--registry", url).stdout)
        audit = [json.loads(line) for line in cli_as(None, "audit", "--registry", url).stdout.splitlines()]
        verified = cli_as(None, "audit", "verify", "--registry", url)
    assert (pending["agent"], pending["tool"], pending["approvers"]) == ("signoff", "approve_proposal", ["finance"])
    assert pending["requested_by"] == "sam"
    assert done["sam"].returncode != 0
    assert "a token of role 'client' cannot decide approvals" in done["sam"].stderr
    assert done["operator"].returncode != 0
    assert "only members of finance may decide this" in done["operator"].stderr
    assert done["alice"].returncode == 0, done["alice"].stderr
    assert "approved by alice (finance)" in done["alice"].stdout
    assert json.loads(done["run"].stdout)["stage"] == "proposal-sent", done["run"].stderr
    reasons = [d.get("reason", "") for d in _decisions(trace["root"]) if d.get("kind") == "approval"]
    assert any(r.startswith(f"approved by alice (finance) (approval {pending['id']})") for r in reasons), reasons
    approved = [r["record"] for r in audit if r["kind"] == "approval" and r["record"]["event"] == "approved"]
    assert [r["decided_by"] for r in approved] == [{"person": "alice", "groups": ["finance"]}], audit
    assert verified.returncode == 0, verified.stderr


async def _pending(registry: str) -> dict[str, Any]:
    with anyio.fail_after(60):
        while True:
            result = await anyio.to_thread.run_sync(
                lambda: cli_as(None, "approvals", "ls", "--status", "pending", "--json", "--registry", registry)
            )
            rows: list[dict[str, Any]] = json.loads(result.stdout or "[]")
            if rows:
                return rows[0]
            await anyio.sleep(0.3)


def _decisions(node: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = list(node.get("decisions", []))
    for child in node.get("children", []):
        found.extend(_decisions(child))
    return found
