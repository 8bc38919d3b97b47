"""The `mesh` command line (DESIGN §4): one module per command group, wired here.

Commands that live outside `mesh` (the registry and tracer services) plug in through the
`agentplex.commands` entry point group, so `mesh` never imports `registry`.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib.metadata import entry_points

import typer

from mesh.errors import MeshError
from mesh.peers.failures import first_leaf

__all__ = ["app", "main"]

app = typer.Typer(
    name="mesh",
    help="agentplex: an MCP-native agent mesh.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _register() -> None:
    from mesh.cli import approvals, audit, call, gateway, imports, install, ls, run, token, traces, up

    run.register(app)
    call.register(app)
    ls.register(app)
    token.register(app)
    approvals.register(app)
    audit.register(app)
    traces.register(app)
    up.register(app)
    gateway.register(app)
    install.register(app)
    imports.register(app)
    for ep in entry_points(group="agentplex.commands"):
        ep.load()(app)


def main() -> None:
    """Entry point of the `mesh` console script."""
    logging.basicConfig(
        level=os.environ.get("MESH_LOG_LEVEL", "WARNING").upper(),
        format="mesh: %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _register()
    try:
        app()
    except MeshError as exc:
        _exit_with(exc)
    except BaseExceptionGroup as group:
        # A task group wraps what a task raised; a user mistake inside one is still one line.
        mistakes, _ = group.split(MeshError)
        if mistakes is None:
            raise
        _exit_with(first_leaf(mistakes))
    except KeyboardInterrupt:
        sys.exit(130)


def _exit_with(exc: BaseException) -> None:
    sys.stderr.write(f"mesh: error: {exc}\n")
    sys.exit(1)
