"""`mesh ls`: the peers this host can see, with where it learned of them and whether they answer.

An agent or adopted server that names no owner is flagged ungoverned (`"governed": false` in `--json`).
"""

from __future__ import annotations

from typing import Annotated, Final

import anyio
import httpx2
import typer
from rich.table import Table

from mesh.cli.options import FoundMeshOpt, JsonOpt, LanOpt, RegistryOpt, out, print_json
from mesh.peers.directory import Instance
from mesh.runtime.node import MeshNode
from mesh.wire import PeerView

__all__ = ["ADDRESSES_FROM", "GOVERNANCE_FROM", "peer_table", "peer_views", "register", "span_health"]


def register(app: typer.Typer) -> None:
    """Add `mesh ls` to `app`."""
    app.command("ls")(ls)


def ls(
    json_: JsonOpt = False,
    wait: Annotated[float, typer.Option(help="Seconds to listen on mDNS before answering.")] = 1.5,
    registry: RegistryOpt = None,
    mesh: FoundMeshOpt = None,
    lan: LanOpt = False,
) -> None:
    """List the agents of the mesh: name, instance, tools, health, spans; more columns as the width allows."""
    views = anyio.run(_collect, mesh, registry, wait, lan)
    if json_:
        print_json(views)
        return
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


async def _collect(mesh: str | None, registry: str | None, wait: float, lan: bool) -> list[PeerView]:
    async with MeshNode("mesh-cli", mesh=mesh, registry=registry, lan=lan) as node:
        await node.settle(browse=wait)
        views = peer_views(node.directory.all())
    counters: list[dict[str, int] | None] = [None] * len(views)
    async with httpx2.AsyncClient(timeout=1.0) as http, anyio.create_task_group() as tg:
        for at, view in enumerate(views):
            if view.verified:
                tg.start_soon(_span_counters, http, view.url, counters, at)
    return [view.model_copy(update={"spans": spans}) for view, spans in zip(views, counters, strict=True)]


async def _span_counters(http: httpx2.AsyncClient, url: str, into: list[dict[str, int] | None], at: int) -> None:
    """The instance's span export counters from its /healthz; nothing if it does not answer."""
    base = url.removesuffix("/").removesuffix("/mcp")
    try:
        body = (await http.get(f"{base}/healthz")).json()
    except (httpx2.HTTPError, ValueError):
        return
    spans = body.get("spans") if isinstance(body, dict) else None
    if isinstance(spans, dict):
        into[at] = {str(k): v for k, v in spans.items() if isinstance(v, int)}  # pyright: ignore[reportUnknownVariableType]


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
