"""The registry's web page in a real browser: the inventory, a stitched decision trace, signing in, approvals."""

from __future__ import annotations

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
from tests.integration.test_approval_arguments import waiting_rotation
from tests.security.helpers import pending_approval

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
                if message.type == "error" and not _nobody_signed_in(message):
                    problems.append(message.text)

            page.on("console", on_console)
            page.on("pageerror", lambda error: problems.append(str(error)))
            yield page
        finally:
            await browser.close()


def _nobody_signed_in(message: ConsoleMessage) -> bool:
    """The browser's own log line for the page asking who is signed in when nobody is (401): expected."""
    return message.location.get("url", "").endswith("/ui/session") and "status of 401" in message.text


async def _until_traced(base: str, agent: str) -> dict[str, Any]:
    """The one trace of `agent`, once its spans have arrived (they come in batches every ~1 s)."""
    async with httpx2.AsyncClient(base_url=base) as http:
        with anyio.fail_after(20):
            while True:
                found: list[dict[str, Any]] = (await http.get("/api/traces", params={"agent": agent})).json()
                if found:
                    return found[0]
                await anyio.sleep(0.2)


def approver_token(person: str, *groups: str) -> str:
    """What `mesh token --person PERSON --group ... --role approver` gives a person to paste into the page."""
    return MeshKeys.load().mint(f"{person}-browser", "registry", role="approver", person=person, groups=groups)


async def sign_in(page: Page, token: str) -> None:
    """Paste `token` into the page's Sign in form and submit it."""
    await page.locator("#signin-open").click()
    await page.get_by_label("Approver token").fill(token)
    await page.locator("#signin-form").get_by_role("button", name="Sign in").click()


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


async def test_a_signed_in_approver_approves_from_the_page_and_is_named_in_the_history(
    mesh_env: dict[str, str],
) -> None:
    problems: list[str] = []
    async with RegistryProcess() as registry, pending_approval(registry.base_url) as filed:
        async with browser_page(problems) as page:
            await page.goto(registry.base_url + "/#/approvals")
            card = page.locator(f'.approval-card[data-approval="{filed["id"]}"]')
            await expect(card).to_contain_text("teller")
            await expect(card.locator(".approvers")).to_have_text("decided by finance")
            await expect(card.locator(".requested-by")).to_have_text("on behalf of bob")
            await expect(page.locator("#count-approvals")).to_have_text("1")
            approve = card.get_by_role("button", name="Approve")
            await expect(approve).to_be_disabled()
            await expect(card).to_contain_text("Sign in with your approver token to decide.")

            await sign_in(page, approver_token("alice", "finance"))
            await expect(page.locator("#who")).to_have_text("alice · finance")
            assert "mesh_session" not in await page.evaluate("document.cookie")  # HttpOnly: no script reads it
            await card.get_by_label("reason").fill("invoice checked")
            await approve.click()
            row = page.locator(f'#approvals-history tr[data-approval="{filed["id"]}"]')
            await expect(row).to_contain_text("approved")
            await expect(row.locator(".decided-by")).to_have_text("alice · finance")
            await expect(card).to_have_count(0)
        decided = await _approval(registry.base_url, filed["id"])
    assert decided["status"] == "approved"
    assert decided["decided_by"] == {"person": "alice", "groups": ["finance"]}
    assert decided["reason"] == "invoice checked"
    assert problems == []


async def test_a_refused_decision_shows_why_on_the_card_and_signing_out_locks_the_buttons(
    mesh_env: dict[str, str],
) -> None:
    problems: list[str] = []
    async with RegistryProcess() as registry, pending_approval(registry.base_url) as filed:
        async with browser_page(problems) as page:
            await page.goto(registry.base_url + "/#/approvals")
            card = page.locator(f'.approval-card[data-approval="{filed["id"]}"]')
            await sign_in(page, approver_token("carol", "ops"))
            await expect(page.locator("#who")).to_have_text("carol · ops")
            await card.get_by_role("button", name="Approve").click()
            await expect(card.locator(".form-error")).to_contain_text("only members of finance may decide this")

            await page.get_by_role("button", name="Sign out").click()
            await expect(page.locator("#signin-open")).to_be_visible()
            await expect(card.get_by_role("button", name="Approve")).to_be_disabled()
        still = await _approval(registry.base_url, filed["id"])
    assert still["status"] == "pending"
    assert [p for p in problems if "403" not in p] == []  # the browser logs the refused request itself


async def test_the_page_decision_route_refuses_cross_origin_requests(mesh_env: dict[str, str]) -> None:
    async with RegistryProcess() as registry, pending_approval(registry.base_url) as filed:
        own = registry.base_url
        route = f"/ui/approvals/{filed['id']}/decision"
        async with httpx2.AsyncClient(base_url=own) as http:
            session = await http.post(
                "/ui/session", json={"token": approver_token("alice", "finance")}, headers={"Origin": own}
            )
            cross = await http.post(route, json={"decision": "approve"}, headers={"Origin": "http://evil.example"})
            anonymous = await http.post(route, json={"decision": "approve"})
            rebound = await http.post(
                route,
                json={"decision": "approve"},
                headers={"Host": "evil.example", "Origin": "http://evil.example"},
            )
            unknown = await http.post("/ui/approvals/nope/decision", json={"decision": "deny"}, headers={"Origin": own})
        still = await _approval(own, filed["id"])
    assert session.status_code == 200, session.text
    assert cross.status_code == 403
    assert "cross-origin" in cross.json()["error"]
    assert anonymous.status_code == 403  # no Origin and no Sec-Fetch-Site: not a same-origin browser
    assert rebound.status_code == 403  # a DNS-rebinding name posing as the registry
    assert unknown.status_code == 404
    assert still["status"] == "pending"


async def test_on_the_lan_the_page_asks_for_a_sign_in_before_showing_anything(mesh_env: dict[str, str]) -> None:
    problems: list[str] = []
    # --lan turns the LAN rules on; --host localhost keeps the socket on 127.0.0.1 (no mDNS either).
    async with RegistryProcess("--lan", "--host", "localhost", "--no-mdns") as registry:
        base = f"http://127.0.0.1:{registry.port}"
        async with pending_approval(base) as filed, browser_page(problems) as page:
            await page.goto(base + "/#/approvals")
            await expect(page.locator("#view-locked")).to_contain_text("Sign in to see this registry")
            await expect(page.locator(".approval-card")).to_have_count(0)

            await sign_in(page, approver_token("alice", "finance"))
            card = page.locator(f'.approval-card[data-approval="{filed["id"]}"]')
            await card.get_by_role("button", name="Deny").click()
            row = page.locator(f'#approvals-history tr[data-approval="{filed["id"]}"]')
            await expect(row).to_contain_text("denied")
            await expect(row.locator(".decided-by")).to_have_text("alice · finance")
    assert [p for p in problems if "status of 401" not in p] == []  # reads before signing in are refused


async def test_a_signed_in_approver_sees_the_calls_arguments_on_the_card_with_secrets_masked(
    mesh_env: dict[str, str],
) -> None:
    problems: list[str] = []
    async with waiting_rotation() as (registry, pending), browser_page(problems) as page:
        await page.goto(registry.base_url + "/#/approvals")
        card = page.locator(f'.approval-card[data-approval="{pending["id"]}"]')
        await expect(card).to_contain_text("keyring")
        await expect(card.locator(".call-args")).to_have_count(0)  # nobody signed in: no arguments

        await sign_in(page, approver_token("alice"))
        arguments = card.locator(".call-args")
        await expect(arguments.locator('dd[data-arg="service"]')).to_have_text("billing-db")
        await expect(arguments.locator('dd[data-arg="card.holder"]')).to_have_text("Ann Lee")
        await expect(arguments.locator("dd.masked")).to_have_count(2)  # password, card.pin
        await expect(arguments.locator("dt")).to_have_text(["service", "password", "card.holder", "card.pin"])
        content = await page.content()
    assert "hunter2" not in content
    assert "4921" not in content
    assert problems == []
