"""Where a mesh lives: its name, its home directory, and the files kept there.

`MESH_NAME` picks the mesh (default `default`); `MESH_HOME` moves every file the mesh
keeps (secret, databases, spools) so a test or a second user gets a separate world.
Owns paths and environment lookup only; it creates directories but no files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from mesh.naming import check_name

__all__ = ["DEFAULT_REGISTRY_PORT", "DEFAULT_TRACER_PORT", "MeshPaths", "mesh_name", "mesh_paths"]

DEFAULT_REGISTRY_PORT = 7420
"""The registry's documented default port (`mesh registry`)."""

DEFAULT_TRACER_PORT = 7421
"""The sidecar tracer's documented default port (`mesh tracer`)."""


def mesh_name(explicit: str | None = None) -> str:
    """The mesh name: the explicit one, else `MESH_NAME`, else `default`."""
    return check_name(explicit or os.environ.get("MESH_NAME") or "default", what="mesh name")


@dataclass(frozen=True, slots=True)
class MeshPaths:
    """The files one mesh keeps on this host."""

    config_dir: Path
    data_dir: Path

    @property
    def secret(self) -> Path:
        """The mesh secret (mode 0600)."""
        return self.config_dir / "secret"

    @property
    def registry_db(self) -> Path:
        """The registry's SQLite database (inventory, traces, approvals)."""
        return self.data_dir / "registry.sqlite3"

    @property
    def tracer_db(self) -> Path:
        """The sidecar tracer's SQLite database."""
        return self.data_dir / "tracer.sqlite3"

    @property
    def spool_dir(self) -> Path:
        """Where an agent keeps spans its tracer has not acknowledged yet."""
        return self.data_dir / "spool"

    def ensure(self) -> MeshPaths:
        """Create both directories (owner-only) and return self."""
        for directory in (self.config_dir, self.data_dir):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self


def mesh_paths(name: str | None = None) -> MeshPaths:
    """The paths of mesh `name` under `MESH_HOME`, or the user's platform directories."""
    mesh = mesh_name(name)
    home = os.environ.get("MESH_HOME")
    if home:
        root = Path(home).expanduser() / mesh
        return MeshPaths(config_dir=root / "config", data_dir=root / "data")
    return MeshPaths(
        config_dir=Path(platformdirs.user_config_dir("agentplex")) / mesh,
        data_dir=Path(platformdirs.user_data_dir("agentplex")) / mesh,
    )
