"""`mesh run` serves an agent as its own process, reachable with the official SDK client."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters

from mesh.testing import AgentProcess
from tests.integration.helpers import mesh_cli, sdk_client

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
ECHO = str(ROOT / "agents" / "echo.py")


async def test_echo_answers_the_sdk_client_over_streamable_http(mesh_env: dict[str, str]) -> None:
    async with AgentProcess(ECHO, "--no-mdns") as agent, sdk_client(agent.url) as client:
        tools = await client.list_tools()
        result = await client.call_tool("echo", {"text": "hello mesh"})

    [tool] = tools.tools
    assert tool.name == "echo"
    assert tool.annotations is not None
    assert tool.annotations.read_only_hint is True
    assert tool.annotations.idempotent_hint is True
    assert result.is_error is False
    assert result.structured_content == {"result": "hello mesh"}


async def test_echo_answers_the_sdk_client_over_stdio(mesh_env: dict[str, str]) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mesh", "run", ECHO, "--stdio"],
        env={**os.environ, **mesh_env},
    )
    with anyio.fail_after(30):
        async with Client(params) as client:
            result = await client.call_tool("echo", {"text": "over stdio"})
    assert result.structured_content == {"result": "over stdio"}


async def test_a_built_in_agent_runs_by_name_and_reports_health(mesh_env: dict[str, str]) -> None:
    async with AgentProcess("echo", "--no-mdns") as agent, httpx2.AsyncClient() as http:
        health = (await http.get(agent.base_url + "/healthz")).json()
    assert health["name"] == "echo"
    assert health["tools"] == ["echo"]
    assert health["mesh"] == mesh_env["MESH_NAME"]


async def test_name_and_meta_override_the_agent_at_launch(mesh_env: dict[str, str]) -> None:
    args = ("--no-mdns", "--name", "echo-us", "--meta", "jurisdiction=us", "--meta", "team=blue")
    async with AgentProcess(ECHO, *args) as agent, httpx2.AsyncClient() as http:
        health = (await http.get(agent.base_url + "/healthz")).json()
    assert health["name"] == "echo-us"
    assert health["metadata"]["jurisdiction"] == "us"
    assert health["metadata"]["team"] == "blue"
    assert health["metadata"]["owner"] == "platform-team"


async def test_a_call_without_a_token_is_refused_with_401(mesh_env: dict[str, str]) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {}}}
    async with AgentProcess(ECHO, "--no-mdns") as agent, httpx2.AsyncClient() as http:
        response = await http.post(agent.url, json=body)
    assert response.status_code == 401
    assert "mesh token" in response.json()["error"]["message"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_the_agent_stops_cleanly_on_a_signal(mesh_env: dict[str, str], sig: signal.Signals) -> None:
    async with AgentProcess(ECHO, "--no-mdns") as agent:
        code = await agent.stop(sig, timeout=10)
    assert code == 0
    assert "Traceback" not in agent.stderr


async def test_mesh_call_prints_the_result_and_pure_json(mesh_env: dict[str, str]) -> None:
    async with AgentProcess(ECHO, "--no-mdns") as agent:
        plain = await anyio.to_thread.run_sync(lambda: mesh_cli("call", "--url", agent.url, "echo", "--arg", "text=hi"))
        as_json = await anyio.to_thread.run_sync(
            lambda: mesh_cli("call", "--url", agent.url, "echo", "--args", '{"text": "hi"}', "--json")
        )
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip() == "hi"
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == "hi"


async def test_wrong_arguments_get_one_line_naming_the_argument(mesh_env: dict[str, str]) -> None:
    async with AgentProcess(ECHO, "--no-mdns") as agent:
        missing = await anyio.to_thread.run_sync(lambda: mesh_cli("call", "--url", agent.url, "echo", "--arg", "txt=x"))
        wrong = await anyio.to_thread.run_sync(
            lambda: mesh_cli("call", "--url", agent.url, "echo", "--args", '{"text": 5}')
        )
        async with sdk_client(agent.url) as client:
            sdk = await client.call_tool("echo", {})
    assert missing.returncode != 0
    assert missing.stderr.strip().count("\n") == 0
    assert "takes no argument 'txt' (its arguments: text)" in missing.stderr
    assert "'text': input should be a valid string" in wrong.stderr
    assert sdk.is_error
    assert "'text'" in sdk.content[0].text  # type: ignore[union-attr]
