"""The README stays a newcomer's page: short, and every `mesh ...` command in it is one the CLI knows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_WORD = re.compile(r"^[a-z][a-z0-9-]*$")


def readme_commands() -> set[tuple[str, ...]]:
    """The first two words after `mesh` of every command in the README's fenced blocks (fewer if not words)."""
    found: set[tuple[str, ...]] = set()
    for block in _FENCE.findall(README.read_text(encoding="utf-8")):
        for line in block.splitlines():
            for command in re.split(r"&&|\|\||[;|&]", line.split("#", 1)[0]):
                words = command.split()
                if len(words) >= 2 and words[0] == "mesh" and _WORD.match(words[1]):
                    rest = words[2:3] if len(words) > 2 and _WORD.match(words[2]) else []
                    found.add((words[1], *rest))
    return found


def test_the_readme_is_at_most_twelve_thousand_characters() -> None:
    assert len(README.read_text(encoding="utf-8")) <= 12_000


def test_every_mesh_command_in_the_readme_is_one_the_cli_knows() -> None:
    commands = readme_commands()
    # `mesh GROUP SUB --help` fails for a SUB the group lacks; for a command, SUB is its first argument.
    unknown = [
        " ".join(words)
        for words in sorted(commands)
        if subprocess.run(
            [sys.executable, "-m", "mesh", *words, "--help"], capture_output=True, check=False, timeout=60
        ).returncode
        != 0
    ]

    assert {"up", "ls"} <= {words[0] for words in commands}
    assert unknown == []


def test_a_command_the_cli_does_not_know_is_caught() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mesh", "traces", "shw", "--help"], capture_output=True, check=False, timeout=60
    )
    assert result.returncode != 0
