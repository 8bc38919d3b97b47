"""`Agent`: the declaration of one agent, its governance metadata, tools, resources and prompts.

An Agent is a description, not a running thing: `mesh run` (or `mesh.testing`) turns it
into a process that serves MCP. Owns registration (checked when the decorator runs, so a
mistake fails at import with one line) and metadata overrides; serving, discovery and calls
live in the runtime.
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

__all__ = ["Agent", "PromptSpec", "ResourceSpec", "ToolSpec"]

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
    input_schema: Mapping[str, Any] | None = None
    """The JSON Schema the tool declared itself; its arguments then arrive as one dict, checked against it."""
    arguments_param: str | None = None
    """With `input_schema`: the parameter that receives the arguments dict."""

    @property
    def retry_safe(self) -> bool:
        """True when a repeat cannot do harm: read-only or idempotent (DESIGN §7)."""
        return self.read_only or self.idempotent


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    """One resource as declared: a static URI, or an RFC 6570 template whose variables are the parameters."""

    fn: Callable[..., Any]
    uri: str
    name: str
    title: str | None = None
    description: str | None = None
    mime_type: str | None = None
    context_param: str | None = None
    variables: tuple[str, ...] = ()
    """The template's variable names (empty for a static URI)."""

    @property
    def is_template(self) -> bool:
        """True when the URI has variables: read by matching, listed in `resources/templates/list`."""
        return bool(self.variables)


@dataclass(frozen=True, slots=True)
class PromptSpec:
    """One prompt as declared: the function that renders its messages from string arguments."""

    fn: Callable[..., Any]
    name: str
    title: str | None = None
    description: str | None = None
    context_param: str | None = None


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
    resources: dict[str, ResourceSpec] = field(default_factory=dict[str, ResourceSpec])
    """By URI (or URI template)."""
    prompts: dict[str, PromptSpec] = field(default_factory=dict[str, PromptSpec])

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
        input_schema: Mapping[str, Any] | None = None,
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
        input_schema: Mapping[str, Any] | None = None,
    ) -> _Fn | Callable[[_Fn], _Fn]:
        """Register a tool; the keywords become MCP tool annotations (`approval` pauses for a human).

        `approval_ttl` gives a person that many seconds to decide instead of `MESH_APPROVAL_TTL` (and
        implies `approval`). `input_schema` declares the tool's JSON Schema where a signature cannot
        say it (`oneOf`, patterns, bounds): the function then takes one parameter besides `ctx`, which
        receives the arguments as a dict already checked against the schema.
        """

        def register(func: _Fn) -> _Fn:
            tool_name = name or func.__name__
            if approval_ttl is not None and not approval_ttl > 0:
                raise ConfigError(f"tool {tool_name!r}: approval_ttl must be a positive number of seconds")
            if tool_name in self.tools:
                raise ConfigError(f"agent {self.name!r} already has a tool named {tool_name!r}")
            if not inspect.iscoroutinefunction(func) and not callable(func):
                raise ConfigError(f"tool {tool_name!r} is not callable")
            context_param = _context_param(func)
            arguments_param = None
            if input_schema is not None:
                _check_schema(tool_name, input_schema)
                arguments_param = _arguments_param(tool_name, func, context_param)
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
                context_param=context_param,
                input_schema=dict(input_schema) if input_schema is not None else None,
                arguments_param=arguments_param,
            )
            return func

        return register(fn) if fn is not None else register

    def resource(
        self,
        uri: str,
        /,
        *,
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        mime_type: str | None = None,
    ) -> Callable[[_Fn], _Fn]:
        """Register a resource at `uri`: static (`kb://index`) or an RFC 6570 template (`kb://articles/{id}`).

        As the SDK's `MCPServer.resource`: a template's variables are the function's parameters, a
        static URI takes none; the function returns `str` (text), `bytes` (a blob) or anything else
        (as JSON). It may also take `ctx: mesh.Context` (`ctx.tool` is then the URI read). Reads are
        governed as tool calls are (Cedar action `read_resource`, docs/policy.md).
        """
        if callable(uri):
            raise ConfigError('@agent.resource needs the URI: write @agent.resource("scheme://path/{var}")')

        def register(func: _Fn) -> _Fn:
            resource_name = name or func.__name__
            if uri in self.resources:
                raise ConfigError(f"agent {self.name!r} already has a resource at {uri!r}")
            context_param = _context_param(func)
            variables = _uri_variables(uri, func, context_param)
            self.resources[uri] = ResourceSpec(
                fn=func,
                uri=uri,
                name=resource_name,
                title=title,
                description=description or inspect.getdoc(func),
                mime_type=mime_type,
                context_param=context_param,
                variables=variables,
            )
            return func

        return register

    @overload
    def prompt(self, fn: _Fn, /) -> _Fn: ...

    @overload
    def prompt(
        self, /, *, name: str | None = None, title: str | None = None, description: str | None = None
    ) -> Callable[[_Fn], _Fn]: ...

    def prompt(
        self,
        fn: _Fn | None = None,
        /,
        *,
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
    ) -> _Fn | Callable[[_Fn], _Fn]:
        """Register a prompt: its parameters are the prompt's arguments, it returns the messages.

        As the SDK's `MCPServer.prompt`: a `str` is one user message; a list of messages or dicts is
        used as given. It may take `ctx: mesh.Context` (`ctx.tool` is then the prompt's name).
        Getting it is governed as a tool call is (Cedar action `get_prompt`, docs/policy.md).
        """

        def register(func: _Fn) -> _Fn:
            prompt_name = name or func.__name__
            if prompt_name in self.prompts:
                raise ConfigError(f"agent {self.name!r} already has a prompt named {prompt_name!r}")
            self.prompts[prompt_name] = PromptSpec(
                fn=func,
                name=prompt_name,
                title=title,
                description=description or inspect.getdoc(func),
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
    """The name of the parameter annotated `mesh.Context`, if the function asks for one."""
    from mesh.context import Context  # the context imports the runtime's seams; keep agent.py light

    try:
        hints = typing.get_type_hints(func)
    except (NameError, TypeError) as exc:
        raise ConfigError(f"cannot resolve the annotations of {func.__name__!r}: {exc}") from exc
    for param, hint in hints.items():
        if param != "return" and hint is Context:
            return param
    return None


def _parameters(func: Callable[..., Any], context_param: str | None) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(func).parameters.values() if p.name != context_param]


def _arguments_param(tool: str, func: Callable[..., Any], context_param: str | None) -> str:
    """The one parameter of a tool with a declared schema: it receives the arguments dict."""
    params = _parameters(func, context_param)
    if len(params) != 1 or params[0].kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
        raise ConfigError(
            f"tool {tool!r} declares input_schema, so it takes one parameter (the arguments dict) besides ctx"
        )
    return params[0].name


def _check_schema(tool: str, schema: Mapping[str, Any]) -> None:
    """A declared input schema must be a valid JSON Schema for an object (MCP's rule for `inputSchema`)."""
    from jsonschema.exceptions import SchemaError  # the SDK's own dependency; only tools that declare need it
    from jsonschema.validators import validator_for

    if not isinstance(schema, Mapping) or schema.get("type") != "object":  # pyright: ignore[reportUnnecessaryIsInstance]
        raise ConfigError(f'tool {tool!r}: input_schema must be a JSON Schema with "type": "object"')
    try:
        validator_for(schema).check_schema(dict(schema))
    except SchemaError as exc:
        raise ConfigError(f"tool {tool!r}: input_schema is not a valid JSON Schema: {exc.message}") from None


def _uri_variables(uri: str, func: Callable[..., Any], context_param: str | None) -> tuple[str, ...]:
    """The template's variable names, checked against the function's parameters as the SDK checks them."""
    from mcp.shared.uri_template import InvalidUriTemplate, UriTemplate

    try:
        parsed = UriTemplate.parse(uri)
    except InvalidUriTemplate as exc:
        raise ConfigError(f"resource {uri!r}: not a valid URI template: {exc}") from None
    names = tuple(parsed.variable_names)
    params = _parameters(func, context_param)
    given = {p.name for p in params}
    if set(names) != given:
        if not names:
            raise ConfigError(f"resource {uri!r} has no {{variables}}, so its function takes no parameters")
        raise ConfigError(
            f"resource {uri!r}: the template's variables {sorted(names)} must be the function's parameters "
            f"{sorted(given)}"
        )
    optional = sorted(n for n in parsed.query_variable_names if _required(params, n))
    if optional:
        raise ConfigError(f"resource {uri!r}: query variables {optional} may be left out, so give them defaults")
    return names


def _required(params: list[inspect.Parameter], name: str) -> bool:
    return any(p.name == name and p.default is inspect.Parameter.empty for p in params)
