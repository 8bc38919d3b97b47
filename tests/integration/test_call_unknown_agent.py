"""`mesh call` to an unknown agent: one line, the close names, and no wait for it to appear."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from mesh.testing import AgentProcess, RegistryProcess
from tests.integration.helpers import mesh_cli

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ECHO = str(Path(__file__).resolve().parents[2] / "agents" / "echo.py")


async def test_a_misspelt_agent_is_one_line_suggesting_the_close_name(mesh_env: dict[str, str]) -> None:
    async with RegistryProcess() as registry, AgentProcess(ECHO, "--registry", registry.base_url):
        typo = await anyio.to_thread.run_sync(
            lambda: mesh_cli("call", "ech", "echo", "--arg", "text=hi", "--registry", registry.base_url)
        )
        known = await anyio.to_thread.run_sync(
            lambda: mesh_cli("call", "echo", "echo", "--arg", "text=hi", "--registry", registry.base_url)
        )
    assert typo.returncode == 1
    assert typo.stderr.strip().splitlines()[-1] == (
        f"mesh: error: no agent named 'ech' in mesh '{mesh_env['MESH_NAME']}'; did you mean echo?"
    )
    assert known.returncode == 0, known.stderr
    assert known.stdout.strip() == "hi"
