"""The mesh file (`mesh.toml`) that `mesh up` reads, and the launch plan made from it.

Owns the schema (pydantic, unknown keys refused), resolving paths relative to the file, and
the command line of every process to start. Pure apart from reading the file and checking
that targets and the policy exist; starting and watching processes is the supervisor's job.

An `[[agents]]` entry runs exactly one of: `target` (`mesh run TARGET`), `command` (an existing
stdio MCP server: `mesh run --command=CMD`) or `url` (a remote one: `mesh run --url=URL`). An
adopted server's `env` and `headers` may hold secrets, and a command line is visible to every
user (`ps`), so they never go on it: `mesh up` hands them over in the child's environment as
one JSON object of strings each, `MESH_RUN_ENV` (what `--env K=V` would add to the server's
environment) and `MESH_RUN_HEADERS` (what `--header K=V` would send); `mesh run --command` reads
the first only, `--url` the second only, as if given by those flags (a flag wins on the same key).
A target's `env` is the agent process's own environment.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mesh.config import DEFAULT_REGISTRY_PORT, mesh_name
from mesh.errors import ConfigError, PolicyError
from mesh.naming import is_name
from mesh.policy import Policy
from mesh.runtime.loader import builtin_agents

__all__ = [
    "MESH_FILE",
    "RUN_ENV",
    "RUN_HEADERS",
    "AgentKind",
    "RestartPolicy",
    "MeshFile",
    "MeshSection",
    "RegistrySection",
    "AgentEntry",
    "MeshPlan",
    "RegistryLaunch",
    "AgentLaunch",
    "find_mesh_file",
    "load_plan",
]

MESH_FILE: Final = "mesh.toml"
"""The file `mesh up DIR` looks for in DIR."""

RUN_ENV: Final = "MESH_RUN_ENV"
"""The variable in which `mesh run --command` receives its server's environment: a JSON object of strings."""

RUN_HEADERS: Final = "MESH_RUN_HEADERS"
"""The variable in which `mesh run --url` receives the headers to send: a JSON object of strings."""

AgentKind = Literal["target", "command", "url"]
"""What an `[[agents]]` entry runs: a mesh agent, a stdio MCP server, or a remote one."""

RestartPolicy = Literal["on-failure", "no"]
"""Whether `mesh up` starts an agent again (with backoff) after it exits with a failure, or leaves it down."""

_Scalar = str | int | float | bool


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class MeshSection(_Table):
    """`[mesh]`: the mesh's name (`--mesh` and `MESH_NAME` win) and its Cedar policy file."""

    name: str | None = None
    policy: str | None = None

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str | None) -> str | None:
        if value is not None and not is_name(value):
            raise ValueError(f"{value!r} is not a mesh name: use lowercase letters, digits and inner hyphens")
        return value


class RegistrySection(_Table):
    """`[registry]`: started unless `enabled = false`; `port = 0` picks a free port."""

    enabled: bool = True
    port: int = Field(default=DEFAULT_REGISTRY_PORT, ge=0, le=65535)
    db: str | None = None


class AgentEntry(_Table):
    """One `[[agents]]` entry: what to run (one of `target`, `command`, `url`) and how to deploy it."""

    target: str | None = Field(default=None, min_length=1)
    command: str | None = Field(default=None, min_length=1)
    url: str | None = None
    name: str | None = None
    replicas: int = Field(default=1, ge=1, le=32)
    meta: dict[str, _Scalar] = Field(default_factory=dict[str, _Scalar])
    env: dict[str, _Scalar] = Field(default_factory=dict[str, _Scalar])
    headers: dict[str, str] = Field(default_factory=dict[str, str])
    restart: RestartPolicy = "on-failure"

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str | None) -> str | None:
        if value is not None and not is_name(value):
            raise ValueError(f"{value!r} is not an agent name: use lowercase letters, digits and inner hyphens")
        return value

    @field_validator("command")
    @classmethod
    def _command_line(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"not a shell command line ({exc})") from None
        if not words:
            raise ValueError("an empty command")
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("not an http:// or https:// URL")
        return value

    @field_validator("env")
    @classmethod
    def _variable_names(cls, value: dict[str, _Scalar]) -> dict[str, _Scalar]:
        for key in value:
            if not key or "=" in key or "\0" in key:
                raise ValueError(f"{key!r} cannot be an environment variable's name")
        return value

    @field_validator("headers")
    @classmethod
    def _header_fields(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if not _TOKEN.match(key):
                raise ValueError(f"{key!r} cannot be an HTTP header's name")
            if any(c in text for c in "\r\n\0"):
                raise ValueError(f"the value of {key!r} holds a line break or NUL")  # never the value: a secret
        return value

    @model_validator(mode="after")
    def _one_thing_to_run(self) -> Self:
        given = [key for key in ("target", "command", "url") if getattr(self, key) is not None]
        named = f"{self.name!r}: " if self.name else ""
        if len(given) != 1:
            found = f"it has {' and '.join(given)}" if given else "it has none"
            raise ValueError(f"{named}give exactly one of target, command or url ({found})")
        kind = given[0]
        if kind != "target" and self.name is None:
            raise ValueError(f"a {kind} entry needs a name: the agent's name on the mesh")
        if self.headers and kind != "url":
            raise ValueError(f"{named}headers are for url entries (a {kind} entry takes env)")
        if self.env and kind == "url":
            raise ValueError(f"{named}env is for target and command entries (a url entry takes headers)")
        return self

    @property
    def kind(self) -> AgentKind:
        """Which of target, command and url this entry runs."""
        return "target" if self.target is not None else "command" if self.command is not None else "url"


class MeshFile(_Table):
    """A whole `mesh.toml`."""

    mesh: MeshSection = MeshSection()
    registry: RegistrySection = RegistrySection()
    agents: list[AgentEntry] = Field(default_factory=list[AgentEntry])


@dataclass(frozen=True, slots=True)
class RegistryLaunch:
    """How to start the mesh's registry."""

    port: int
    db: Path | None = None

    def argv(self, *, mesh: str, mdns: bool = True) -> list[str]:
        """The command line: `python -m mesh registry ...`."""
        args = [*_MESH, "registry", "--mesh", mesh, "--port", str(self.port)]
        if self.db is not None:
            args += ["--db", str(self.db)]
        return args if mdns else [*args, "--no-mdns"]


@dataclass(frozen=True, slots=True)
class AgentLaunch:
    """One agent process to start (a replica of an `[[agents]]` entry)."""

    label: str
    target: str
    """What runs: a resolved target, a stdio server's command line, or a remote server's URL (see `kind`)."""
    name: str | None = None
    meta: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    kind: AgentKind = "target"
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    restart: RestartPolicy = "on-failure"

    def argv(self, *, mesh: str, registry: str | None, policy: Path | None, mdns: bool = True) -> list[str]:
        """The command line: `python -m mesh run TARGET --port 0 ...` (`--command=CMD`, `--url=URL`); no secret."""
        # `--command=CMD`, not `--command CMD`: a command line that starts with `-` stays a value.
        what = self.target if self.kind == "target" else f"--{self.kind}={self.target}"
        args = [*_MESH, "run", what, "--port", "0", "--mesh", mesh]
        if self.name is not None:
            args += ["--name", self.name]
        for key, value in self.meta:
            args += ["--meta", f"{key}={value}"]
        if registry is not None:
            args += ["--registry", registry]
        if policy is not None:
            args += ["--policy", str(policy)]
        return args if mdns else [*args, "--no-mdns"]

    def environment(self) -> dict[str, str]:
        """What the process adds to the environment it inherits: `env` itself, or `MESH_RUN_ENV`/`MESH_RUN_HEADERS`."""
        if self.kind == "target":
            return dict(self.env)
        # Always set, so a value inherited from the shell that started `mesh up` never leaks in.
        if self.kind == "command":
            return {RUN_ENV: json.dumps(dict(self.env))}
        return {RUN_HEADERS: json.dumps(dict(self.headers))}

    @property
    def shown(self) -> str:
        """`target` as `mesh up` may show it: a URL without its user, password, query or fragment (keys live there)."""
        if self.kind != "url":
            return self.target
        parts = urlsplit(self.target)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        netloc += f":{parts.port}" if parts.port is not None else ""
        return f"{parts.scheme}://{netloc}{parts.path}"


@dataclass(frozen=True, slots=True)
class MeshPlan:
    """Everything `mesh up` starts, resolved: the registry (if any) first, then the agents."""

    source: Path
    mesh: str
    registry: RegistryLaunch | None
    agents: tuple[AgentLaunch, ...]
    policy: Path | None = None
    mdns: bool = True


def find_mesh_file(path: str | Path) -> Path:
    """The mesh file that `path` names: the file itself, or `mesh.toml` in a directory."""
    candidate = Path(path)
    if candidate.is_dir():
        candidate = candidate / MESH_FILE
        if not candidate.is_file():
            raise ConfigError(f"no {MESH_FILE} in {path}")
    elif not candidate.is_file():
        raise ConfigError(f"no such file: {path}")
    return candidate


def load_plan(
    path: str | Path,
    *,
    mesh: str | None = None,
    registry_port: int | None = None,
    mdns: bool = True,
) -> MeshPlan:
    """The checked plan of the mesh file at `path`; its mesh: `mesh`, `MESH_NAME`, `[mesh] name`, `default`."""
    source = find_mesh_file(path)
    spec = _parse(source)
    base = source.resolve().parent
    where = _display(source)
    policy = _policy(spec.mesh.policy, base, where)
    registry: RegistryLaunch | None = None
    if spec.registry.enabled:
        port = spec.registry.port if registry_port is None else registry_port
        db = (base / spec.registry.db) if spec.registry.db else None
        registry = RegistryLaunch(port=port, db=db)
    agents: list[AgentLaunch] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(spec.agents):
        target, label = _what_to_run(entry, base, f"{where}: agents[{index}]")
        label = entry.name or label
        if label in seen:
            raise ConfigError(
                f"{where}: agents[{index}]: {label!r} is already started by agents[{seen[label]}]: "
                "give this one a name, or use replicas"
            )
        seen[label] = index
        for replica in range(1, entry.replicas + 1):
            agents.append(
                AgentLaunch(
                    label=f"{label}#{replica}" if entry.replicas > 1 else label,
                    target=target,
                    name=entry.name,
                    meta=tuple((k, _text(v)) for k, v in entry.meta.items()),
                    env=tuple((k, _text(v)) for k, v in entry.env.items()),
                    kind=entry.kind,
                    headers=tuple(entry.headers.items()),
                    restart=entry.restart,
                )
            )
    if registry is None and not agents:
        raise ConfigError(f"{where}: nothing to start: no [[agents]] and the registry is disabled")
    return MeshPlan(
        source=source,
        mesh=mesh_name(mesh or os.environ.get("MESH_NAME") or spec.mesh.name),
        registry=registry,
        agents=tuple(agents),
        policy=policy,
        mdns=mdns,
    )


_MESH: Final = (sys.executable, "-m", "mesh")
_TOKEN: Final = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
"""An HTTP field name (RFC 9110 §5.1)."""


def _parse(source: Path) -> MeshFile:
    where = _display(source)
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return MeshFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    loc = first["loc"]
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".") or "file"
    if first["type"] == "extra_forbidden":
        known = _known_keys(loc[:-1])
        message = f"{key}: unknown key" + (f" (known: {', '.join(known)})" if known else "")
    elif first["type"] == "missing":
        message = f"{key}: required key missing"
    else:
        message = f"{key}: {first['msg'].removeprefix('Value error, ')}"
    more = len(errors) - 1
    return message + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


def _known_keys(parent: tuple[int | str, ...]) -> list[str]:
    model: type[BaseModel] | None = MeshFile
    sections: dict[str, type[BaseModel]] = {"mesh": MeshSection, "registry": RegistrySection, "agents": AgentEntry}
    for part in parent:
        if isinstance(part, int):
            continue
        model = sections.get(part) if model is MeshFile else None
    return list(model.model_fields) if model is not None else []


def _policy(policy: str | None, base: Path, where: str) -> Path | None:
    if policy is None:
        return None
    path = (base / policy).resolve()
    if not path.is_file():
        raise ConfigError(f"{where}: mesh.policy: no such file: {policy}")
    try:
        Policy.from_text(path.read_text(encoding="utf-8"), source=policy)
    except PolicyError as exc:
        raise ConfigError(f"{where}: mesh.policy: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: mesh.policy: cannot read {policy}: {exc}") from None
    return path


def _what_to_run(entry: AgentEntry, base: Path, where: str) -> tuple[str, str]:
    """(what `mesh run` is given, a label): a resolved target, or the command line or URL as written."""
    if entry.target is not None:
        return _resolve_target(entry.target, base, f"{where}.target")
    # The schema makes a command or url entry name itself; a fallback label only keeps this total.
    if entry.command is not None:
        return entry.command, entry.name or Path(shlex.split(entry.command)[0]).stem
    assert entry.url is not None
    return entry.url, entry.name or (urlsplit(entry.url).hostname or "remote")


def _resolve_target(target: str, base: Path, where: str) -> tuple[str, str]:
    """(what to pass to `mesh run`, a label) for `target`: a file, a built-in, or module:attr."""
    source, sep, attr = target.rpartition(":") if ":" in target else (target, "", "")
    if source.endswith(".py") or "/" in source or (base / source).is_file():
        path = (base / source).resolve()
        if not path.is_file():
            raise ConfigError(f"{where}: no such file: {source} (relative to {_display(base)})")
        return str(path) + (sep + attr), path.stem.replace("_", "-")
    if not sep and source in builtin_agents():
        return source, source
    if sep and attr:
        return target, attr.replace("_", "-")
    known = ", ".join(builtin_agents()) or "none"
    raise ConfigError(
        f"{where}: {target!r} is neither a file (relative to {_display(base)}) nor a built-in agent ({known})"
    )


def _text(value: _Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
