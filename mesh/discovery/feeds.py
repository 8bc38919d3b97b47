"""Feeding the peer directory: mDNS announcements, registry listings, and liveness probes.

Each feed is a long-running coroutine for a task group; each turns what its source says
into `Instance`s and tells the directory. Trust comes from signatures, liveness from
leases and probes; none of these functions decides routing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import anyio

from mesh.discovery.txt import Announcement, verify
from mesh.errors import MeshError
from mesh.identity import MeshKeys
from mesh.peers.directory import Instance, PeerDirectory
from mesh.registry_client import RegistryClient
from mesh.wire import GOVERNANCE_META_KEY, AgentRecord

if TYPE_CHECKING:  # types only: reading a registry's listing needs neither zeroconf nor the MCP SDK
    from mesh.discovery.mdns import MdnsBrowser, MdnsEvent
    from mesh.peers.hop import HopClient

__all__ = ["announcement_url", "feed_mdns", "feed_registry", "instance_from_record", "probe"]

log = logging.getLogger(__name__)


def announcement_url(a: Announcement) -> str:
    """Where the announced service listens."""
    host = a.reachable_host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{a.port}{a.path}"


def instance_from_record(record: AgentRecord) -> Instance:
    """An inventory record as a directory instance (its lease is its liveness)."""
    return Instance(
        name=record.name,
        instance=record.instance,
        url=record.url,
        tools=tuple(t.name for t in record.tools),
        tool_info=tuple(
            {
                "name": t.name,
                "description": t.description,
                "inputSchema": t.input_schema,
                "annotations": t.annotations,
                "approval": t.approval,
                **({"outputSchema": t.output_schema} if t.output_schema else {}),
            }
            for t in record.tools
        ),
        metadata=record.metadata.model_dump(exclude_none=True),
        auth=record.authenticated,
        lease_until=record.expires_at,
    )


async def feed_mdns(
    browser: MdnsBrowser,
    directory: PeerDirectory,
    keys: MeshKeys,
    *,
    on_service: Callable[[Announcement], None] | None = None,
) -> None:
    """Report every verified (and every untrusted) agent announcement; hand registries and tracers to `on_service`."""
    async for event in browser:
        _apply(event, directory, keys, on_service)


def _apply(
    event: MdnsEvent, directory: PeerDirectory, keys: MeshKeys, on_service: Callable[[Announcement], None] | None
) -> None:
    a = event.announcement
    if a is None:
        return
    if event.kind == "removed":
        if a.kind == "agent":
            directory.withdraw("mdns", a.name, a.instance)
        return
    reason = verify(a, keys.verify_signature, mesh=keys.mesh, now=time.time())
    if a.kind != "agent":
        if reason is None and on_service is not None:
            on_service(a)
        elif reason is not None:
            log.warning("ignoring untrusted %s announcement %s/%s: %s", a.kind, a.name, a.instance, reason)
        return
    directory.report(
        "mdns",
        Instance(
            name=a.name,
            instance=a.instance,
            url=announcement_url(a),
            verified=reason is None,
            reason=reason,
            auth=a.auth,
        ),
    )


async def feed_registry(
    url: Callable[[], str | None],
    directory: PeerDirectory,
    keys: MeshKeys,
    *,
    interval: float = 1.0,
    max_interval: float | None = None,
    synced: anyio.Event | None = None,
    moved: Callable[[], Awaitable[None]] | None = None,
    failed: Callable[[str], None] | None = None,
) -> None:
    """Poll the registry's inventory and sync the directory with it: every `interval` seconds while the
    membership changes, twice as long after each poll that only renewed leases, up to `max_interval`.

    Every agent polls, so a mesh of N agents lists N records N times a poll: backing off while nothing
    changes keeps that from being what an idle mesh spends its CPU on. `max_interval` must stay under
    the time a lease lasts after its renewal, or healthy peers would lapse between polls. `moved()`
    returning (the registry moved, or a caller misses an agent) polls at once and at `interval` again.
    `url()` names the registry to poll (None: none yet); `failed(url)` hears of each failed poll.

    Each poll after the first is conditional: a registry whose listing has not changed but for lease
    times answers 304 with a lease floor, and the directory's registry leases are raised to it in place,
    as if listed afresh (a lease that lapsed drops its record, which changes the listing and its tag).
    """
    client: RegistryClient | None = None
    current: str | None = None
    warned = False
    tag: str | None = None  # the last listing's: a 304 means it stands
    members: set[tuple[str, str, str, tuple[str, ...]]] | None = None
    wait = interval
    try:
        while True:
            target = url()
            if target != current:
                if client is not None:
                    await client.__aexit__(None, None, None)
                    client = None
                current = target
                tag = None
                if target is not None:
                    client = RegistryClient(target, token_factory=lambda: keys.mint("mesh", "registry", ttl=60))
                    await client.__aenter__()
            if client is not None:
                try:
                    listing = await client.live_agents(tag=tag)
                except MeshError as exc:
                    if not warned:
                        log.warning("registry unreachable (%s): carrying on with mDNS alone", exc)
                        warned = True
                    if failed is not None and current is not None:
                        failed(current)
                else:
                    warned = False
                    now = members
                    if listing.records is not None:
                        found, tag = [instance_from_record(r) for r in listing.records], listing.tag
                        directory.sync("registry", found)
                        now = {(i.name, i.instance, i.url, i.tools) for i in found}
                    elif listing.lease_floor is not None:
                        directory.extend_leases("registry", listing.lease_floor)
                    if synced is not None:
                        synced.set()
                    wait = min(wait * 2, max_interval or interval) if now == members else interval
                    members = now
            with anyio.move_on_after(wait):
                if moved is not None:
                    await moved()  # a registry found (or moved) is polled at once
                    wait = interval
                else:
                    await anyio.sleep_forever()
    finally:
        if client is not None:
            with anyio.CancelScope(shield=True):
                await client.__aexit__(None, None, None)


async def probe(
    directory: PeerDirectory,
    hop_for: Callable[[Instance], HopClient],
    *,
    only_unleased: bool = True,
    only: Callable[[Instance], bool] | None = None,
    timeout: float = 1.5,
    urgent: bool = False,
    settling: float = 0.0,
) -> None:
    """One round: list the tools of every verified instance (that has no lease) — alive if it answers.

    `urgent` also asks instances still in their failure backoff (a caller is waiting on them).
    `settling` leaves alone the instances first heard of less than that many seconds ago: with a
    registry, its listing brings their lease and tools in a moment, where probes from every agent
    of the mesh at once would each open a session to a process that is still starting.
    """
    now = time.time()
    targets = [
        i
        for i in directory.all()
        if i.verified
        and (not only_unleased or now >= i.lease_until)
        and (urgent or now >= i.down_until)
        and (only is None or only(i))
        and now - i.seen >= settling
    ]

    async def one(inst: Instance) -> None:
        hop = hop_for(inst)
        try:
            tools = await hop.list_tools(timeout=timeout)
        except MeshError as exc:
            log.debug("probe of %s/%s failed: %s", inst.name, inst.instance, exc)
            directory.failed(inst.name, inst.instance, down_for=1.0)
            return
        info: tuple[Mapping[str, Any], ...] = tuple(tools)
        names = tuple(str(t.get("name")) for t in tools)
        governance = hop.listing_meta.get(GOVERNANCE_META_KEY)
        metadata: Mapping[str, Any] = governance if isinstance(governance, dict) else {}  # pyright: ignore[reportUnknownVariableType]
        current = directory.get(inst.name, inst.instance)
        if current is not None and (current.tools != names or (metadata and not current.metadata)):
            learned = replace(current, tools=names, tool_info=info, metadata=current.metadata or metadata)
            directory.report(next(iter(current.sources)), learned)
        directory.succeeded(inst.name, inst.instance)

    async with anyio.create_task_group() as tg:
        for inst in targets:
            tg.start_soon(one, inst)
