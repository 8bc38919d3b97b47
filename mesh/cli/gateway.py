"""`mesh gateway`: serve the whole mesh as one MCP server on stdio (what Claude Desktop launches).

stdout carries only MCP messages; everything else (logs, the start-up line) goes to stderr. The
gateway ends when its client closes stdin, or at once on SIGINT/SIGTERM.
"""

from __future__ import annotations

import signal
from typing import Annotated

import anyio
import typer

from mesh.cli.options import MeshOpt, RegistryOpt
from mesh.config import mesh_name

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add `mesh gateway` to `app`."""
    app.command("gateway")(gateway)


def gateway(
    timeout: Annotated[float | None, typer.Option(help="Seconds a tool call may take (default: 30).")] = None,
    registry: RegistryOpt = None,
    mesh: MeshOpt = None,
) -> None:
    """Serve every tool of the mesh over stdio as AGENT__TOOL, following agents as they come and go."""
    from mesh.gateway import serve_gateway  # the SDK server is only imported when a gateway runs

    name = mesh_name(mesh)
    # The SDK reads stdin in a worker thread that no cancellation reaches, so a graceful stop
    # would wait for the client's next line. The gateway announces nothing and holds no state:
    # the default action (end now, quietly) is the clean exit.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    # Plain asyncio, not uvloop: stdio sets the pace here, and mDNS answers arrive sooner on it.
    anyio.run(lambda: serve_gateway(mesh=name, registry=registry, call_timeout=timeout))
