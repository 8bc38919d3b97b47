"""The gateway's catalog: which tools of the mesh an MCP client sees, under which names.

Pure: turns peer-directory instances and the registry's own tool listing into MCP `Tool`s
named `{agent}__{tool}`, each description led by the agent's governance facts. Serving the
catalog, following the mesh and calling tools live in `mesh.gateway.server`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from mcp_types import Tool, ToolAnnotations
from pydantic import ValidationError

from mesh.naming import TOOL_SEPARATOR
from mesh.peers.directory import Instance
from mesh.runtime.tools import APPROVAL_META_KEY

__all__ = [
    "REGISTRY_AGENT",
    "Catalog",
    "build_catalog",
    "describe",
    "exposed_name",
    "split_name",
    "tool_info",
]

REGISTRY_AGENT: Final = "registry"
"""The prefix of the registry's own tools (`registry__list_agents`)."""

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
