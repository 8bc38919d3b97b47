"""The official MCP conformance suite's tool, resource and prompt scenarios, against the mesh.

Three servers under test, each with the suite's test tools, resources and prompts: the plain SDK
server served directly (the baseline: what the SDK alone achieves), a native mesh agent
(`mesh run`), and the same plain server adopted by `mesh run --command`. The suite runs once per
server (`--suite all`, on Node 22 from npm); each scenario below is one test of its outcome.
The suite speaks no mesh token, so both mesh servers run with `--no-auth` on loopback.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2
import pytest

from mesh.testing import MeshProcess, free_port
from tests.integration.helpers import until
from tests.thirdparty.installs import NodeTools

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SERVER = FIXTURES / "conformance_server.py"
AGENT = FIXTURES / "conformance_agent.py"

TOOL_SCENARIOS = (
    "tools-list",
    "tools-call-simple-text",
    "tools-call-image",
    "tools-call-audio",
    "tools-call-embedded-resource",
    "tools-call-mixed-content",
    "tools-call-with-logging",
    "tools-call-error",
    "tools-call-with-progress",
    "tools-call-sampling",
    "tools-call-elicitation",
    "json-schema-2020-12",
)
RESOURCE_SCENARIOS = (
    "resources-list",
    "resources-read-text",
    "resources-read-binary",
    "resources-templates-read",
    "resources-subscribe",
    "resources-unsubscribe",
)
PROMPT_SCENARIOS = (
    "prompts-list",
    "prompts-get-simple",
    "prompts-get-with-args",
    "prompts-get-embedded-resource",
    "prompts-get-with-image",
)
SCENARIOS = TOOL_SCENARIOS + RESOURCE_SCENARIOS + PROMPT_SCENARIOS
TARGETS = ("sdk-server-direct", "mesh-agent", "sdk-server-adopted")
SUITE_TIMEOUT = 240.0
START_TIMEOUT = 60.0
"""Seconds a server under test has to start: generous, for a shared and busy CI host."""

_RESULT_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T")


@dataclass(frozen=True, slots=True)
class Outcome:
    """One scenario's verdict: it passed when no check failed; `failures` are the suite's own words."""

    passed: bool
    failures: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SuiteRun:
    """The suite's verdicts against one server, by scenario, and what its CLI printed."""

    target: str
    outcomes: dict[str, Outcome]
    output: str


@pytest.fixture(scope="module", params=TARGETS)
def suite(request: pytest.FixtureRequest, node_tools: NodeTools, tmp_path_factory: pytest.TempPathFactory) -> SuiteRun:
    """The whole suite, run once against one of the three servers (started and stopped here)."""
    target: str = request.param
    results = tmp_path_factory.mktemp(f"conformance-{target}")
    with pytest.MonkeyPatch.context() as env:  # a private mesh, as the `mesh_env` fixture gives a test
        for var in ("MESH_SECRET", "MESH_REGISTRY", "MESH_TRACER", "MESH_POLICY"):
            env.delenv(var, raising=False)
        env.setenv("MESH_NAME", f"t-{uuid.uuid4().hex[:10]}")
        env.setenv("MESH_HOME", str(tmp_path_factory.mktemp("mesh-home")))
        return anyio.run(_run_suite, target, node_tools, results)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_conformance_scenario_passes(suite: SuiteRun, scenario: str) -> None:
    outcome = suite.outcomes.get(scenario)
    assert outcome is not None, f"the suite did not run {scenario}:\n{suite.output[-2000:]}"
    assert outcome.passed, "; ".join(outcome.failures)


# -- helpers -------------------------------------------------------------------------------------


async def _run_suite(target: str, tools: NodeTools, results: Path) -> SuiteRun:
    async with _served(target) as url:
        argv = [str(tools.node), str(tools.conformance), "server", "--url", url, "--suite", "all", "-o", str(results)]
        with anyio.fail_after(SUITE_TIMEOUT):
            done = await anyio.run_process(argv, cwd=results, check=False)
    output = (done.stdout + done.stderr).decode(errors="replace")
    return SuiteRun(target=target, outcomes=_outcomes(results), output=output)


@asynccontextmanager
async def _served(target: str) -> AsyncGenerator[str]:
    """The /mcp URL of `target`, running until the block ends."""
    if target == "mesh-agent":
        async with MeshProcess(
            ["run", str(AGENT), "--port", "0", "--no-auth", "--no-mdns"], ready_timeout=START_TIMEOUT
        ) as agent:
            yield agent.url
    elif target == "sdk-server-adopted":
        command = f"{sys.executable} {SERVER}"
        args = ["run", "--command", command, "--name", "conformance", "--port", "0", "--no-auth", "--no-mdns"]
        async with MeshProcess(args, ready_timeout=START_TIMEOUT) as adopted:
            yield adopted.url
    else:
        async with _direct() as url:
            yield url


@asynccontextmanager
async def _direct() -> AsyncGenerator[str]:
    """The plain SDK server on Streamable HTTP on a free port, without the mesh."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    process = await anyio.open_process([sys.executable, str(SERVER), "--http", str(port)])
    try:
        async with httpx2.AsyncClient() as http:

            async def answers() -> bool:
                try:
                    await http.get(url)
                except httpx2.TransportError:
                    return False
                return True

            await until(answers, bool, timeout=START_TIMEOUT)
        yield url
    finally:
        process.terminate()
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


def _outcomes(results: Path) -> dict[str, Outcome]:
    """Each scenario's `checks.json` (one directory per scenario) as an Outcome."""
    found: dict[str, Outcome] = {}
    for checks in sorted(results.glob("server-*/checks.json")):
        match = _RESULT_DIR.match(checks.parent.name)
        if match is None:
            continue
        entries: list[dict[str, object]] = json.loads(checks.read_text())
        failures = tuple(
            f"{entry.get('id')}: {entry.get('errorMessage') or entry.get('description')}"
            for entry in entries
            if entry.get("status") == "FAILURE"
        )
        ran = any(entry.get("status") == "SUCCESS" for entry in entries)
        found[match["scenario"]] = Outcome(passed=ran and not failures, failures=failures)
    return found
