"""`mesh.__all__` is exactly what is public, and every module imports on its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import mesh

ROOT = Path(__file__).resolve().parents[1]


def test_all_names_exist_and_nothing_public_is_left_out() -> None:
    assert all(hasattr(mesh, name) for name in mesh.__all__)
    public = {name for name in vars(mesh) if not name.startswith("_")}
    submodules = {name for name, value in vars(mesh).items() if type(value).__name__ == "module"}
    assert public - submodules == set(mesh.__all__)


def test_the_dsl_of_the_design_is_importable() -> None:
    from mesh import Agent, Context, MeshError, PeerUnavailable, PolicyDenied

    assert issubclass(PeerUnavailable, MeshError)
    assert issubclass(PolicyDenied, MeshError)
    assert Agent
    assert Context


def _all_modules() -> list[str]:
    names: list[str] = []
    for package in ("mesh", "registry"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__main__":
                continue
            if parts[-1] == "__init__":
                parts.pop()
            names.append(".".join(parts))
    return names


def test_every_module_imports_in_a_fresh_interpreter() -> None:
    """Each module imported alone (the package cache cleared in between) catches import cycles."""
    script = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    for mod in [m for m in sys.modules if m == 'mesh' or m.startswith(('mesh.', 'registry'))]:\n"
        "        del sys.modules[mod]\n"
        "    importlib.import_module(name)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *_all_modules()], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["agents"])
def test_agents_is_not_an_import_package(name: str) -> None:
    assert not (ROOT / name / "__init__.py").exists()
