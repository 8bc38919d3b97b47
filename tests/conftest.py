"""Shared fixtures: every test gets its own mesh name and MESH_HOME."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.testing.postgres import PostgresCluster, postgres_cluster


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def mesh_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A private mesh for this test: unique name, its own MESH_HOME, no inherited mesh settings."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    home = tmp_path / "mesh-home"
    home.mkdir()
    for var in ("MESH_SECRET", "MESH_REGISTRY", "MESH_REGISTRY_DB", "MESH_TRACER", "MESH_POLICY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MESH_NAME", name)
    monkeypatch.setenv("MESH_HOME", str(home))
    return {"MESH_NAME": name, "MESH_HOME": str(home)}


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the whole run (initdb + pg_ctl, removed afterwards)."""
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_url(postgres: PostgresCluster) -> str:
    """A fresh, empty database in the run's cluster, for one test."""
    return postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
