"""Shared fixtures: every test gets its own mesh name and MESH_HOME."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def mesh_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A private mesh for this test: unique name, its own MESH_HOME, no inherited mesh settings."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    home = tmp_path / "mesh-home"
    home.mkdir()
    for var in ("MESH_SECRET", "MESH_REGISTRY", "MESH_TRACER", "MESH_POLICY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MESH_NAME", name)
    monkeypatch.setenv("MESH_HOME", str(home))
    return {"MESH_NAME": name, "MESH_HOME": str(home)}
