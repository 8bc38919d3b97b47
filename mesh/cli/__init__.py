"""The `mesh` command line (DESIGN §4): one module per command group, wired here.

A run wires only the command it was asked for (`_COMMANDS`), so each command imports what it
needs and no more: `mesh ls` does not pay for the MCP SDK, `mesh up` for the gateway. Help, an
unknown word and the commands that live outside `mesh` wire everything. Those (the registry and
tracer services) plug in through the `agentplex.commands` entry point group, so `mesh` never
imports `registry`.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Final

import typer

from mesh.errors import MeshError

__all__ = ["app", "main"]

app = typer.Typer(
    name="mesh",
    help="agentplex: an MCP-native agent mesh.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


@app.callback()
def _mesh() -> None:
    # A group with one command wired would otherwise run it without its name (`mesh ls` -> `ls`).
    pass


_COMMANDS: Final = {
    "run": "run",
    "call": "call",
    "ls": "ls",
    "token": "token",
    "login": "token",
    "logout": "token",
    "whoami": "token",
    "approvals": "approvals",
    "audit": "audit",
    "traces": "traces",
    "up": "up",
    "gateway": "gateway",
    "install": "install",
    "import": "imports",
}
"""Each command word of `mesh` and the module of `mesh.cli` that wires it, in the order help lists them."""


def _register(argv: Sequence[str] | None = None) -> None:
    """Wire into `app` what `argv` asks for: one of `_COMMANDS`, only it; a plugged-in command, the
    plugged-in ones; anything else (help, an unknown word, `argv` None) every command."""
    word = next((arg for arg in argv if not arg.startswith("-")), None) if argv is not None else None
    wanted = _COMMANDS.get(word or "")
    if wanted is not None:
        importlib.import_module(f"mesh.cli.{wanted}").register(app)
        return
    ours = list(dict.fromkeys(_COMMANDS.values()))
    if word is None:  # help lists ours first
        for module in ours:
            importlib.import_module(f"mesh.cli.{module}").register(app)
        ours = []
    from importlib.metadata import entry_points  # reads every installed distribution's metadata

    for ep in entry_points(group="agentplex.commands"):
        ep.load()(app)
    if word is not None and word in {info.name for info in app.registered_commands}:
        return
    for module in ours:
        importlib.import_module(f"mesh.cli.{module}").register(app)


def main() -> None:
    """Entry point of the `mesh` console script."""
    logging.basicConfig(
        level=os.environ.get("MESH_LOG_LEVEL", "WARNING").upper(),
        format="mesh: %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _register(sys.argv[1:])
    try:
        app()
    except MeshError as exc:
        _exit_with(exc)
    except BaseExceptionGroup as group:
        # A task group wraps what a task raised; a user mistake inside one is still one line.
        mistakes, _ = group.split(MeshError)
        if mistakes is None:
            raise
        from mesh.peers.failures import first_leaf  # the MCP SDK's errors: imported only when needed

        _exit_with(first_leaf(mistakes))
    except KeyboardInterrupt:
        sys.exit(130)


def _exit_with(exc: BaseException) -> None:
    sys.stderr.write(f"mesh: error: {exc}\n")
    sys.exit(1)
