"""`mesh import claude`: a mesh.toml that puts every MCP server of Claude Desktop's config on the mesh.

Owns reading that config (`mcpServers`: stdio entries with `command`/`args`/`env`, remote ones
with `url`/`headers`), turning each entry into an `[[agents]]` entry (`mesh.runtime.meshfile`
defines them) and writing the file. It never edits Claude's config: `mesh install claude` does.
Secrets (env and header values) go into the file only: never to stderr, nor to stdout unasked.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final

import typer

from mesh.cli.install import claude_config_path, server_key
from mesh.cli.options import MeshOpt, fail
from mesh.config import mesh_name
from mesh.errors import ConfigError
from mesh.runtime.meshfile import MESH_FILE

__all__ = ["ImportedServer", "Servers", "agent_name", "mesh_toml", "read_servers", "register", "servers_of"]

MASK: Final = "***"
"""What `--print` shows in place of a secret."""


def register(app: typer.Typer) -> None:
    """Add `mesh import claude` to `app`."""
    group = typer.Typer(help="Bring existing MCP servers onto the mesh.", no_args_is_help=True)
    group.command("claude")(claude)
    app.add_typer(group, name="import")


def claude(
    config: Annotated[
        Path | None, typer.Option("--config", help="Claude Desktop's config file (default: this OS's).")
    ] = None,
    print_: Annotated[
        bool, typer.Option("--print", help="Print the mesh file instead of writing it (secrets masked).")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", help=f"Where to write it (default: ./{MESH_FILE}; a directory: its {MESH_FILE})."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the file if it exists.")] = False,
    show_secrets: Annotated[
        bool, typer.Option("--show-secrets", help="With --print, print env and header values as they are.")
    ] = False,
    mesh: MeshOpt = None,
) -> None:
    """Write a mesh.toml that runs each of Claude Desktop's MCP servers as an agent of the mesh."""
    if print_ and out is not None:
        fail("--print and --out: choose one")
    name = mesh_name(mesh)
    target = (out or Path(MESH_FILE)).expanduser()
    if target.is_dir():
        target = target / MESH_FILE
    if not print_ and not force and target.exists():
        fail(_exists(target))
    source = (config or claude_config_path()).expanduser().absolute()
    try:
        servers = read_servers(source)
    except ConfigError as exc:
        fail(str(exc))
    for note in servers.notes:
        sys.stderr.write(f"mesh: {note}\n")
    if print_:
        sys.stdout.write(mesh_toml(servers, mesh=name, source=source, show_secrets=show_secrets))
        return
    _write(target, mesh_toml(servers, mesh=name, source=source), force=force)
    agents = ", ".join(s.name for s in servers.servers)
    install = "mesh install claude" + ("" if name == "default" else f" --mesh {name}")
    given = target.parent if target.name == MESH_FILE else target  # what `mesh up` finds it by
    up = "mesh up" + ("" if given == Path() else f" {shlex.quote(str(given))}")
    sys.stdout.write(
        f"wrote {target}: {len(servers.servers)} server{'s' if len(servers.servers) != 1 else ''} "
        f"({agents}); next: {up}, then {install}, "
        "and remove those servers from Claude Desktop's config so they do not run twice\n"
    )


@dataclass(frozen=True, slots=True)
class ImportedServer:
    """One server of Claude's config, as an `[[agents]]` entry: a command line or a URL."""

    key: str
    """Its key in `mcpServers`."""
    name: str
    """Its agent name: `key` made a DNS label."""
    command: str | None = None
    url: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        # env and headers hold secrets: a repr must never show them, wherever it is logged.
        what = f"command={self.command!r}" if self.command is not None else f"url={self.url!r}"
        return f"ImportedServer(key={self.key!r}, name={self.name!r}, {what})"


@dataclass(frozen=True, slots=True)
class Servers:
    """What an import found: the servers to put on the mesh, and what to tell the user about it."""

    servers: tuple[ImportedServer, ...]
    notes: tuple[str, ...] = ()
    """Renamed, skipped or partly ignored entries, one line each; never a secret."""


def read_servers(path: Path) -> Servers:
    """The servers of the Claude Desktop config at `path`; ConfigError (one line) if there are none to take."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no Claude Desktop config at {path} (give its path with --config)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        settings: object = json.loads(text)
    except json.JSONDecodeError as exc:
        # The position only: the text around it could be a secret.
        raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(settings, dict):
        raise ConfigError(f"{path}: holds a JSON {type(settings).__name__}, not an object")
    return servers_of(settings, where=str(path))  # pyright: ignore[reportUnknownArgumentType]


def servers_of(settings: Mapping[str, object], *, where: str) -> Servers:
    """The servers of a parsed Claude Desktop config (the mesh's own gateway left out)."""
    entries = settings.get("mcpServers")
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f'{where}: no "mcpServers" object with servers in it: nothing to import')
    servers: list[ImportedServer] = []
    notes: list[str] = []
    taken: set[str] = set()
    for key, entry in entries.items():  # pyright: ignore[reportUnknownVariableType]
        key = str(key)  # pyright: ignore[reportUnknownArgumentType]
        here = f"{where}: mcpServers.{json.dumps(key)}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{here}: not an object")
        fields: dict[str, object] = {str(k): v for k, v in entry.items()}  # pyright: ignore[reportUnknownVariableType]
        if _is_gateway(key, fields):
            notes.append(f"skipped {key!r}: the mesh's own gateway")
            continue
        kind = fields.get("type")
        if kind == "sse":
            notes.append(f"skipped {key!r}: it speaks SSE, and `mesh run --url` speaks Streamable HTTP")
            continue
        name = _unique(agent_name(key), taken)
        taken.add(name)
        if name != key:
            notes.append(f"{key!r} is agent {name!r} on the mesh (agent names are DNS labels)")
        ignored = sorted(set(fields) - _KNOWN)
        if ignored:
            notes.append(f"{key!r}: ignored {', '.join(ignored)}")
        servers.append(_server(key, name, fields, here))
    if not servers:
        raise ConfigError(f"{where}: no server to import besides the mesh's own gateway")
    return Servers(tuple(servers), tuple(notes))


def agent_name(key: str) -> str:
    """`key` as an agent name: lowercase ASCII letters and digits, other runs of characters a hyphen."""
    ascii_ = unicodedata.normalize("NFKD", key).encode("ascii", "ignore").decode().lower()
    label = re.sub(r"[^a-z0-9]+", "-", ascii_).strip("-")[:63].rstrip("-")
    return label or "server"


def mesh_toml(servers: Servers, *, mesh: str, source: Path, show_secrets: bool = True) -> str:
    """The mesh file for `servers`: `[mesh]`, then one `[[agents]]` entry each; secrets as `***` unless shown."""
    install = "mesh install claude" + ("" if mesh == "default" else f" --mesh {mesh}")
    lines = [
        f"# Made by `mesh import claude` from {source}.",
        "# `mesh up` runs each server below as an agent of the mesh, with its own process, policy and traces.",
        f"# Claude Desktop then needs one entry only, the mesh's gateway: `{install}`",
        "# (and remove these servers from its config, or they run twice).",
        '# Give each its governance metadata, which the policy reads: meta = { owner = "...", jurisdiction = "eu" }.',
    ]
    if not show_secrets:
        lines.append(
            f"# Secret values are masked ({MASK}): --show-secrets prints them; without --print they are written."
        )
    elif any(s.env or s.headers for s in servers.servers):
        lines.append("# This file holds the servers' secrets (env, headers): keep it private.")
    lines += ["", "[mesh]", f"name = {_string(mesh)}"]
    for server in servers.servers:
        renamed = (
            f"  # {json.dumps(server.key, ensure_ascii=False)} in Claude Desktop's config"
            if server.name != server.key
            else ""
        )
        lines += ["", "[[agents]]", f"name = {_string(server.name)}{renamed}"]
        if server.command is not None:
            lines.append(f"command = {_string(server.command)}")
        if server.url is not None:
            lines.append(f"url = {_string(server.url)}")
        for table, pairs in (("env", server.env), ("headers", server.headers)):
            if pairs:
                lines += ["", f"[agents.{table}]"]
                lines += [f"{_key(k)} = {_string(v if show_secrets else MASK)}" for k, v in pairs]
    return "\n".join(lines) + "\n"


_KNOWN: Final = frozenset({"command", "args", "env", "url", "headers", "type"})
_STDIO_TYPES: Final = frozenset({"stdio"})
_HTTP_TYPES: Final = frozenset({"http", "streamable-http", "streamableHttp", "streamable_http"})
_BARE_KEY: Final = re.compile(r"^[A-Za-z0-9_-]+$")
_TOML_ESCAPES: Final = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _server(key: str, name: str, fields: Mapping[str, object], here: str) -> ImportedServer:
    kind = fields.get("type")
    command, url = fields.get("command"), fields.get("url")
    if (command is None) == (url is None):
        raise ConfigError(f"{here}: needs a command or a url (exactly one)")
    if kind is not None and kind not in (_STDIO_TYPES if command is not None else _HTTP_TYPES):
        raise ConfigError(f"{here}: type {json.dumps(kind)} does not go with a {'command' if command else 'url'}")
    if command is not None:
        args = fields.get("args", [])
        if not isinstance(command, str) or not command.strip():
            raise ConfigError(f"{here}.command: not a non-empty string")
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):  # pyright: ignore[reportUnknownVariableType]
            raise ConfigError(f"{here}.args: not a list of strings")
        if "headers" in fields:
            raise ConfigError(f"{here}: headers go with a url, not a command")
        words: list[str] = [command, *args]  # pyright: ignore[reportUnknownArgumentType]
        return ImportedServer(key, name, command=shlex.join(words), env=_strings(fields.get("env"), f"{here}.env"))
    if not isinstance(url, str) or not re.match(r"^https?://[^/?#\s]+", url):
        raise ConfigError(f"{here}.url: not an http:// or https:// URL")
    if "env" in fields or "args" in fields:
        raise ConfigError(f"{here}: env and args go with a command, not a url")
    return ImportedServer(key, name, url=url, headers=_strings(fields.get("headers"), f"{here}.headers"))


def _strings(value: object, where: str) -> tuple[tuple[str, str], ...]:
    """A JSON object of strings as pairs; the error names the key, never the value (a secret)."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: not an object")
    pairs: list[tuple[str, str]] = []
    for key, text in value.items():  # pyright: ignore[reportUnknownVariableType]
        if not isinstance(text, str):
            raise ConfigError(f"{where}.{key}: not a string")
        pairs.append((str(key), text))  # pyright: ignore[reportUnknownArgumentType]
    return tuple(pairs)


def _is_gateway(key: str, fields: Mapping[str, object]) -> bool:
    """The entry `mesh install claude` writes: its key, or a command that runs `mesh gateway`."""
    if key == server_key("default") or key.startswith(server_key("default") + "-"):
        return True
    command, args = fields.get("command"), fields.get("args")
    if not isinstance(command, str) or not isinstance(args, list):
        return False
    words: list[object] = list(args)  # pyright: ignore[reportUnknownArgumentType]
    runs_mesh = Path(command).name in ("mesh", "mesh.exe") or words[:2] == ["-m", "mesh"]
    return runs_mesh and "gateway" in words


def _unique(name: str, taken: set[str]) -> str:
    """`name`, or `name-2`, `name-3`, ... when two keys make the same name."""
    candidate, counter = name, 1
    while candidate in taken:
        counter += 1
        candidate = f"{name[: 62 - len(str(counter))]}-{counter}"
    return candidate


def _string(value: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped (TOML 1.0 §String)."""
    escaped = "".join(
        _TOML_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c) for c in value
    )
    return f'"{escaped}"'


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def _exists(path: Path) -> str:
    return f"{path} exists: --force overwrites it, --print shows what would be written"


def _write(path: Path, text: str, *, force: bool) -> None:
    """Write the file readable by its owner only (it holds secrets); refuse an existing one unless `force`."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        fail(_exists(path))
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}")
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    path.chmod(0o600)  # an overwritten file would keep its old mode
