"""An approval two hops down (client → gateway → teller → vault) reaches the MCP client's elicitation."""

from __future__ import annotations

import os
import sys
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp_types import ElicitRequestParams, ElicitResult

from tests.integration.helpers import vault_chain

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def _person(action: str, approve: bool, asked: list[str]):  # type: ignore[no-untyped-def]
    async def elicit(context: Any, params: ElicitRequestParams) -> ElicitResult:
        del context
        asked.append(params.message)
        return ElicitResult(action=action, content={"approve": approve} if action == "accept" else None)  # type: ignore[arg-type]

    return elicit


async def _call_through_gateway(registry: str, mode: str, elicit: Any) -> Any:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mesh", "gateway", "--registry", registry],
        env={**os.environ},
    )
    with anyio.fail_after(60):
        async with Client(params, mode=mode, elicitation_callback=elicit) as client:
            return await client.call_tool("teller__cash", {"account": "acme", "amount": 75})


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_the_client_approves_and_the_tool_runs(mesh_env: dict[str, str], mode: str) -> None:
    asked: list[str] = []
    async with vault_chain("observer") as (registry, _node):
        result = await _call_through_gateway(registry.base_url, mode, _person("accept", True, asked))
    assert result.is_error is False, result.content
    assert result.structured_content["handed_out"] == 75
    assert result.structured_content["vault"]["status"] == "done"
    [question] = asked
    assert "teller wants to run vault.withdraw(" in question


@pytest.mark.parametrize(("mode", "action"), [("legacy", "decline"), ("auto", "accept")])
async def test_a_declined_approval_is_a_clean_refusal(mesh_env: dict[str, str], mode: str, action: str) -> None:
    asked: list[str] = []
    async with vault_chain("observer") as (registry, _node):
        result = await _call_through_gateway(registry.base_url, mode, _person(action, False, asked))
    assert result.is_error is True
    assert "ApprovalDenied" in result.content[0].text
    assert len(asked) == 1
