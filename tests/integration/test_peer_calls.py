"""Peer-to-peer calls: chains, failover under load, deadlines, policy at both ends, identity."""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import httpx2
import pytest

from mesh.errors import DeadlineExceeded, PolicyDenied
from mesh.runtime.node import MeshNode
from mesh.testing import AgentProcess
from tests.integration.helpers import mesh_cli

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RELAY = str(FIXTURES / "relay.py")
POLICY = str(FIXTURES / "policy.cedar")


async def _wait_healthy(node: MeshNode, name: str, count: int = 1) -> None:
    with anyio.fail_after(15):
        while len(node.directory.instances(name)) < count:
            await node.settle(browse=0.2, timeout=2)


async def test_a_chain_of_three_agents_answers_peer_to_peer(mesh_env: dict[str, str]) -> None:
    async with (
        AgentProcess(RELAY, "--name", "c"),
        AgentProcess(RELAY, "--name", "b", "--meta", "next=c"),
        AgentProcess(RELAY, "--name", "a", "--meta", "next=b"),
        MeshNode("client") as node,
    ):
        await _wait_healthy(node, "a")
        reply = await node.call("a", "relay", {"text": "go"})
    assert reply == "go>a>b>c"


async def test_a_tool_is_found_by_capability(mesh_env: dict[str, str]) -> None:
    async with AgentProcess(RELAY, "--name", "anyone"), MeshNode("client") as node:
        await _wait_healthy(node, "anyone")
        assert await node.call_any("relay", {"text": "who"}) == "who>anyone"


async def test_mesh_call_reaches_an_agent_by_name(mesh_env: dict[str, str]) -> None:
    async with AgentProcess(RELAY, "--name", "solo"):
        result = await anyio.to_thread.run_sync(lambda: mesh_cli("call", "solo", "relay", "--arg", "text=hey"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hey>solo"


async def test_killing_a_replica_under_load_loses_no_idempotent_call(mesh_env: dict[str, str]) -> None:
    async with (
        AgentProcess(RELAY, "--name", "b") as first,
        AgentProcess(RELAY, "--name", "b") as second,
        MeshNode("client") as node,
    ):
        await _wait_healthy(node, "b", count=2)
        results: list[str] = []
        failures: list[BaseException] = []
        warmed_up = anyio.Event()

        async def worker(n: int) -> None:
            for i in range(25):
                try:
                    results.append(await node.call("b", "relay", {"text": f"{n}.{i}"}, timeout=10))
                    if len(results) >= 60:
                        warmed_up.set()
                except Exception as exc:  # collected, asserted below
                    failures.append(exc)

        async with anyio.create_task_group() as tg:
            for n in range(16):
                tg.start_soon(worker, n)
            await warmed_up.wait()
            first.signal(signal.SIGKILL)
        instances = {key[1]: count for key, count in node.pool.attempts.items()}
        dead = next(k for k in node.pool.attempts if k[1] not in _instance_of(second, node))
        after = node.pool.after_failure[dead]
    assert failures == []
    assert len(results) == 16 * 25
    assert len(instances) == 2
    assert after == 0, f"{after} calls went to the killed instance after its first failure"


def _instance_of(process: AgentProcess, node: MeshNode) -> set[str]:
    return {i.instance for i in node.directory.all() if i.url == process.url}


async def test_a_stopped_peer_gives_deadline_exceeded_instead_of_hanging(mesh_env: dict[str, str]) -> None:
    async with AgentProcess(RELAY, "--name", "frozen") as frozen, MeshNode("client") as node:
        await _wait_healthy(node, "frozen")
        frozen.signal(signal.SIGSTOP)
        try:
            # The deadline's own cancel scope ends the call: a hang would reach fail_after first and
            # fail with TimeoutError instead (no timing assertion: this machine is shared).
            with anyio.fail_after(20), pytest.raises(DeadlineExceeded):
                await node.call("frozen", "relay", {"text": "x"}, timeout=1.0)
        finally:
            frozen.signal(signal.SIGCONT)


async def test_a_callee_refuses_work_whose_budget_is_spent(mesh_env: dict[str, str]) -> None:
    async with AgentProcess(RELAY, "--name", "slowpoke") as slow, MeshNode("client") as node:
        await _wait_healthy(node, "slowpoke")
        with pytest.raises(DeadlineExceeded):
            await node.call("slowpoke", "slow", {"seconds": 5}, timeout=0.5)
        # The agent is still fine afterwards.
        assert await node.call("slowpoke", "relay", {"text": "ok"}) == "ok>slowpoke"
        del slow


async def test_policy_denies_confidential_data_abroad_at_the_caller(mesh_env: dict[str, str]) -> None:
    eu = ("--meta", "jurisdiction=eu", "--meta", "data_class=confidential")
    async with (
        AgentProcess(RELAY, "--name", "us-ledger", "--meta", "jurisdiction=us", "--policy", POLICY),
        AgentProcess(RELAY, "--name", "eu-desk", *eu, "--meta", "next=us-ledger", "--policy", POLICY),
        MeshNode("client") as node,
    ):
        await _wait_healthy(node, "eu-desk")
        await _wait_healthy(node, "us-ledger")
        with pytest.raises(Exception, match="no-confidential-abroad") as caught:
            await node.call("eu-desk", "relay", {"text": "card 4111"})
    assert "PolicyDenied" in str(caught.value)
    assert "eu-desk may not call us-ledger.relay" in str(caught.value)


async def test_policy_denies_at_the_callee_when_the_caller_skips_its_check(mesh_env: dict[str, str]) -> None:
    async with (
        AgentProcess(RELAY, "--name", "us-ledger", "--meta", "jurisdiction=us", "--policy", POLICY),
        MeshNode("rogue", metadata={"jurisdiction": "eu", "data_class": "confidential"}) as rogue,
    ):
        await _wait_healthy(rogue, "us-ledger")
        with pytest.raises(PolicyDenied, match="no-confidential-abroad") as caught:
            await rogue.call("us-ledger", "relay", {"text": "card 4111"})
    assert caught.value.where == "callee"


async def test_a_broken_policy_file_fails_closed(mesh_env: dict[str, str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.cedar"
    broken.write_text("permit(principal, action, resource")
    async with (
        AgentProcess(RELAY, "--name", "guarded", "--policy", str(broken)) as guarded,
        MeshNode("client") as node,
    ):
        await _wait_healthy(node, "guarded")
        with pytest.raises(PolicyDenied, match="broken"):
            await node.call("guarded", "relay", {"text": "x"})
    assert "broken" in guarded.stderr


async def test_calls_without_a_valid_token_get_401(mesh_env: dict[str, str]) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list"}
    async with AgentProcess(RELAY, "--name", "locked") as locked, httpx2.AsyncClient() as http:
        none = await http.post(locked.url, json=body, headers=headers)
        forged = await http.post(locked.url, json=body, headers={**headers, "authorization": "Bearer abc.def"})
        wrong = await http.post(
            locked.url, json=body, headers={**headers, "authorization": f"Bearer {_other_mesh_token()}"}
        )
    assert none.status_code == forged.status_code == wrong.status_code == 401
    assert "token" in forged.json()["error"]["message"]


def _other_mesh_token() -> str:
    from mesh.identity import MeshKeys

    return MeshKeys(b"another secret", "elsewhere").mint("mallory", "locked")
