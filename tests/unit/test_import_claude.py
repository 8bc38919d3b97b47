"""`mesh import claude` turns Claude Desktop's MCP servers into a mesh.toml, secrets kept off the terminal."""

from __future__ import annotations

import json
import os
import shlex
import stat
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from mesh.cli import imports, install
from mesh.errors import ConfigError
from mesh.runtime.meshfile import RUN_ENV, RUN_HEADERS, load_plan

SECRETS = ("ghp_s3cret", "Bearer s3cret-header")
CLAUDE: dict[str, Any] = {
    "globalShortcut": "Ctrl+Space",
    "mcpServers": {
        "GitHub": {
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-github"],
            "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "ghp_s3cret"},
        },
        "filesystem": {
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-filesystem", "/Users/ada/My Docs"],
        },
        "docs": {"url": "https://docs.example.com/mcp", "headers": {"Authorization": "Bearer s3cret-header"}},
        "agentplex": {"command": "/opt/venv/bin/mesh", "args": ["gateway", "--mesh", "default"], "env": {}},
    },
}
EXPECTED_AGENTS = """
[[agents]]
name = "github"  # "GitHub" in Claude Desktop's config
command = "npx -y @modelcontextprotocol/server-github"

[agents.env]
GITHUB_PERSONAL_ACCESS_TOKEN = "ghp_s3cret"

[[agents]]
name = "filesystem"
command = "npx -y @modelcontextprotocol/server-filesystem '/Users/ada/My Docs'"

[[agents]]
name = "docs"
url = "https://docs.example.com/mcp"

[agents.headers]
Authorization = "Bearer s3cret-header"
"""


@pytest.fixture
def claude_config(tmp_path: Path, mesh_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Path:
    """The sample config in a private HOME, where `mesh install claude` would look; cwd a fresh directory."""
    del mesh_env
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("APPDATA", str(tmp_path / "home" / "AppData" / "Roaming"))
    monkeypatch.setenv("MESH_NAME", "desk")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    path = install.claude_config_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(CLAUDE, indent=2))
    return path


def mesh(*args: str) -> Result:
    app = typer.Typer()
    imports.register(app)
    return CliRunner().invoke(app, list(args))


def test_import_writes_a_mesh_file_with_every_server_but_the_gateway(claude_config: Path) -> None:
    result = mesh("import", "claude")

    assert result.exit_code == 0, result.stderr
    text = Path("mesh.toml").read_text()
    assert text.endswith(EXPECTED_AGENTS)
    assert f"from {claude_config}" in text
    assert '[mesh]\nname = "desk"\n' in text
    assert "`mesh install claude --mesh desk`" in text
    assert "wrote mesh.toml: 3 servers (github, filesystem, docs)" in result.stdout
    assert "next: mesh up, then mesh install claude --mesh desk," in result.stdout
    assert stat.S_IMODE(Path("mesh.toml").stat().st_mode) == 0o600


def test_the_written_file_is_a_mesh_file_that_mesh_up_accepts(claude_config: Path) -> None:
    del claude_config
    assert mesh("import", "claude").exit_code == 0

    plan = load_plan(".", mesh="desk")

    assert [(a.label, a.kind) for a in plan.agents] == [
        ("github", "command"),
        ("filesystem", "command"),
        ("docs", "url"),
    ]
    github, filesystem, docs = plan.agents
    assert github.environment() == {RUN_ENV: json.dumps({"GITHUB_PERSONAL_ACCESS_TOKEN": "ghp_s3cret"})}
    assert filesystem.target == "npx -y @modelcontextprotocol/server-filesystem '/Users/ada/My Docs'"
    assert docs.environment() == {RUN_HEADERS: json.dumps({"Authorization": "Bearer s3cret-header"})}


def test_no_secret_reaches_stdout_or_stderr_when_writing(claude_config: Path) -> None:
    del claude_config
    result = mesh("import", "claude")

    assert result.exit_code == 0
    assert not any(secret in result.stdout + result.stderr for secret in SECRETS)


def test_renamed_and_skipped_entries_are_told_on_stderr(claude_config: Path) -> None:
    del claude_config
    result = mesh("import", "claude", "--print")

    assert "'GitHub' is agent 'github' on the mesh" in result.stderr
    assert "skipped 'agentplex': the mesh's own gateway" in result.stderr


def test_print_masks_secrets_and_writes_nothing(claude_config: Path) -> None:
    del claude_config
    result = mesh("import", "claude", "--print")

    assert result.exit_code == 0, result.stderr
    assert not any(secret in result.stdout + result.stderr for secret in SECRETS)
    printed = tomllib.loads(result.stdout)
    assert printed["agents"][0]["env"] == {"GITHUB_PERSONAL_ACCESS_TOKEN": "***"}
    assert printed["agents"][2]["headers"] == {"Authorization": "***"}
    assert "--show-secrets prints them" in result.stdout
    assert not Path("mesh.toml").exists()


def test_print_with_show_secrets_prints_the_file_as_it_would_be_written(claude_config: Path) -> None:
    del claude_config
    result = mesh("import", "claude", "--print", "--show-secrets")

    assert result.stdout.endswith(EXPECTED_AGENTS)


def test_an_existing_file_is_kept_unless_forced(claude_config: Path) -> None:
    del claude_config
    Path("mesh.toml").write_text("# mine\n")

    refused = mesh("import", "claude")
    assert refused.exit_code == 1
    assert (
        refused.stderr == "mesh: error: mesh.toml exists: --force overwrites it, --print shows what would be written\n"
    )
    assert Path("mesh.toml").read_text() == "# mine\n"

    Path("mesh.toml").chmod(0o644)
    assert mesh("import", "claude", "--force").exit_code == 0
    assert Path("mesh.toml").read_text().endswith(EXPECTED_AGENTS)
    assert stat.S_IMODE(Path("mesh.toml").stat().st_mode) == 0o600


def test_config_and_out_name_other_files_and_out_may_be_a_directory(claude_config: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "claude.json"
    claude_config.rename(elsewhere)
    target = tmp_path / "desk"
    target.mkdir()

    result = mesh("import", "claude", "--config", str(elsewhere), "--out", str(target))

    assert result.exit_code == 0, result.stderr
    assert (target / "mesh.toml").read_text().endswith(EXPECTED_AGENTS)
    assert f"next: mesh up {target}, then" in result.stdout
    named = mesh("import", "claude", "--config", str(elsewhere), "--out", str(target / "desk.toml"))
    assert f"next: mesh up {target / 'desk.toml'}, then" in named.stdout
    assert len(load_plan(target / "desk.toml", mesh="desk").agents) == 3


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no Claude Desktop config at"),
        ('{"mcpServers": {', "not valid JSON (Expecting property name enclosed in double quotes at line 1"),
        ("[1, 2]", "holds a JSON list, not an object"),
        ('{"theme": "dark"}', 'no "mcpServers" object with servers in it: nothing to import'),
        ('{"mcpServers": []}', 'no "mcpServers" object with servers in it'),
        ('{"mcpServers": {"agentplex": {"command": "mesh", "args": ["gateway"]}}}', "no server to import besides"),
    ],
)
def test_a_config_that_cannot_be_imported_is_one_line_and_a_non_zero_exit(
    claude_config: Path, content: str | None, expected: str
) -> None:
    if content is None:
        claude_config.unlink()
    else:
        claude_config.write_text(content)

    result = mesh("import", "claude")

    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("mesh: error: ")
    assert expected in result.stderr
    assert not Path("mesh.toml").exists()


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"args": ["x"]}, 'mcpServers."bad": needs a command or a url (exactly one)'),
        ({"command": "a", "url": "https://h"}, "needs a command or a url (exactly one)"),
        ({"command": ""}, 'mcpServers."bad".command: not a non-empty string'),
        ({"command": "a", "args": "-y x"}, 'mcpServers."bad".args: not a list of strings'),
        ({"command": "a", "env": {"TOKEN": 42}}, 'mcpServers."bad".env.TOKEN: not a string'),
        ({"url": "ftp://h"}, 'mcpServers."bad".url: not an http:// or https:// URL'),
        ({"url": "https://h", "headers": ["x"]}, 'mcpServers."bad".headers: not an object'),
        ({"url": "https://h", "env": {"A": "b"}}, "env and args go with a command, not a url"),
        ({"command": "a", "headers": {"A": "b"}}, "headers go with a url, not a command"),
        ({"command": "a", "type": "http"}, 'type "http" does not go with a command'),
        ("npx server", 'mcpServers."bad": not an object'),
    ],
)
def test_a_malformed_server_entry_is_named_without_its_values(entry: object, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        imports.servers_of({"mcpServers": {"bad": entry}}, where="claude.json")

    assert expected in str(caught.value)


def test_an_error_about_a_secret_never_shows_the_secret() -> None:
    entry = {"url": "https://h", "headers": {"Authorization": "Bearer s3cret-header", "X-Retry": 3}}

    with pytest.raises(ConfigError) as caught:
        imports.servers_of({"mcpServers": {"bad": entry}}, where="claude.json")

    assert "headers.X-Retry: not a string" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_a_secret_is_not_in_the_repr_of_an_imported_server() -> None:
    servers = imports.servers_of(CLAUDE, where="claude.json")

    assert not any(secret in repr(servers) for secret in SECRETS)


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("github", "github"),
        ("GitHub", "github"),
        ("brave_search", "brave-search"),
        ("My Server (prod)", "my-server-prod"),
        ("Café-Übersicht", "cafe-ubersicht"),
        ("--weird--", "weird"),
        ("日本", "server"),
        ("x" * 80, "x" * 63),
    ],
)
def test_a_key_becomes_a_dns_label(key: str, name: str) -> None:
    assert imports.agent_name(key) == name


def test_keys_that_make_the_same_name_get_numbered() -> None:
    config = {
        "mcpServers": {"my server": {"command": "a"}, "my_server": {"command": "b"}, "My-Server": {"url": "http://h"}}
    }

    servers = imports.servers_of(config, where="claude.json")

    assert [s.name for s in servers.servers] == ["my-server", "my-server-2", "my-server-3"]


def test_gateways_of_any_mesh_are_skipped_whatever_their_key() -> None:
    config = {
        "mcpServers": {
            "agentplex-desk": {"command": "/v/bin/mesh", "args": ["gateway", "--mesh", "desk"]},
            "my-mesh": {"command": sys.executable, "args": ["-m", "mesh", "gateway"]},
            "keep": {"command": "mesh-like-tool", "args": ["gateway"]},
        }
    }

    servers = imports.servers_of(config, where="claude.json")

    assert [s.key for s in servers.servers] == ["keep"]
    assert len([n for n in servers.notes if "gateway" in n]) == 2


def test_sse_servers_are_skipped_and_streamable_http_ones_kept() -> None:
    config = {
        "mcpServers": {
            "old": {"type": "sse", "url": "https://h/sse"},
            "new": {"type": "http", "url": "https://h/mcp"},
            "local": {"type": "stdio", "command": "srv", "cwd": "/tmp"},
        }
    }

    servers = imports.servers_of(config, where="claude.json")

    assert [s.key for s in servers.servers] == ["new", "local"]
    assert "skipped 'old': it speaks SSE" in servers.notes[0]
    assert "'local': ignored cwd" in servers.notes


def test_strings_that_toml_must_escape_round_trip() -> None:
    awkward = 'say "hi"\\ \t\n\x7f\x01 é'
    config = {"mcpServers": {"a": {"command": awkward, "args": [awkward], "env": {"WEIRD KEY": awkward}}}}
    servers = imports.servers_of(config, where="claude.json")

    parsed = tomllib.loads(imports.mesh_toml(servers, mesh="m", source=Path("c.json")))

    assert parsed["agents"][0]["env"] == {"WEIRD KEY": awkward}
    assert parsed["agents"][0]["command"] == shlex.join([awkward, awkward])


def test_print_and_out_together_are_refused(claude_config: Path) -> None:
    del claude_config
    result = mesh("import", "claude", "--print", "--out", "x.toml")

    assert result.exit_code == 1
    assert result.stderr == "mesh: error: --print and --out: choose one\n"
    assert os.listdir(".") == []
