"""The map of the mesh in a real browser: agents as nodes, calls as edges (denied ones apart), traces a click away.

The support-desk test also saves the screenshots the README and docs show (`docs/img/`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx2
import pytest
from playwright.async_api import Page, expect

from mesh.errors import MeshError
from mesh.runtime.node import MeshNode
from mesh.testing import AgentProcess, RegistryProcess
from tests.integration.helpers import until
from tests.integration.test_up import SUPPORT_DESK, mesh_up
from tests.integration.test_web import browser_page

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
RELAY = str(FIXTURES / "relay.py")
POLICY = str(FIXTURES / "policy.cedar")
IMAGES = ROOT / "docs" / "img"


async def _map(base: str, has: set[tuple[str, str]]) -> dict[str, Any]:
    """The registry's map once it has every edge in `has` (spans arrive about once a second)."""
    async with httpx2.AsyncClient(base_url=base) as http:

        async def fetch() -> dict[str, Any]:
            return (await http.get("/api/map", params={"since": "15m"})).json()

        return await until(fetch, lambda m: has <= {(e["source"], e["target"]) for e in m["edges"]}, timeout=30)


def _edge(page: Page, source: str, target: str) -> Any:
    return page.locator(f'#map-svg .map-edge[data-source="{source}"][data-target="{target}"]')


async def test_the_map_draws_the_agents_their_calls_and_a_denied_edge_and_an_edge_opens_its_trace(
    mesh_env: dict[str, str],
) -> None:
    problems: list[str] = []
    policy = ("--policy", POLICY)
    async with (
        RegistryProcess() as registry,
        AgentProcess(RELAY, "--name", "a", "--meta", "next=b", "--registry", registry.base_url, *policy),
        AgentProcess(
            RELAY,
            "--name",
            "b",
            "--meta",
            "next=c",
            "--meta",
            "data_class=confidential",
            *policy,
            "--registry",
            registry.base_url,
        ),  # fmt: skip
        AgentProcess(RELAY, "--name", "c", "--meta", "jurisdiction=us", "--registry", registry.base_url, *policy),
        MeshNode("client", registry=registry.base_url) as node,
    ):
        await node.settle()
        with pytest.raises(MeshError, match="no-confidential-abroad"):
            await node.call("a", "relay", {"text": "hi"}, timeout=20)  # a → b → c, which b's policy refuses
        assert await node.call("c", "relay", {"text": "hi"}, timeout=20) == "hi>c"
        found = await _map(registry.base_url, {("a", "b"), ("b", "c"), ("client", "c")})
        async with browser_page(problems) as page:
            await page.goto(registry.base_url + "/")
            await page.get_by_role("link", name="Map").click()
            svg = page.locator("#map-svg")
            for name in ("a", "b", "c"):
                await expect(svg.locator(f'.map-node[data-node="{name}"]')).to_contain_text(name)
            await expect(svg.locator('.map-node[data-node="client"]')).to_have_class("map-node outside")
            allowed, failing, denied = _edge(page, "client", "c"), _edge(page, "a", "b"), _edge(page, "b", "c")
            await expect(allowed).to_have_class("map-edge ok")
            await expect(allowed.locator(".edge-label")).to_contain_text("0% err")
            await expect(failing).to_have_class("map-edge failing")  # b failed, as its own call was refused
            await expect(failing.locator(".edge-label")).to_contain_text("100% err")
            await expect(denied).to_have_class("map-edge denied")
            await expect(denied.locator(".edge-label")).to_have_text("1 denied" + "no-confidential-abroad")

            await allowed.press("Enter")  # a curved edge's box centre is empty canvas: pick it as a keyboard user does
            side = page.locator("#map-side")
            await expect(side.locator(".detail-title")).to_have_text("client→c")
            [trace_id] = next(e for e in found["edges"] if (e["source"], e["target"]) == ("client", "c"))["traces"]
            await side.locator(f'.edge-trace[data-trace="{trace_id}"]').click()
            await expect(page).to_have_url(f"{registry.base_url}/#/traces/{trace_id}")
            await expect(page.locator("#trace-detail .span-row").first).to_contain_text("relay")
    assert f"web page: {registry.base_url}/" in registry.stderr
    assert problems == []


async def test_the_support_desk_scenario_on_the_map_and_in_the_trace_view_saved_as_screenshots(
    mesh_env: dict[str, str],
) -> None:
    problems: list[str] = []
    async with mesh_up(str(SUPPORT_DESK), "--registry-port", "0") as up:
        await up.wait_for("mesh up: ready:")
        registry = up.url("registry")
        assert registry is not None
        base = registry.removesuffix("/mcp")
        async with MeshNode("support-demo", registry=base) as node:
            await node.settle()
            ticket = {
                "ticket_id": "T-1",
                "sender": "ada@example.com",
                "subject": "Charged twice for the March invoice",
                "body": "My card was charged twice for the March invoice.",
            }
            outcome = await node.call("triage", "handle", ticket, timeout=60)
        found = await _map(base, {("triage", "crm"), ("triage", "analytics"), ("triage", "drafter")})
        async with browser_page(problems) as page:
            await page.goto(base + "/#/map")
            await expect(page.locator('#map-svg .map-node[data-node="triage"]')).to_be_visible()
            denied = _edge(page, "triage", "analytics")
            await expect(denied).to_have_class("map-edge denied")
            await expect(denied.locator(".edge-label")).to_contain_text("no-confidential-abroad")
            await expect(page.locator('#map-svg .map-node[data-node="human-desk"] .node-approval')).to_have_count(1)
            await _edge(page, "support-demo", "triage").press("Enter")
            await page.screenshot(path=str(IMAGES / "map.png"))

            trace_id = next(e for e in found["edges"] if e["target"] == "triage")["traces"][0]
            await page.goto(f"{base}/#/traces/{trace_id}")
            await expect(page.locator("#trace-detail .badge.complete")).to_be_visible()
            await expect(page.locator('#trace-detail .decision[data-kind="route"]').first).to_be_visible()
            await page.screenshot(path=str(IMAGES / "trace.png"))
    assert outcome["route"] == "billing"
    assert {n["name"] for n in found["nodes"]} >= {"triage", "crm", "kb", "drafter", "human-desk", "analytics"}
    assert problems == []
