"""docs/writing-agents.md runs as written: its files, its tests (run by pytest as a user would) and its commands.

Each fenced block that starts with a file name (`# orders.py`, `// policy.cedar`, `# mesh.toml`)
is written to a fresh directory; the tests among them run there in their own pytest process,
and every `mesh ...` command in a shell block must be one the CLI knows.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mesh.runtime.meshfile import load_plan

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-agents.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_NAMED = re.compile(r"^(?:#|//) ([\w.-]+\.(?:py|cedar|toml))\n")
_WORD = re.compile(r"^[a-z][a-z0-9-]*$")


def blocks() -> list[tuple[str, str]]:
    """(language, text) of every fenced block of the page."""
    return _FENCE.findall(DOC.read_text(encoding="utf-8"))


def files() -> dict[str, str]:
    """The files the page's blocks name, by name."""
    return {named[1]: text for _, text in blocks() if (named := _NAMED.match(text))}


def test_the_page_names_its_agents_policy_mesh_file_and_tests() -> None:
    assert set(files()) == {
        "orders.py",
        "support.py",
        "policy.cedar",
        "mesh.toml",
        "test_support_unit.py",
        "test_support_mesh.py",
    }


def test_the_agents_and_their_tests_run_as_written(tmp_path: Path) -> None:
    for name, text in files().items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "PYTEST_"))}
    tests = sorted(name for name in files() if name.startswith("test_"))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "3 passed" in result.stdout


def test_the_mesh_file_is_a_valid_plan_of_both_agents(tmp_path: Path, mesh_env: dict[str, str]) -> None:
    for name, text in files().items():
        (tmp_path / name).write_text(text, encoding="utf-8")

    plan = load_plan(tmp_path, mesh=mesh_env["MESH_NAME"])

    assert sorted(agent.label for agent in plan.agents) == ["orders", "support"]


def test_every_command_on_the_page_is_one_the_cli_knows() -> None:
    commands: set[tuple[str, ...]] = set()
    for language, text in blocks():
        if language != "sh":
            continue
        for line in text.splitlines():
            words = line.split("#", 1)[0].replace("&", " ").split()
            if len(words) >= 2 and words[0] == "mesh" and _WORD.match(words[1]):
                commands.add((words[1], *(words[2:3] if len(words) > 2 and _WORD.match(words[2]) else [])))
    unknown = [
        words
        for words in sorted(commands)
        if subprocess.run(
            [sys.executable, "-m", "mesh", *words, "--help"], capture_output=True, check=False, timeout=60
        ).returncode
    ]

    assert {("registry",), ("run",), ("call", "support"), ("traces", "ls")} <= commands
    assert unknown == []
