"""`mesh token`: a bearer token for clients outside the mesh (MCP Inspector, another SDK)."""

from __future__ import annotations

from typing import Annotated

import typer

from mesh.cli.options import MeshOpt
from mesh.identity import ANY_AGENT, MeshKeys, parse_duration

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add `mesh token` to `app`."""
    app.command("token")(token)


def token(
    caller: Annotated[str, typer.Option(help="Who the token says is calling.")] = "mesh-cli",
    audience: Annotated[str, typer.Option(help="The agent it is for ('*': any agent of this mesh).")] = ANY_AGENT,
    ttl: Annotated[str, typer.Option(help="How long it lives: 30s, 10m, 2h.")] = "10m",
    mesh: MeshOpt = None,
) -> None:
    """Print a token to send as `Authorization: Bearer <token>`."""
    keys = MeshKeys.load(mesh)
    print(keys.mint(caller, audience, ttl=parse_duration(ttl)))
