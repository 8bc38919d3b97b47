"""`mesh ls`: the peers this host can see, with where it learned of them and whether they answer.

When a registry of the mesh answers (the one given, else this host's default port), its listing is
the picture and nothing waits for mDNS: each listed instance is asked for its `/healthz` (alive if it
answers as itself, with its span counters), and neither the MCP SDK nor zeroconf is imported. With
no registry answering, or `--wait` given, a `MeshNode` listens on mDNS for the wait (1.5 s unless
told) and probes what it heard of. An agent or adopted server that names no owner is flagged
ungoverned (`"governed": false` in `--json`).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any, Final

import anyio
import httpx2
import typer

from mesh.cli.options import FoundMeshOpt, JsonOpt, LanOpt, RegistryOpt, print_json
from mesh.config import mesh_name
from mesh.discovery.feeds import instance_from_record
from mesh.discovery.proof import prove_service
from mesh.discovery.registries import DEFAULT_REGISTRY, registry_urls
from mesh.errors import RegistryError
from mesh.identity import MeshKeys
from mesh.peers.directory import Instance
from mesh.registry_client import RegistryClient
from mesh.tls import client_context
from mesh.wire import PeerView

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["ADDRESSES_FROM", "GOVERNANCE_FROM", "peer_table", "peer_views", "register", "span_health"]

MDNS_WAIT: Final = 1.5
"""Seconds `mesh ls` listens on mDNS when no registry answers (and `--wait` is not given)."""
_HEALTH_TIMEOUT: Final = 1.0


def register(app: typer.Typer) -> None:
    """Add `mesh ls` to `app`."""
    app.command("ls")(ls)


def ls(
    json_: JsonOpt = False,
    wait: Annotated[
        float | None,
        typer.Option(
            help=f"Seconds to listen on mDNS (default: not at all when a registry answers, else {MDNS_WAIT:g})."
        ),
    ] = None,
    registry: RegistryOpt = None,
    mesh: FoundMeshOpt = None,
    lan: LanOpt = False,
) -> None:
    """List the agents of the mesh: name, instance, tools, health, spans; more columns as the width allows."""
    views = anyio.run(_collect, mesh, registry, wait, lan)
    if json_:
        print_json(views)
        return
    from mesh.cli.options import out

    if not views:
        out.print("no agents found (is anything running with this --mesh?)")
        return
    out.print(peer_table(views, f"mesh {mesh or ''}".strip(), width=out.width))
    ungoverned = sorted({v.name for v in views if not v.governed})
    if ungoverned:
        out.print(f"[yellow]ungoverned (no owner; give one with --meta owner=...): {', '.join(ungoverned)}[/]")


GOVERNANCE_FROM: Final = 120
"""Terminal columns from which `peer_table` shows each agent's owner, jurisdiction and data class."""
ADDRESSES_FROM: Final = 170
"""Terminal columns from which `peer_table` shows each instance's url and where it was learned of."""
_PEER_COLUMNS: Final = (  # each with the terminal columns it needs to be shown
    ("agent", 0),
    ("instance", 0),
    ("url", ADDRESSES_FROM),
    ("tools", 0),
    ("sources", ADDRESSES_FROM),
    ("health", 0),
    ("spans", 0),
    ("owner", GOVERNANCE_FROM),
    ("jurisdiction", GOVERNANCE_FROM),
    ("data", GOVERNANCE_FROM),
)


def peer_table(views: list[PeerView], title: str, *, width: int | None = None) -> Table:
    """`mesh ls` as a table laid out for a terminal `width` columns wide (None: every column).

    Name, instance, tools, health and spans always; the governance columns from `GOVERNANCE_FROM`
    columns and the url and sources from `ADDRESSES_FROM` (`--json` has everything), so that
    a narrow terminal shows whole words instead of every column cut to a few letters.
    """
    from rich.table import Table

    shown = [name for name, room in _PEER_COLUMNS if width is None or width >= room]
    table = Table(title=title, show_lines=False)
    for name in shown:
        table.add_column(name, no_wrap=name not in ("tools", "sources", "spans"))
    for v in views:
        cells = {
            "agent": v.name if v.governed else f"{v.name} [yellow](ungoverned)[/]",
            "instance": v.instance,
            "url": v.url,
            "tools": ", ".join(v.tools),
            "sources": ", ".join(v.sources),
            "health": "[green]healthy[/]" if v.healthy else f"[red]{v.reason or 'down'}[/]",
            "spans": span_health(v.spans),
            "owner": str(v.metadata.get("owner", "")),
            "jurisdiction": str(v.metadata.get("jurisdiction", "")),
            "data": str(v.metadata.get("data_class", "")),
        }
        table.add_row(*(cells[name] for name in shown))
    return table


async def _collect(mesh: str | None, registry: str | None, wait: float | None, lan: bool) -> list[PeerView]:
    """The registry's picture when one answers and no mDNS wait was asked for; else a node's."""
    if wait is None:
        views = await _from_registry(mesh_name(mesh), registry)
        if views is not None:
            return views
    return await _from_node(mesh, registry, MDNS_WAIT if wait is None else wait, lan, listen=wait is not None)


async def _from_registry(mesh: str, given: str | None) -> list[PeerView] | None:
    """What the first registry of `mesh` that proves itself lists, each instance's `/healthz` asked;
    None when none does (or its listing fails), so that mDNS has its turn."""
    keys = MeshKeys.load(mesh)
    candidates = registry_urls(given or "") or [DEFAULT_REGISTRY]
    async with httpx2.AsyncClient(timeout=_HEALTH_TIMEOUT, verify=_tls(candidates)) as http:
        for url in candidates:
            if await prove_service(http, url, keys, kind="registry") is not None:
                break
        else:
            return None
    try:
        async with RegistryClient(url, token_factory=lambda: keys.mint("mesh", "registry", ttl=60)) as client:
            records = await client.agents()
    except RegistryError:
        return None
    views = peer_views([replace(instance_from_record(r), sources=frozenset({"registry"})) for r in records])
    answers: list[Mapping[str, Any] | None] = [None] * len(views)
    async with (
        httpx2.AsyncClient(timeout=_HEALTH_TIMEOUT, verify=_tls([v.url for v in views])) as http,
        anyio.create_task_group() as tg,
    ):
        for at, view in enumerate(views):
            tg.start_soon(_ask_health, http, view.url, answers, at)
    return [_answered(view, answer) for view, answer in zip(views, answers, strict=True)]


def _tls(urls: list[str]) -> ssl.SSLContext | bool:
    """The mesh's TLS context when one of `urls` is https; else False: plain http speaks no TLS, and
    building a context parses the whole trust store (a fifth of this command's time)."""
    return client_context() if any(u.startswith("https:") for u in urls) else False


def _answered(view: PeerView, health: Mapping[str, Any] | None) -> PeerView:
    """`view` as its `/healthz` answer says: alive if it answered as itself (and its lease holds), with its spans."""
    itself = health is not None and health.get("name") == view.name and health.get("instance") == view.instance
    healthy = view.healthy and itself
    return view.model_copy(
        update={
            "healthy": healthy,
            "reason": None if healthy else "not answering",
            "spans": _spans(health) if itself else None,
        }
    )


async def _from_node(mesh: str | None, registry: str | None, wait: float, lan: bool, *, listen: bool) -> list[PeerView]:
    """What a node sees of mDNS and the registry: after `wait` seconds of mDNS when told to `listen`
    (`--wait`), else once a registry announced on mDNS has listed (or `wait` seconds without one)."""
    from mesh.runtime.node import MeshNode  # the MCP SDK and zeroconf: only when mDNS is the source

    async with MeshNode("mesh-cli", mesh=mesh, registry=registry, lan=lan) as node:
        if listen:
            await anyio.sleep(wait)
        await node.settle(browse=0 if listen else wait)
        views = peer_views(node.directory.all())
    answers: list[Mapping[str, Any] | None] = [None] * len(views)
    async with httpx2.AsyncClient(timeout=_HEALTH_TIMEOUT) as http, anyio.create_task_group() as tg:
        for at, view in enumerate(views):
            if view.verified:
                tg.start_soon(_ask_health, http, view.url, answers, at)
    return [view.model_copy(update={"spans": _spans(health)}) for view, health in zip(views, answers, strict=True)]


async def _ask_health(http: httpx2.AsyncClient, url: str, into: list[Mapping[str, Any] | None], at: int) -> None:
    """The instance's `/healthz` body (its name, instance and span counters); nothing if it does not answer."""
    base = url.removesuffix("/").removesuffix("/mcp")
    try:
        response = await http.get(f"{base}/healthz")
        body: object = response.json() if response.status_code == 200 else None
    except (httpx2.HTTPError, ValueError):
        return
    if isinstance(body, dict):
        into[at] = body  # pyright: ignore[reportUnknownArgumentType]


def _spans(health: Mapping[str, Any] | None) -> dict[str, int] | None:
    """The span export counters in a `/healthz` body, if it has them."""
    spans = health.get("spans") if health is not None else None
    if not isinstance(spans, dict):
        return None
    return {str(k): v for k, v in spans.items() if isinstance(v, int)}  # pyright: ignore[reportUnknownVariableType]


def span_health(spans: dict[str, int] | None) -> str:
    """How many spans went out, or what is waiting and what was lost: never silent about drops."""
    if spans is None:
        return "[dim]?[/]"
    if not spans:
        return "[dim]off[/]"
    parts: list[str] = []
    if dropped := spans.get("dropped_spans", 0):
        parts.append(f"[red]{dropped} spans dropped[/]")
    if dropped := spans.get("dropped_batches", 0):
        parts.append(f"[red]{dropped} batches dropped[/]")
    if pending := spans.get("pending_batches", 0):
        parts.append(f"[yellow]{pending} batches spooled[/]")
    return ", ".join(parts) or f"[green]{spans.get('exported_spans', 0)} sent[/]"


def peer_views(instances: list[Instance]) -> list[PeerView]:
    """Directory instances in the shape of `mesh ls --json` (DESIGN §4)."""
    views: list[PeerView] = []
    for i in instances:
        healthy = i.healthy()
        reason = i.reason if not i.verified else (None if healthy else "not answering")
        views.append(
            PeerView(
                name=i.name,
                instance=i.instance,
                url=i.url,
                tools=list(i.tools),
                sources=sorted(i.sources),
                healthy=healthy,
                metadata=dict(i.metadata),
                verified=i.verified,
                reason=reason,
            )
        )
    return views
