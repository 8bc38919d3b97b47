"""A handled denial leaves the trace ok, counted beside its status: in the HTTP list, `mesh traces ls` and its
filters, `mesh traces show`, and the web page's list."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from playwright.async_api import expect

from mesh.runtime.node import MeshNode
from mesh.testing import AgentProcess, RegistryProcess
from tests.integration.helpers import mesh_cli, until
from tests.integration.test_web import browser_page

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ERRAND, RELAY, POLICY = (str(FIXTURES / name) for name in ("errand.py", "relay.py", "policy.cedar"))
CONFIDENTIAL = ("--meta", "data_class=confidential", "--meta", "jurisdiction=eu", "--policy", POLICY)


async def test_a_call_refused_by_the_policy_and_handled_leaves_the_trace_ok_with_one_denied(
    mesh_env: dict[str, str],
) -> None:
    problems: list[str] = []
    async with RegistryProcess() as registry:
        joined = ("--registry", registry.base_url)
        async with (
            AgentProcess(RELAY, "--name", "abroad", "--meta", "jurisdiction=us", *joined),
            AgentProcess(ERRAND, "--name", "desk", "--meta", "next=abroad", *CONFIDENTIAL, *joined),
            MeshNode("client", registry=registry.base_url) as node,
        ):
            await node.settle()
            assert await node.call("desk", "errand", {"text": "T-1"}) == "T-1 (without abroad)"

            async def listed() -> list[dict[str, Any]]:
                async with httpx2.AsyncClient(base_url=registry.base_url) as http:
                    return (await http.get("/api/traces")).json()

            [summary] = await until(listed, lambda found: len(found) == 1 and found[0]["span_count"] == 2)

        async def cli(*args: str) -> Any:
            return await anyio.to_thread.run_sync(lambda: mesh_cli("traces", *args, *joined))

        denied = await cli("ls", "--denied", "--json")
        failed = await cli("ls", "--status", "error")
        table = await cli("ls")
        shown = await cli("show", summary["trace_id"])
        async with browser_page(problems) as page:
            await page.goto(f"{registry.base_url}/#/traces")
            item = page.locator(f'.trace-item[data-trace="{summary["trace_id"]}"]')
            await expect(item.locator(".trace-outcome")).to_have_text("ok · 1 denied")
            await page.locator("#filter-status").select_option("error")
            await expect(item).to_have_count(0)
            await page.locator("#filter-status").select_option("denied")
            await expect(item).to_have_count(1)
            await item.click()
            head = page.locator("#trace-detail .detail-title")
            await expect(head.locator(".badge.ok")).to_have_text("ok")
            await expect(head.locator(".badge.denied")).to_have_text("1 denied")
    assert (summary["status"], summary["denied"], summary["errors"]) == ("ok", 1, 0)
    assert summary["root"] == {"agent": "desk", "tool": "errand"}  # this test's process exports no spans
    assert [t["trace_id"] for t in json.loads(denied.stdout)] == [summary["trace_id"]]
    assert failed.stdout.strip() == "no traces"
    cells = [line.split("│")[-1].strip() for line in table.stdout.splitlines()]
    assert cells[2:4] == ["ok", "· 1 denied"]  # not a terminal: 80 columns, each count on a line of its own
    assert shown.returncode == 0, shown.stderr
    assert "ok · 1 denied  complete" in shown.stdout
    assert "decision policy → deny" in shown.stdout
    assert "decision fallback → skip abroad" in shown.stdout
    assert problems == []
