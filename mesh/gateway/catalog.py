"""The gateway's catalog: which tools, resources and prompts of the mesh an MCP client sees, under which names.

Pure: turns peer-directory instances and the registry's own tool listing into MCP `Tool`s
named `{agent}__{tool}`, and what each agent offers besides tools into `Resource`s at
`mesh://{agent}/{uri}` (templates alike) and `Prompt`s named `{agent}__{prompt}`, each description
led by the agent's governance facts; `OfferingCache` keeps what each instance offered for a while.
Serving the catalog, following the mesh and calling live in `mesh.gateway.server` and `.resources`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar, final

from mcp_types import Prompt, Resource, ResourceTemplate, Tool, ToolAnnotations
from pydantic import ValidationError

from mesh.naming import TOOL_SEPARATOR, is_name
from mesh.peers.directory import Instance
from mesh.wire import APPROVAL_META_KEY

__all__ = [
    "REGISTRY_AGENT",
    "Catalog",
    "build_catalog",
    "describe",
    "exposed_name",
    "split_name",
    "tool_info",
    "MESH_URI_PREFIX",
    "Listing",
    "Offering",
    "OfferingCache",
    "Offerings",
    "build_offerings",
    "mesh_uri",
    "split_uri",
]

REGISTRY_AGENT: Final = "registry"
"""The prefix of the registry's own tools (`registry__list_agents`)."""

MESH_URI_PREFIX: Final = "mesh://"
"""How the gateway names an agent's resource: `mesh://{agent}/{the agent's own URI}` (reversible: agent
names hold no `/`)."""

_Listed = TypeVar("_Listed", Resource, ResourceTemplate, Prompt)
_CLIENT_TOOL_NAME: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # Claude's rule: no dots, at most 64
_ANY_OBJECT: Final[Mapping[str, Any]] = {"type": "object"}


@dataclass(frozen=True, slots=True)
class Catalog:
    """The tools the gateway exposes right now, and the names it had to leave out."""

    tools: tuple[Tool, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def fingerprint(self) -> str:
        """A stable digest of the whole listing: it changes exactly when a client should re-list."""
        return json.dumps(
            [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in self.tools],
            sort_keys=True,
            separators=(",", ":"),
        )


def exposed_name(agent: str, tool: str) -> str:
    """`crm`, `lookup` → `crm__lookup`."""
    return f"{agent}{TOOL_SEPARATOR}{tool}"


def split_name(name: str) -> tuple[str, str] | None:
    """`crm__lookup` → (`crm`, `lookup`), split on the first separator (agent names hold no `_`)."""
    agent, sep, tool = name.partition(TOOL_SEPARATOR)
    return (agent, tool) if sep and agent and tool else None


def describe(agent: str, metadata: Mapping[str, Any], text: str | None, *, approval: bool = False) -> str:
    """`[crm · owner sales · eu · confidential] Looks up a customer`: the facts a model should weigh."""
    facts = [agent]
    if metadata.get("owner"):
        facts.append(f"owner {metadata['owner']}")
    facts.extend(str(metadata[key]) for key in ("jurisdiction", "data_class") if metadata.get(key))
    if approval:
        facts.append("needs human approval")
    return f"[{' · '.join(facts)}] {text or ''}".rstrip()


def tool_info(instances: Iterable[Instance], agent: str, tool: str) -> Mapping[str, Any] | None:
    """What any instance of `agent` says about `tool` (its wire dict), if anything."""
    for inst in instances:
        if inst.name == agent:
            for info in inst.tool_info:
                if info.get("name") == tool:
                    return info
    return None


def build_catalog(
    instances: Iterable[Instance],
    registry_tools: Sequence[Mapping[str, Any]] = (),
    *,
    now: float | None = None,
) -> Catalog:
    """One entry per tool of every agent with a healthy instance, then the registry's tools."""
    now = time.time() if now is None else now
    agents: dict[str, list[Instance]] = {}
    for inst in sorted(instances, key=lambda i: i.key):
        if inst.healthy(now):
            agents.setdefault(inst.name, []).append(inst)
    tools: list[Tool] = []
    skipped: list[str] = []
    for agent, healthy in sorted(agents.items()):
        if agent == REGISTRY_AGENT and registry_tools:
            skipped.extend(exposed_name(agent, t) for i in healthy for t in i.tools)  # the registry's names win
            continue
        metadata = next((i.metadata for i in healthy if i.metadata), {})
        for info in _merged_infos(healthy):
            _add(tools, skipped, agent, metadata, info)
    for info in registry_tools:
        _add(tools, skipped, REGISTRY_AGENT, {}, info)
    return Catalog(tools=tuple(tools), skipped=tuple(dict.fromkeys(skipped)))


# -- private helpers ---------------------------------------------------------------------------


def _merged_infos(healthy: list[Instance]) -> list[Mapping[str, Any]]:
    """Every tool the instances serve, once; a full description wins over a bare name."""
    merged: dict[str, Mapping[str, Any]] = {}
    for inst in healthy:
        described = {str(info.get("name")): info for info in inst.tool_info}
        for name in (*inst.tools, *described):
            info = described.get(name, {"name": name})
            if name not in merged or ("inputSchema" in info and "inputSchema" not in merged[name]):
                merged[name] = info
    return list(merged.values())


def _add(
    tools: list[Tool], skipped: list[str], agent: str, metadata: Mapping[str, Any], info: Mapping[str, Any]
) -> None:
    name = exposed_name(agent, str(info.get("name", "")))
    tool = _tool(name, agent, metadata, info) if _CLIENT_TOOL_NAME.match(name) else None
    if tool is None:
        skipped.append(name)
    else:
        tools.append(tool)


def _tool(name: str, agent: str, metadata: Mapping[str, Any], info: Mapping[str, Any]) -> Tool | None:
    meta: Mapping[str, Any] = info.get("_meta") or {}
    approval = bool(info.get("approval") or meta.get(APPROVAL_META_KEY))
    schema = info.get("inputSchema")
    output = info.get("outputSchema")
    annotations = info.get("annotations")
    try:
        return Tool(
            name=name,
            title=info.get("title") or None,
            description=describe(agent, metadata, info.get("description"), approval=approval),
            input_schema={**schema, "type": "object"} if isinstance(schema, dict) else dict(_ANY_OBJECT),
            output_schema=output if isinstance(output, dict) and output.get("type") == "object" else None,
            annotations=ToolAnnotations.model_validate(annotations) if annotations else None,
            _meta={APPROVAL_META_KEY: True} if approval else None,
        )
    except ValidationError:
        return None


# -- resources and prompts ---------------------------------------------------------------------


def mesh_uri(agent: str, uri: str) -> str:
    """`kb`, `kb://articles/{id}` → `mesh://kb/kb://articles/{id}`: a URI or a URI template alike."""
    return f"{MESH_URI_PREFIX}{agent}/{uri}"


def split_uri(uri: str) -> tuple[str, str] | None:
    """`mesh://kb/kb://articles/KB-101` → (`kb`, `kb://articles/KB-101`); None for any other URI."""
    if not uri.startswith(MESH_URI_PREFIX):
        return None
    agent, sep, own = uri.removeprefix(MESH_URI_PREFIX).partition("/")
    return (agent, own) if sep and own and is_name(agent) else None


@dataclass(frozen=True, slots=True)
class Offering:
    """What one agent instance offers besides tools, as it listed them (wire dicts)."""

    resources: tuple[Mapping[str, Any], ...] = ()
    templates: tuple[Mapping[str, Any], ...] = ()
    prompts: tuple[Mapping[str, Any], ...] = ()


Listing = Literal["resources", "prompts"]
"""One of the two listings besides tools that a client is told changed (`notifications/{listing}/list_changed`)."""


@dataclass(frozen=True, slots=True)
class Offerings:
    """Every agent's resources, resource templates and prompts, as the gateway lists them."""

    resources: tuple[Resource, ...] = ()
    templates: tuple[ResourceTemplate, ...] = ()
    prompts: tuple[Prompt, ...] = ()

    def fingerprint(self, listing: Listing) -> str:
        """A digest of `listing` (resources with their templates, or prompts): it changes when its list did."""
        return _fingerprint([*self.resources, *self.templates] if listing == "resources" else self.prompts)


def build_offerings(agents: Mapping[str, tuple[Mapping[str, Any], Offering]]) -> Offerings:
    """Each agent's (governance metadata, offering), URIs under `mesh://{agent}/`, names `{agent}__{name}`.

    An entry the agent described in a shape MCP does not accept is left out rather than failing the listing.
    """
    resources: list[Resource] = []
    templates: list[ResourceTemplate] = []
    prompts: list[Prompt] = []
    for agent, (metadata, offering) in sorted(agents.items()):
        for info in offering.resources:
            resources.extend(_entry(Resource, agent, metadata, info, uri=mesh_uri(agent, str(info.get("uri", "")))))
        for info in offering.templates:
            template = mesh_uri(agent, str(info.get("uriTemplate", "")))
            templates.extend(_entry(ResourceTemplate, agent, metadata, info, uriTemplate=template))
        for info in offering.prompts:
            prompts.extend(_entry(Prompt, agent, metadata, info))
    return Offerings(tuple(resources), tuple(templates), tuple(prompts))


@final
class OfferingCache:
    """What each agent instance offered when last asked, trusted for `ttl` seconds."""

    def __init__(self, ttl: float = 30.0) -> None:
        self.ttl = ttl
        self._entries: dict[tuple[str, str], tuple[float, Offering]] = {}

    def get(self, key: tuple[str, str], *, now: float | None = None) -> Offering | None:
        """The instance's offering if it was asked less than `ttl` seconds ago."""
        entry = self._entries.get(key)
        now = time.time() if now is None else now
        return entry[1] if entry is not None and now - entry[0] < self.ttl else None

    def known(self, key: tuple[str, str]) -> Offering | None:
        """The instance's offering when it was last asked, however long ago."""
        entry = self._entries.get(key)
        return entry[1] if entry is not None else None

    def forget(self, key: tuple[str, str]) -> None:
        """Forget what the instance offered (it said its offering changed): the next listing asks it again."""
        self._entries.pop(key, None)

    def put(self, key: tuple[str, str], offering: Offering, *, now: float | None = None) -> None:
        """Remember what the instance answered (an empty offering too: it offers nothing)."""
        self._entries[key] = (time.time() if now is None else now, offering)

    def keep_only(self, keys: Iterable[tuple[str, str]]) -> None:
        """Forget every instance but `keys` (the ones still in the mesh)."""
        kept = set(keys)
        self._entries = {k: v for k, v in self._entries.items() if k in kept}


def _fingerprint(entries: Sequence[Resource | ResourceTemplate | Prompt]) -> str:
    dumped = [entry.model_dump(mode="json", by_alias=True, exclude_none=True) for entry in entries]
    return json.dumps(dumped, sort_keys=True, separators=(",", ":"))


def _entry(
    model: type[_Listed], agent: str, metadata: Mapping[str, Any], info: Mapping[str, Any], **renamed: str
) -> list[_Listed]:
    fields = {
        **info,
        **renamed,
        "name": exposed_name(agent, str(info.get("name", ""))),
        "description": describe(agent, metadata, info.get("description")),
    }
    try:
        return [model.model_validate(fields)]
    except ValidationError:
        return []
