"""The registry's web page in a real browser: the inventory, a stitched decision trace, approvals."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from playwright.async_api import ConsoleMessage, Page, async_playwright, expect

from mesh.identity import MeshKeys
from mesh.runtime.node import MeshNode
from mesh.testing import AgentProcess, RegistryProcess

CHROMIUM = Path("/usr/bin/chromium")
ECHO = str(Path(__file__).resolve().parents[2] / "agents" / "echo.py")
SCREENSHOT = Path("/tmp/agentplex-ui.png")

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.integration,
]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@asynccontextmanager
async def browser_page(problems: list[str]) -> AsyncGenerator[Page]:
    """A fresh page in headless chromium; console errors (CSP violations too) and page errors land in `problems`."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 900})

            def on_console(message: ConsoleMessage) -> None:
                if message.type == "error":
                    problems.append(message.text)

            page.on("console", on_console)
            page.on("pageerror", lambda error: problems.append(str(error)))
            yield page
        finally:
            await browser.close()


async def _until_traced(base: str, agent: str) -> dict[str, Any]:
    """The one trace of `agent`, once its spans have arrived (they come in batches every ~1 s)."""
    async with httpx2.AsyncClient(base_url=base) as http:
        with anyio.fail_after(20):
            while True:
                found: list[dict[str, Any]] = (await http.get("/api/traces", params={"agent": agent})).json()
                if found:
                    return found[0]
                await anyio.sleep(0.2)


async def _file_approval(base: str) -> dict[str, Any]:
    token = MeshKeys.load().mint("echo", "registry")
    request = {
        "agent": "echo",
        "tool": "echo",
        "caller": "tester",
        "arguments_digest": "0" * 64,
        "expires_at": time.time() + 60,
    }
    async with httpx2.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http:
        response = await http.post("/api/approvals", json=request)
    assert response.status_code == 201, response.text
    return response.json()


async def _approval(base: str, approval_id: str) -> dict[str, Any]:
    async with httpx2.AsyncClient(base_url=base) as http:
        response = await http.get(f"/api/approvals/{approval_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_page_shows_the_inventory_and_a_trace_with_its_decisions(mesh_env: dict[str, str]) -> None:
    problems: list[str] = []
    async with (
        RegistryProcess() as registry,
        AgentProcess(ECHO, "--registry", registry.base_url),
        MeshNode("client", registry=registry.base_url) as node,
    ):
        await node.settle()
        assert await node.call("echo", "echo", {"text": "hi"}) == "hi"
        trace = await _until_traced(registry.base_url, "echo")
        async with browser_page(problems) as page:
            await page.goto(registry.base_url + "/")
            echo = page.locator('#agents-body tr[data-agent="echo"]')
            await expect(echo).to_contain_text("Returns what it is given")
            for fact in ("platform-team", "eu", "public", "healthy"):
                await expect(echo).to_contain_text(fact)
            await expect(echo.locator(".chip")).to_have_text("echo")

            await page.get_by_role("link", name="Traces").click()
            item = page.locator(f'.trace-item[data-trace="{trace["trace_id"]}"]')
            await expect(item).to_contain_text("echo")
            await item.click()
            await expect(page).to_have_url(f"{registry.base_url}/#/traces/{trace['trace_id']}")
            detail = page.locator("#trace-detail")
            await expect(detail.locator(".badge.complete")).to_be_visible()
            root = detail.locator(".span-row").first
            await expect(root).to_contain_text("echo")
            await expect(root).to_contain_text("tools/call echo")
            await expect(detail.locator('.decision[data-kind="policy"]')).to_contain_text("policy → allow: ")
            await page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert problems == []


async def test_an_approval_is_approved_from_the_page(mesh_env: dict[str, str]) -> None:
    problems: list[str] = []
    async with RegistryProcess() as registry:
        filed = await _file_approval(registry.base_url)
        async with browser_page(problems) as page:
            await page.goto(registry.base_url + "/#/approvals")
            card = page.locator(f'.approval-card[data-approval="{filed["id"]}"]')
            await expect(card).to_contain_text("tester")
            await expect(page.locator("#count-approvals")).to_have_text("1")
            await card.get_by_label("reason").fill("looks right")
            await card.get_by_role("button", name="Approve").click()
            row = page.locator(f'#approvals-history tr[data-approval="{filed["id"]}"]')
            await expect(row).to_contain_text("approved")
            await expect(row).to_contain_text("web@127.0.0.1")
            await expect(card).to_have_count(0)
        decided = await _approval(registry.base_url, filed["id"])
    assert decided["status"] == "approved"
    assert decided["decided_by"] == "web@127.0.0.1"
    assert decided["reason"] == "looks right"
    assert problems == []


async def test_the_page_decision_route_refuses_cross_origin_requests(mesh_env: dict[str, str]) -> None:
    async with RegistryProcess() as registry:
        filed = await _file_approval(registry.base_url)
        own = registry.base_url
        route = f"/ui/approvals/{filed['id']}/decision"
        async with httpx2.AsyncClient(base_url=own) as http:
            cross = await http.post(route, json={"decision": "approve"}, headers={"Origin": "http://evil.example"})
            anonymous = await http.post(route, json={"decision": "approve"})
            rebound = await http.post(
                route,
                json={"decision": "approve"},
                headers={"Host": "evil.example", "Origin": "http://evil.example"},
            )
            unknown = await http.post("/ui/approvals/nope/decision", json={"decision": "deny"}, headers={"Origin": own})
        still = await _approval(own, filed["id"])
    assert cross.status_code == 403
    assert "cross-origin" in cross.json()["error"]
    assert anonymous.status_code == 403  # no Origin and no Sec-Fetch-Site: not a same-origin browser
    assert rebound.status_code == 403  # a DNS-rebinding name posing as the registry
    assert unknown.status_code == 404
    assert still["status"] == "pending"
