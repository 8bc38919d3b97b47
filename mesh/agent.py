"""`Agent`: the declaration of one agent, its governance metadata and its tools.

An Agent is a description, not a running thing: `mesh run` (or `mesh.testing`) turns it
into a process that serves MCP. Owns tool registration and metadata overrides; serving,
discovery and calls live in the runtime.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, final, overload

from mesh.errors import ConfigError
from mesh.naming import check_name
from mesh.wire import Governance

__all__ = ["Agent", "ToolSpec"]

_Fn = TypeVar("_Fn", bound=Callable[..., Any])
_GOVERNANCE_KEYS = ("owner", "jurisdiction", "data_class", "description")


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One tool as declared: the function and how the mesh should treat it."""

    fn: Callable[..., Any]
    name: str
    title: str | None = None
    description: str | None = None
    read_only: bool = False
    idempotent: bool = False
    destructive: bool | None = None
    open_world: bool | None = None
    approval: bool = False
    approval_ttl: float | None = None
    """Seconds a person has to decide a call of this tool (default `MESH_APPROVAL_TTL`)."""
    context_param: str | None = None

    @property
    def retry_safe(self) -> bool:
        """True when a repeat cannot do harm: read-only or idempotent (DESIGN §7)."""
        return self.read_only or self.idempotent


@final
@dataclass(slots=True)
class Agent:
    """An agent of the mesh: a DNS-label name, governance metadata, and tools."""

    name: str
    description: str | None = None
    owner: str | None = None
    jurisdiction: str | None = None
    data_class: str | None = None
    version: str = ""
    metadata: dict[str, str] = field(default_factory=dict[str, str])
    tools: dict[str, ToolSpec] = field(default_factory=dict[str, ToolSpec])

    def __post_init__(self) -> None:
        check_name(self.name)

    @property
    def governance(self) -> Governance:
        """The asset-inventory facts: owner, jurisdiction, data class, description and extras."""
        return Governance(
            owner=self.owner,
            jurisdiction=self.jurisdiction,
            data_class=self.data_class,
            description=self.description,
            **self.metadata,
        )

    @overload
    def tool(self, fn: _Fn, /) -> _Fn: ...

    @overload
    def tool(
        self,
        /,
        *,
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        read_only: bool = False,
        idempotent: bool = False,
        destructive: bool | None = None,
        open_world: bool | None = None,
        approval: bool = False,
        approval_ttl: float | None = None,
    ) -> Callable[[_Fn], _Fn]: ...

    def tool(
        self,
        fn: _Fn | None = None,
        /,
        *,
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        read_only: bool = False,
        idempotent: bool = False,
        destructive: bool | None = None,
        open_world: bool | None = None,
        approval: bool = False,
        approval_ttl: float | None = None,
    ) -> _Fn | Callable[[_Fn], _Fn]:
        """Register a tool; the keywords become MCP tool annotations (`approval` pauses for a human).

        `approval_ttl` gives a person that many seconds to decide instead of `MESH_APPROVAL_TTL` (and
        implies `approval`).
        """

        def register(func: _Fn) -> _Fn:
            tool_name = name or func.__name__
            if approval_ttl is not None and not approval_ttl > 0:
                raise ConfigError(f"tool {tool_name!r}: approval_ttl must be a positive number of seconds")
            if tool_name in self.tools:
                raise ConfigError(f"agent {self.name!r} already has a tool named {tool_name!r}")
            if not inspect.iscoroutinefunction(func) and not callable(func):
                raise ConfigError(f"tool {tool_name!r} is not callable")
            self.tools[tool_name] = ToolSpec(
                fn=func,
                name=tool_name,
                title=title,
                description=description or inspect.getdoc(func),
                read_only=read_only,
                idempotent=idempotent,
                destructive=destructive,
                open_world=open_world,
                approval=approval or approval_ttl is not None,
                approval_ttl=approval_ttl,
                context_param=_context_param(func),
            )
            return func

        return register(fn) if fn is not None else register

    def with_overrides(self, *, name: str | None = None, meta: Mapping[str, str] | None = None) -> Agent:
        """A copy renamed and/or with governance metadata replaced (deployment-time `--name`/`--meta`)."""
        fields: dict[str, Any] = {}
        extra = dict(self.metadata)
        for key, value in (meta or {}).items():
            if key in _GOVERNANCE_KEYS:
                fields[key] = value
            elif key == "version":
                fields["version"] = value
            else:
                extra[key] = value
        return replace(self, name=check_name(name) if name else self.name, metadata=extra, **fields)


def _context_param(func: Callable[..., Any]) -> str | None:
    """The name of the parameter annotated `mesh.Context`, if the tool asks for one."""
    from mesh.context import Context  # the context imports the runtime's seams; keep agent.py light

    try:
        hints = typing.get_type_hints(func)
    except (NameError, TypeError) as exc:
        raise ConfigError(f"cannot resolve the annotations of tool {func.__name__!r}: {exc}") from exc
    for param, hint in hints.items():
        if param != "return" and hint is Context:
            return param
    return None
