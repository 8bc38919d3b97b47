"""Claude Desktop's own servers, imported with `mesh import claude`, run on the mesh under `mesh up`.

The server is a plain SDK stdio server (`fixtures/stdio_notes.py`) that `mesh run --command` adopts;
its token travels in the environment (`MESH_RUN_ENV`), never on a command line that `ps` shows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import pytest

from mesh.runtime.node import MeshNode
from tests.integration.helpers import mesh_cli
from tests.integration.test_up import mesh_up

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

NOTES = str(Path(__file__).resolve().parent / "fixtures" / "stdio_notes.py")
TOKEN = "notes-s3cret-token"


def _command_lines() -> list[bytes]:
    """Every process's command line on this host (Linux /proc), as `ps` would show it."""
    found: list[bytes] = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            found.append(cmdline.read_bytes())
        except OSError:  # exited meanwhile
            continue
    return found


async def test_an_imported_stdio_server_serves_on_the_mesh_with_its_token_kept_off_command_lines(
    mesh_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "claude_desktop_config.json"
    gateway = {"command": sys.executable, "args": ["-m", "mesh", "gateway"], "env": mesh_env}
    notes = {"command": sys.executable, "args": [NOTES], "env": {"NOTES_TOKEN": TOKEN}}
    config.write_text(json.dumps({"mcpServers": {"Team Notes": notes, "agentplex": gateway}}))
    desk = tmp_path / "desk"
    desk.mkdir()

    imported = mesh_cli("import", "claude", "--config", str(config), "--out", str(desk / "mesh.toml"))

    assert imported.returncode == 0, imported.stderr
    assert "'Team Notes' is agent 'team-notes'" in imported.stderr
    assert TOKEN not in imported.stdout + imported.stderr
    async with mesh_up(str(desk), "--registry-port", "0") as up:
        ready = await up.wait_for("mesh up: ready:")
        registry = up.url("registry")
        assert registry is not None
        async with MeshNode("import-test", registry=registry) as node:
            changes = node.directory.watch()
            with changes, anyio.fail_after(30):
                while not any(i.healthy() for i in node.directory.instances("team-notes")):
                    with anyio.move_on_after(0.2):  # a probe's verdict is not a change: look again now and then
                        await changes.receive()
            outcome = await node.call("team-notes", "token_ok", {"expected": TOKEN}, timeout=30)
        command_lines = _command_lines()
        code = await up.interrupt()

    assert "1 of 1 agents" in ready
    assert outcome == {"token_ok": True}
    assert not [line for line in command_lines if TOKEN.encode() in line]
    assert TOKEN not in "\n".join(up.lines) + up.stderr
    assert code == 0
    assert up.lines[-1] == "mesh up: stopped"
