"""docs/configuration.md names every environment variable the code reads, every mesh.toml key and every flag."""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from mesh.cli import _register, app  # pyright: ignore[reportPrivateUsage] (the CLI wires its commands on start)
from mesh.runtime.meshfile import AgentEntry, MeshSection, RegistrySection

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
_VARIABLE = re.compile(r"^MESH_[A-Z0-9_]+$")
COMMON_FLAGS = {"--mesh", "--json", "--registry"}
"""Documented once, above the flags table, as every command (or listing) takes them."""


def mesh_variables() -> set[str]:
    """Every `MESH_...` string in the code of `mesh` and `registry`, except names listed in `__all__`."""
    found: set[str] = set()
    for package in ("mesh", "registry"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            exported = {
                id(element)
                for node in ast.walk(tree)
                if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets)
                for element in ast.walk(node.value)
            }
            found |= {
                node.value
                for node in ast.walk(tree)
                if isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and _VARIABLE.match(node.value)
                and id(node) not in exported
            }
    return found


def commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """(`mesh ...`, click command) for every command and group with options of its own."""
    subcommands: dict[str, Any] = getattr(command, "commands", {})
    if not subcommands or (path and command.params):
        yield " ".join(("mesh", *path)), command
    for name, sub in sorted(subcommands.items()):
        yield from commands(sub, (*path, name))


@functools.cache
def flags() -> list[tuple[str, str]]:
    """(`mesh ...`, flag) for every option but the common ones; the commands are wired once per process."""
    _register()
    return [
        (name, param.opts[0])
        for name, command in commands(typer.main.get_command(app))
        for param in command.params
        if param.param_type_name == "option" and param.opts[0] not in COMMON_FLAGS
    ]


def test_the_code_reads_the_variables_we_expect_to_find() -> None:
    assert {"MESH_NAME", "MESH_HOME", "MESH_TOKEN", "MESH_APPROVAL_TTL"} <= mesh_variables()


@pytest.mark.parametrize("variable", sorted(mesh_variables()))
def test_every_mesh_variable_is_documented(variable: str) -> None:
    assert f"| `{variable}` |" in DOC


@pytest.mark.parametrize(
    "key",
    [f"[mesh] {k}" for k in MeshSection.model_fields]
    + [f"[registry] {k}" for k in RegistrySection.model_fields]
    + [f"[[agents]] {k}" for k in AgentEntry.model_fields],
)
def test_every_mesh_toml_key_is_documented(key: str) -> None:
    assert f"| `{key}` |" in DOC


def test_every_flag_is_documented() -> None:
    found = flags()
    missing = [f"{name} {flag}" for name, flag in found if f"| `{name}` | `{flag}` |" not in DOC]

    assert len(found) > 40
    assert missing == []
