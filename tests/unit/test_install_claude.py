"""`mesh install claude` writes the gateway into Claude Desktop's config and keeps everything else."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from mesh.cli import install

OTHER_SERVER = {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"], "env": {}}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mesh_env: dict[str, str]) -> Path:
    """A private HOME, so the real Claude Desktop config is never touched."""
    del mesh_env  # a unique mesh name and MESH_HOME for this test
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("APPDATA", str(tmp_path / "home" / "AppData" / "Roaming"))
    return tmp_path / "home"


def mesh(*args: str) -> Result:
    app = typer.Typer()
    install.register(app)
    return CliRunner().invoke(app, list(args))


def config_file() -> Path:
    return install.claude_config_path()


def read_config() -> dict[str, Any]:
    return json.loads(config_file().read_text())


def test_install_writes_an_entry_claude_desktop_can_launch(home: Path) -> None:
    result = mesh("install", "claude")

    assert result.exit_code == 0, result.stderr
    assert config_file().is_relative_to(home)
    name = os.environ["MESH_NAME"]
    entry = read_config()["mcpServers"][f"agentplex-{name}"]
    assert Path(entry["command"]).is_absolute()
    assert Path(entry["command"]).exists()
    assert entry["args"][-3:] == ["gateway", "--mesh", name]
    assert entry["env"] == {"MESH_NAME": name, "MESH_HOME": os.environ["MESH_HOME"]}
    assert "restart Claude Desktop" in result.stdout


def test_other_servers_and_settings_in_the_file_are_kept(home: Path) -> None:
    config_file().parent.mkdir(parents=True)
    original = {"globalShortcut": "Ctrl+Space", "mcpServers": {"filesystem": OTHER_SERVER}, "theme": {"dark": True}}
    config_file().write_text(json.dumps(original, indent=4))

    result = mesh("install", "claude")

    assert result.exit_code == 0, result.stderr
    after = read_config()
    assert after["mcpServers"]["filesystem"] == OTHER_SERVER
    assert {k: v for k, v in after.items() if k != "mcpServers"} == {
        "globalShortcut": "Ctrl+Space",
        "theme": {"dark": True},
    }
    assert list(after["mcpServers"]) == ["filesystem", f"agentplex-{os.environ['MESH_NAME']}"]


def test_installing_again_updates_the_entry_in_place(home: Path) -> None:
    key = f"agentplex-{os.environ['MESH_NAME']}"
    config_file().parent.mkdir(parents=True)
    stale = {"command": "/old/mesh", "args": ["gateway"], "env": {}}
    config_file().write_text(json.dumps({"mcpServers": {key: stale, "filesystem": OTHER_SERVER}}))

    result = mesh("install", "claude")

    assert result.exit_code == 0, result.stderr
    servers = read_config()["mcpServers"]
    assert list(servers) == [key, "filesystem"]
    assert servers[key]["command"] != "/old/mesh"
    assert result.stdout.startswith("updated")


def test_a_config_that_is_not_json_is_left_untouched_with_one_line_of_error(home: Path) -> None:
    config_file().parent.mkdir(parents=True)
    broken = b'{"mcpServers": {"filesystem": '
    config_file().write_bytes(broken)

    result = mesh("install", "claude")

    assert result.exit_code != 0
    assert result.stderr.startswith("mesh: error: cannot update")
    assert result.stderr.count("\n") == 1
    assert config_file().read_bytes() == broken
    assert [p.name for p in config_file().parent.iterdir()] == [config_file().name]  # no temp file left


def test_print_shows_the_entry_and_writes_nothing(home: Path) -> None:
    result = mesh("install", "claude", "--print", "--mesh", "default")

    assert result.exit_code == 0, result.stderr
    entry = json.loads(result.stdout)["mcpServers"]["agentplex"]
    assert entry["args"][-3:] == ["gateway", "--mesh", "default"]
    assert entry["env"]["MESH_NAME"] == "default"
    assert not config_file().exists()


def test_config_points_the_install_at_another_file(home: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "claude.json"

    result = mesh("install", "claude", "--config", str(target))

    assert result.exit_code == 0, result.stderr
    assert f"agentplex-{os.environ['MESH_NAME']}" in json.loads(target.read_text())["mcpServers"]
    assert not config_file().exists()


@pytest.mark.parametrize(
    ("platform", "expected"),
    [
        ("darwin", "home/Library/Application Support/Claude/claude_desktop_config.json"),
        ("win32", "home/AppData/Roaming/Claude/claude_desktop_config.json"),
        ("linux", "home/.config/Claude/claude_desktop_config.json"),
    ],
)
def test_the_config_path_follows_each_os_from_home_at_call_time(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform: str, expected: str
) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    assert install.claude_config_path() == tmp_path / expected
