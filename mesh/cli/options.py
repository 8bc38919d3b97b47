"""Options and output conventions shared by every `mesh` command (DESIGN §4).

`--mesh` on every command; `--json` prints pure JSON on stdout and nothing else; user
mistakes are one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console

__all__ = ["JsonOpt", "MeshOpt", "RegistryOpt", "err", "fail", "out", "print_json"]

MeshOpt = Annotated[
    str | None,
    typer.Option("--mesh", envvar="MESH_NAME", help="Mesh name: meshes with different names never see each other."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print pure JSON on stdout.")]
LanOpt = Annotated[
    bool,
    typer.Option("--lan", envvar="MESH_LAN", help="Look for agents on the LAN by mDNS, not only on this machine."),
]
RegistryOpt = Annotated[
    str | None,
    typer.Option("--registry", envvar="MESH_REGISTRY", help="Registry URL (default: found by mDNS)."),
]

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


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
