"""Options and output conventions shared by every `mesh` command (DESIGN §4).

`--mesh` on every command; `--json` prints pure JSON on stdout and nothing else; user
mistakes are one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import BaseModel

from mesh.runtime.running import running_meshes

if TYPE_CHECKING:
    from rich.console import Console

    out: Console
    """The console commands print to (stdout)."""
    err: Console
    """The console for what is not the answer (stderr)."""

__all__ = [
    "FoundMeshOpt",
    "JsonOpt",
    "MeshOpt",
    "RegistryOpt",
    "err",
    "fail",
    "found_mesh",
    "mesh_flag",
    "out",
    "print_json",
]

MeshOpt = Annotated[
    str | None,
    typer.Option("--mesh", envvar="MESH_NAME", help="Mesh name: meshes with different names never see each other."),
]


def found_mesh(given: str | None) -> str | None:
    """The mesh a command that looks at a mesh uses: the one given, else the one running here.

    With no `--mesh` and no `MESH_NAME`, and exactly one mesh other than `default` running on this
    host (and `default` not), that mesh, said on stderr: a second terminal finds what `mesh up`
    started without being told its name. Otherwise `given` (None: `default`, as `mesh_name` decides).
    """
    if given:
        return given
    chosen, others = _running_here()
    if chosen is not None:
        sys.stderr.write(f"mesh: using mesh {chosen!r} (the one running here; --mesh to choose)\n")
    elif len(others) > 1:
        sys.stderr.write(f"mesh: using mesh 'default'; running here: {', '.join(others)} (--mesh to choose)\n")
    return chosen


def mesh_flag(mesh: str) -> str:
    """` --mesh NAME` where a command typed in a new terminal would not find `mesh` on its own, else ``."""
    chosen, _ = _running_here()
    return "" if mesh == (chosen or "default") else f" --mesh {mesh}"


def _running_here() -> tuple[str | None, list[str]]:
    """(the mesh to use when none is named, or None for `default`; the meshes other than `default` running)."""
    running = running_meshes()
    others = [name for name in running if name != "default"]
    if "default" in running or len(others) != 1:
        return None, others
    return others[0], others


FoundMeshOpt = Annotated[
    str | None,
    typer.Option(
        "--mesh",
        envvar="MESH_NAME",
        callback=found_mesh,
        help="Mesh name (default: the one mesh running on this host, else `default`).",
    ),
]
"""`--mesh` of commands that use a running mesh (ls, call, traces, approvals, audit, token); `MeshOpt` starts one."""
JsonOpt = Annotated[bool, typer.Option("--json", help="Print pure JSON on stdout.")]
LanOpt = Annotated[
    bool,
    typer.Option("--lan", envvar="MESH_LAN", help="Look for agents on the LAN by mDNS, not only on this machine."),
]
RegistryOpt = Annotated[
    str | None,
    typer.Option(
        "--registry",
        envvar="MESH_REGISTRY",
        help="Registry URL, or several replicas comma-separated (default: found by mDNS).",
    ),
]


def __getattr__(name: str) -> Any:
    """`out` and `err`, made on first use: a command that prints only JSON does not import rich."""
    if name not in ("out", "err"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from rich.console import Console

    console = globals()[name] = Console(stderr=name == "err", soft_wrap=True)
    return console


def print_json(value: Any) -> None:
    """Write `value` as JSON to stdout (pydantic models and lists of them included)."""
    sys.stdout.write(json.dumps(_plain(value), indent=2, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `mesh: error: message` on stderr and exit with `code`."""
    sys.stderr.write(f"mesh: error: {message}\n")
    raise typer.Exit(code)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}  # pyright: ignore[reportUnknownVariableType]
    return value
