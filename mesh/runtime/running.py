"""Which meshes are running on this host: a marker file per serving process, in its mesh's data dir.

`mesh up` writes `DATA_DIR/running/PID` (the process's start time inside, so a recycled pid does not
count) and removes it on exit; a marker whose process is gone is ignored and swept. Owns the markers
only: which command may pick a running mesh, and what it says, is the CLI's business.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Generator
from pathlib import Path

import platformdirs

from mesh.config import MeshPaths, mesh_paths
from mesh.errors import ConfigError
from mesh.naming import check_name

__all__ = ["marked_running", "running_meshes"]


@contextlib.contextmanager
def marked_running(paths: MeshPaths) -> Generator[Path]:
    """Mark this process as running a part of the mesh at `paths` until the block ends."""
    folder = paths.ensure().data_dir / "running"
    folder.mkdir(exist_ok=True, mode=0o700)
    marker = folder / str(os.getpid())
    marker.write_text(_started(os.getpid()) or "")
    try:
        yield marker
    finally:
        marker.unlink(missing_ok=True)


def running_meshes() -> list[str]:
    """The names of the meshes with a live marker on this host (under `MESH_HOME`, or the platform dirs)."""
    home = os.environ.get("MESH_HOME")
    root = Path(home).expanduser() if home else Path(platformdirs.user_data_dir("agentplex"))
    try:
        candidates = sorted(p.name for p in root.iterdir() if p.is_dir())
    except OSError:
        return []
    found: list[str] = []
    for name in candidates:
        try:
            check_name(name, what="mesh name")
        except ConfigError:
            continue
        if _any_alive(mesh_paths(name).data_dir / "running"):
            found.append(name)
    return found


def _any_alive(folder: Path) -> bool:
    alive = False
    try:
        markers = list(folder.iterdir())
    except OSError:
        return False
    for marker in markers:
        if _alive(marker):
            alive = True
        else:
            marker.unlink(missing_ok=True)  # its process died without cleaning up (SIGKILL, power loss)
    return alive


def _alive(marker: Path) -> bool:
    """True when the marker's process still runs and is the one that wrote it."""
    try:
        pid = int(marker.name)
        written = marker.read_text().strip()
    except (ValueError, OSError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process holds the pid now
        return False
    started = _started(pid)
    return not written or started is None or started == written


def _started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux /proc), None where that is unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[19] if len(fields) > 19 else None
