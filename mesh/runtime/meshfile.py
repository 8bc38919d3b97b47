"""The mesh file (`mesh.toml`) that `mesh up` reads, and the launch plan made from it.

Owns the schema (pydantic, unknown keys refused), resolving paths relative to the file, and
the command line of every process to start. Pure apart from reading the file and checking
that targets and the policy exist; starting and watching processes is the supervisor's job.
"""

from __future__ import annotations

import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mesh.config import DEFAULT_REGISTRY_PORT, mesh_name
from mesh.errors import ConfigError, PolicyError
from mesh.naming import is_name
from mesh.policy import Policy
from mesh.runtime.loader import builtin_agents

__all__ = [
    "MESH_FILE",
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
    """One `[[agents]]` entry: what to run and how to deploy it."""

    target: str = Field(min_length=1)
    name: str | None = None
    replicas: int = Field(default=1, ge=1, le=32)
    meta: dict[str, _Scalar] = Field(default_factory=dict[str, _Scalar])
    env: dict[str, _Scalar] = Field(default_factory=dict[str, _Scalar])

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str | None) -> str | None:
        if value is not None and not is_name(value):
            raise ValueError(f"{value!r} is not an agent name: use lowercase letters, digits and inner hyphens")
        return value


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
    name: str | None = None
    meta: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    def argv(self, *, mesh: str, registry: str | None, policy: Path | None, mdns: bool = True) -> list[str]:
        """The command line: `python -m mesh run TARGET --port 0 ...`."""
        args = [*_MESH, "run", self.target, "--port", "0", "--mesh", mesh]
        if self.name is not None:
            args += ["--name", self.name]
        for key, value in self.meta:
            args += ["--meta", f"{key}={value}"]
        if registry is not None:
            args += ["--registry", registry]
        if policy is not None:
            args += ["--policy", str(policy)]
        return args if mdns else [*args, "--no-mdns"]


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
        target, label = _resolve_target(entry.target, base, f"{where}: agents[{index}].target")
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
