"""`mesh up [DIR|FILE]`: start a whole mesh from its mesh file, show it live, stop it on Ctrl-C.

The schema lives in `mesh.runtime.meshfile` and the supervision in `mesh.runtime.supervisor`;
this module reads the options and draws: a rich Live table on a terminal, plain lines (one per
change, with each child's pid) when stdout is not one. Children's own output goes to stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, final

import anyio
import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from mesh.cli.options import MeshOpt, mesh_flag
from mesh.config import mesh_paths
from mesh.runtime import supervisor
from mesh.runtime.meshfile import MeshPlan, load_plan
from mesh.runtime.running import marked_running
from mesh.runtime.supervisor import ChildStatus, summary

__all__ = ["next_steps", "register"]

_STYLES = {"starting": "yellow", "ready": "green", "restarting": "magenta", "stopping": "yellow", "exited": "red"}


def register(app: typer.Typer) -> None:
    """Add `mesh up` to `app`."""
    app.command("up")(up)


def up(
    path: Annotated[
        str, typer.Argument(metavar="[DIR|FILE]", help="A directory holding mesh.toml, or a mesh file.")
    ] = ".",
    registry_port: Annotated[
        int | None, typer.Option(help="The registry's port, instead of the file's (0: any free port).")
    ] = None,
    no_mdns: Annotated[
        bool, typer.Option("--no-mdns", help="Agents find each other through the registry only.")
    ] = False,
    mesh: MeshOpt = None,
) -> None:
    """Start the registry and every agent of a mesh file, show them live, stop them all on Ctrl-C."""
    plan = load_plan(path, mesh=mesh, registry_port=registry_port, mdns=not no_mdns)
    with marked_running(mesh_paths(plan.mesh)):
        if sys.stdout.isatty():
            with _LiveTable(plan) as view:
                anyio.run(supervisor.up, plan, view)
        else:
            anyio.run(supervisor.up, plan, _PlainLines(plan))


def next_steps(mesh: str, registry_url: str | None) -> list[str]:
    """What to type in another terminal once the mesh is up (`--mesh` only where it would not be found)."""
    flag = mesh_flag(mesh)
    steps: list[str] = [activate] if (activate := _activate_line()) else []
    if registry_url is not None:
        steps.append(f"web page: {registry_url.removesuffix('/mcp').rstrip('/')}/")
    steps += [f"mesh ls{flag}", f"mesh approvals ls{flag}", f"mesh traces ls{flag}"]
    return steps


def _activate_line() -> str | None:
    """`. .venv/bin/activate` when this `mesh` runs from a virtual environment a fresh shell does not have."""
    if sys.prefix == sys.base_prefix or not (script := Path(sys.prefix) / "bin" / "activate").exists():
        return None
    try:
        return f". {script.relative_to(Path.cwd())}"
    except ValueError:
        return f". {script}"


@final
class _PlainLines:
    """One line on stdout per change (`LABEL STATE pid=PID URL`); children's lines on stderr.

    Once the mesh is first up, each change of the agents' tally is a line too (`mesh up: ready: ...`).
    """

    def __init__(self, plan: MeshPlan) -> None:
        self._width = max((len(a.label) for a in plan.agents), default=0)
        self._width = max(self._width, len("registry"))
        self._shown: dict[str, str] = {}
        self._statuses: dict[str, ChildStatus] = {}
        self._tally: str | None = None
        self._mesh = plan.mesh
        _say(f"mesh up: mesh {plan.mesh} from {plan.source}")

    def changed(self, status: ChildStatus) -> None:
        """Print the child's new state (a URL learnt while starting waits for `ready`), then the tally if it moved."""
        self._statuses[status.label] = status
        if status.state == "stopping":
            self._tally = None  # stopping: the tally would only count down
        if self._shown.get(status.label) != status.shown_state:
            self._shown[status.label] = status.shown_state
            fields = [status.label.ljust(self._width), status.shown_state.ljust(10), f"pid={status.pid}"]
            if status.url and status.state != "restarting":
                fields.append(status.url)
            if status.state == "restarting":
                fields.append(f"(exit {status.exit_code}; restart {status.restarts + 1} in {status.restart_in:g}s)")
            elif status.state == "exited" and status.last_line:
                fields.append(f"({status.last_line})")
            _say("  ".join(fields))
        if self._tally is not None and (tally := summary(self._statuses.values())) != self._tally:
            self._tally = tally
            _say(f"mesh up: {tally}")

    def output(self, label: str, line: str) -> None:
        """Relay a child's line to stderr, prefixed with its label."""
        sys.stderr.write(f"{label} | {line}\n")
        sys.stderr.flush()

    def note(self, message: str) -> None:
        """Print a mesh-wide event."""
        _say(f"mesh up: {message}")

    def ready(self, registry_url: str | None) -> None:
        """Print what to type next, one line; from now on the tally is printed when it changes."""
        _say(f"mesh up: next: {' · '.join(next_steps(self._mesh, registry_url))}")
        self._tally = summary(self._statuses.values())


@final
class _LiveTable:
    """A rich Live table of the children, redrawn on every change; children's lines print above it."""

    def __init__(self, plan: MeshPlan) -> None:
        self._plan = plan
        self._rows: dict[str, ChildStatus] = {}
        self._note = ""
        self._hint = " · Ctrl-C stops everything"
        self._live = Live(console=Console(), auto_refresh=False, redirect_stderr=False)

    def __enter__(self) -> _LiveTable:
        self._live.__enter__()
        self._redraw()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._live.__exit__(None, None, None)

    def changed(self, status: ChildStatus) -> None:
        """Redraw with the child's new status."""
        if status.state == "stopping":
            self._hint = ""
        self._rows[status.label] = status
        self._redraw()

    def output(self, label: str, line: str) -> None:
        """Print a child's line above the table."""
        self._live.console.print(Text(f"{label} | {line}", style="dim"))

    def note(self, message: str) -> None:
        """Show a mesh-wide event under the table."""
        self._note = message
        self._redraw()

    def ready(self, registry_url: str | None) -> None:
        """Show what to type next above the table (it stays in the scrollback)."""
        self._live.console.print(Text("next, in another terminal:", style="bold"))
        for step in next_steps(self._plan.mesh, registry_url):
            self._live.console.print(f"  {step}", markup=False, highlight=False)

    def _redraw(self) -> None:
        tally = summary(self._rows.values())
        note = f" · {self._note}" if self._note and not self._note.startswith("ready:") else ""  # the tally says it
        table = Table(
            title=f"mesh [bold]{self._plan.mesh}[/] from {self._plan.source}",
            caption=tally + note + self._hint,
            caption_justify="left",
        )
        table.add_column("agent", no_wrap=True)
        table.add_column("pid", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("url", no_wrap=True)
        table.add_column("target", overflow="ellipsis", no_wrap=True)
        for s in self._rows.values():
            style = "dim" if s.state == "exited" and s.exit_code == 0 else _STYLES[s.state]
            shown = s.name if s.name and s.name != s.label else ""
            state = s.shown_state
            if s.state == "restarting":
                state += f" in {s.restart_in:g}s (exit {s.exit_code})"
            if s.restarts:
                state += f" ↻{s.restarts}"
            table.add_row(
                s.label + (f" ({shown})" if shown else ""),
                str(s.pid or ""),
                Text(state, style=style),
                s.url or "",
                _short(s.target),
            )
        self._live.update(table, refresh=True)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _short(target: str) -> str:
    try:
        return str(Path(target).relative_to(Path.cwd()))
    except ValueError:
        return target
