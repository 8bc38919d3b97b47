"""`mesh install claude`: add (or update) the gateway entry in Claude Desktop's config file.

Owns where that file lives on each OS and the entry's shape: absolute paths, the mesh name and
the environment the gateway needs. Everything else in the file is kept as it was; the file is
replaced atomically, and a file that is not valid JSON is left untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from mesh.cli.options import MeshOpt, fail
from mesh.config import mesh_name

__all__ = ["claude_config_path", "gateway_entry", "register", "server_key"]

_PASSED_ON = ("MESH_REGISTRY", "MESH_TRACER")
"""Locations the gateway would otherwise have to discover; written when set (never the secret)."""


def register(app: typer.Typer) -> None:
    """Add `mesh install claude` to `app`."""
    install = typer.Typer(help="Connect MCP clients to the mesh.", no_args_is_help=True)
    install.command("claude")(claude)
    app.add_typer(install, name="install")


def claude(
    print_: Annotated[bool, typer.Option("--print", help="Print the entry instead of writing it.")] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="Claude Desktop's config file (default: this OS's).")
    ] = None,
    mesh: MeshOpt = None,
) -> None:
    """Add the mesh gateway to Claude Desktop's config (keeping every other server in it)."""
    name = mesh_name(mesh)
    key, entry = server_key(name), gateway_entry(name)
    if print_:
        sys.stdout.write(json.dumps({"mcpServers": {key: entry}}, indent=2) + "\n")
        return
    path = (config or claude_config_path()).expanduser().absolute()
    settings = _read(path)
    servers = settings.setdefault("mcpServers", {})
    if not isinstance(servers, dict):
        fail(f'cannot update {path}: its "mcpServers" is not an object; fix it and run again (nothing changed)')
    verb = "updated" if key in servers else "added"
    servers[key] = entry
    _write_atomically(path, json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
    if os.environ.get("MESH_SECRET"):
        sys.stderr.write("mesh: warning: MESH_SECRET is not written to the config; the gateway uses the secret file\n")
    sys.stdout.write(f"{verb} MCP server {key!r} in {path}; restart Claude Desktop to load it\n")


def claude_config_path() -> Path:
    """Claude Desktop's config file on this OS, from HOME (or APPDATA on Windows) as they are now."""
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "Claude" / "claude_desktop_config.json"
    if sys.platform == "win32":
        appdata = os.environ.get("APPDATA")
        base = Path(appdata) if appdata else Path.home() / "AppData" / "Roaming"
        return base / "Claude" / "claude_desktop_config.json"
    return Path.home() / ".config" / "Claude" / "claude_desktop_config.json"


def server_key(mesh: str) -> str:
    """`agentplex` for the default mesh, `agentplex-NAME` for another, so several meshes can sit side by side."""
    return "agentplex" if mesh == "default" else f"agentplex-{mesh}"


def gateway_entry(mesh: str) -> dict[str, Any]:
    """The `mcpServers` entry that launches `mesh gateway` for `mesh`, with absolute paths only."""
    command, prefix = _mesh_command()
    env = {"MESH_NAME": mesh}
    home = os.environ.get("MESH_HOME")
    if home:
        env["MESH_HOME"] = str(Path(home).expanduser().absolute())
    env.update({var: os.environ[var] for var in _PASSED_ON if os.environ.get(var)})
    return {"command": command, "args": [*prefix, "gateway", "--mesh", mesh], "env": env}


# -- private helpers ---------------------------------------------------------------------------


def _mesh_command() -> tuple[str, list[str]]:
    """The `mesh` script installed beside this interpreter, else the interpreter with `-m mesh`."""
    # Not resolved: a venv's python is a symlink whose target would leave the venv behind.
    python = Path(sys.executable).absolute()
    script = python.parent / ("mesh.exe" if sys.platform == "win32" else "mesh")
    if script.is_file() and os.access(script, os.X_OK):
        return str(script), []
    return str(python), ["-m", "mesh"]


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {exc}")
    if not text.strip():
        return {}
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"cannot update {path}: not valid JSON ({exc}); fix it and run again (nothing changed)")
    if not isinstance(settings, dict):
        fail(f"cannot update {path}: it holds a JSON {type(settings).__name__}, not an object (nothing changed)")
    return settings  # pyright: ignore[reportUnknownVariableType]


def _write_atomically(path: Path, text: str) -> None:
    """Write `text` beside `path`, then rename over it: a reader sees the old file or the new, never half."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            if path.exists():
                shutil.copymode(path, temp)
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}")
