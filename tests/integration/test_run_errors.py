"""Every user mistake with `mesh run` and `mesh call` is one line on stderr and a non-zero exit."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.integration.helpers import mesh_cli

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
ECHO = str(ROOT / "agents" / "echo.py")


def _assert_one_line_error(result: object, fragment: str) -> None:
    code: int = result.returncode  # type: ignore[attr-defined]
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert code != 0
    assert "Traceback" not in stderr
    assert stderr.strip().count("\n") == 0, stderr
    assert fragment in stderr


def test_a_missing_file_is_named(mesh_env: dict[str, str], tmp_path: Path) -> None:
    _assert_one_line_error(mesh_cli("run", str(tmp_path / "nope.py")), "no such file")


def test_a_module_without_an_agent_is_refused(mesh_env: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    _assert_one_line_error(mesh_cli("run", str(empty)), "defines no mesh.Agent")


def test_two_agents_without_an_attribute_ask_for_one(mesh_env: dict[str, str], tmp_path: Path) -> None:
    two = tmp_path / "two.py"
    two.write_text("from mesh import Agent\na = Agent('one')\nb = Agent('two')\n")
    _assert_one_line_error(mesh_cli("run", str(two)), "defines 2 Agents (a, b)")


def test_a_module_attribute_target_picks_one_of_two(mesh_env: dict[str, str], tmp_path: Path) -> None:
    two = tmp_path / "two.py"
    two.write_text("from mesh import Agent\na = Agent('one')\nb = Agent('two')\n")
    _assert_one_line_error(mesh_cli("run", f"{two}:c"), "'c' is nothing, not a mesh.Agent")


def test_an_invalid_agent_name_is_refused(mesh_env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from mesh import Agent\na = Agent('Not_A_Label')\n")
    _assert_one_line_error(mesh_cli("run", str(bad)), "invalid agent name 'Not_A_Label'")
    _assert_one_line_error(mesh_cli("run", ECHO, "--name", "no spaces"), "invalid agent name")


def test_a_module_that_fails_to_import_is_reported_in_one_line(mesh_env: dict[str, str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import nonexistent_module_xyz\n")
    _assert_one_line_error(mesh_cli("run", str(broken)), "ModuleNotFoundError")


def test_a_port_in_use_is_named(mesh_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        _assert_one_line_error(mesh_cli("run", ECHO, "--no-mdns", "--port", str(port)), f"port {port}")


def test_no_auth_is_refused_on_the_lan(mesh_env: dict[str, str]) -> None:
    _assert_one_line_error(mesh_cli("run", ECHO, "--no-auth", "--lan"), "--no-auth")


def test_bad_meta_is_refused(mesh_env: dict[str, str]) -> None:
    _assert_one_line_error(mesh_cli("run", ECHO, "--meta", "novalue"), "KEY=VALUE")


def test_calling_an_unreachable_url_is_one_line(mesh_env: dict[str, str]) -> None:
    _assert_one_line_error(mesh_cli("call", "--url", "http://127.0.0.1:9/mcp", "echo"), "cannot reach")
