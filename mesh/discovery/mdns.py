"""The one adapter that touches zeroconf: announce signed announcements, and browse for them.

Owns mDNS sockets, re-signing before expiry, goodbyes, and the asyncio bridge: the announcers
and browsers of one event loop share one AsyncZeroconf per set of interfaces, opened inside the
running loop (`use_asyncio=True`) so zeroconf's callbacks run on our loop thread and reach anyio
code without thread hops, and closed when the last of them leaves. Every packet on the group is
read and parsed by every socket joined to it: one per process instead of one per announcer and
browser halves what each announcement and answer costs the mesh. A browser sees the services of
its own process as any other. Does not own trust (`txt.verify`) nor liveness (leases and probes do).
By default it binds 127.0.0.1 only, IPv4 only; `lan=True` uses every interface.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, Final, Literal, Self, final

import anyio
import ifaddr
from anyio import AsyncContextManagerMixin
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from mesh.discovery.txt import (
    Announcement,
    BadAnnouncement,
    Kind,
    decode_txt,
    encode_txt,
    instance_label,
    service_type,
)
from mesh.errors import DiscoveryError
from mesh.naming import check_name

__all__ = ["LOOPBACK", "MdnsAnnouncer", "MdnsBrowser", "MdnsEvent", "machine_addresses"]

log = logging.getLogger(__name__)

LOOPBACK: Final = ("127.0.0.1",)
"""The interfaces mDNS binds unless told otherwise (DESIGN §6: secure defaults)."""

_REGISTER_TIMEOUT: Final = 2.0
_GOODBYE_TIMEOUT: Final = 1.0  # three goodbyes 125 ms apart (RFC 6762 §10.1)
_CLOSE_TIMEOUT: Final = 2.0
_RESOLVE_TIMEOUT_MS: Final = 3000
_MIN_REFRESH: Final = 1.0
_RETRY_AFTER: Final = 5.0


@dataclass(frozen=True, slots=True)
class MdnsEvent:
    """A change seen on the network; `error` says why an announcement of our mesh is unusable."""

    kind: Literal["added", "updated", "removed"]
    announcement: Announcement | None
    label: str
    error: str | None = None


@final
class MdnsAnnouncer(AsyncContextManagerMixin):
    """Announces `announcement_factory()` while entered, re-signed before expiry; goodbye on exit.

    Re-signed when half the signature's life is left (or every `refresh` seconds, if sooner): each
    re-announcement is read by every mDNS socket of the mesh on this host, so a mesh of many agents
    pays for each one many times over, and nothing but the signature's expiry needs it. A wildcard
    host (0.0.0.0) is announced with this machine's IPv4 addresses: the non-loopback ones with
    `lan=True`, else the bound interfaces. Single use.
    """

    def __init__(
        self,
        announcement_factory: Callable[[], Announcement],
        *,
        interfaces: Sequence[str] | None = None,
        lan: bool = False,
        refresh: float = math.inf,
    ) -> None:
        if not refresh > 0:
            raise ValueError(f"refresh must be positive seconds, not {refresh!r}")
        self._factory = announcement_factory
        self._interfaces = _interfaces(interfaces, lan=lan)
        self._lan = lan
        self._refresh = refresh
        self._used = False
        self._current: Announcement | None = None
        self._info: AsyncServiceInfo | None = None
        self._broadcasts: list[asyncio.Future[Any]] = []

    @property
    def announcement(self) -> Announcement | None:
        """What is announced right now, or None outside the context."""
        return self._current

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        if self._used:
            raise RuntimeError("an MdnsAnnouncer is single-use: create a new one to announce again")
        self._used = True
        aiozc = _acquire(self._interfaces)
        try:
            with anyio.fail_after(_REGISTER_TIMEOUT):
                await self._publish(aiozc, self._factory(), first=True)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._keep_fresh, aiozc)
                try:
                    yield self
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._goodbye(aiozc)

    async def _publish(self, aiozc: AsyncZeroconf, a: Announcement, *, first: bool = False) -> None:
        """Register (or update) the service record set for `a`."""
        label, type_ = instance_label(a), service_type(a.kind)
        name = f"{label}.{type_}"
        if self._info is not None and self._info.name != name:
            raise BadAnnouncement("the announcement factory changed kind, mesh, name or instance")
        info = AsyncServiceInfo(
            type_,
            name,
            port=a.port,
            properties=encode_txt(a),
            server=f"{label}.local.",
            parsed_addresses=self._addresses(a),
        )
        self._broadcasts = [b for b in self._broadcasts if not b.done()]
        if first:
            # Safe: instance labels are unique by construction, so no name probing (~1.2 s).
            done = await aiozc.async_register_service(info, cooperating_responders=True)
        else:
            done = await aiozc.async_update_service(info)
        self._broadcasts.append(asyncio.ensure_future(done))
        self._info, self._current = info, a

    async def _keep_fresh(self, aiozc: AsyncZeroconf) -> None:
        """Re-sign and re-announce before the current announcement expires."""
        delay = self._next_refresh()
        while True:
            await anyio.sleep(delay)
            try:
                await self._publish(aiozc, self._factory())
                delay = self._next_refresh()
            except Exception:  # task root: a failed refresh must not take the agent down
                log.exception("could not refresh the mDNS announcement; retrying")
                delay = min(self._refresh, _RETRY_AFTER)

    def _next_refresh(self) -> float:
        """Seconds until the next re-sign: `refresh`, or half the time left if that is sooner."""
        assert self._current is not None
        left = self._current.expires - time.time()
        return max(_MIN_REFRESH, min(self._refresh, left / 2))

    def _addresses(self, a: Announcement) -> list[str]:
        """The A records for `a`: its host, or this machine's addresses for a wildcard."""
        if not a.wildcard:
            if ipaddress.ip_address(a.host).version != 4:
                raise BadAnnouncement(f"mDNS announces IPv4 hosts only, not {a.host}")
            return [a.host]
        if not self._lan:
            return list(self._interfaces)
        return machine_addresses() or list(LOOPBACK)

    async def _goodbye(self, aiozc: AsyncZeroconf) -> None:
        """Withdraw the service (goodbye packets) and let go of the sockets, each bounded."""
        for pending in self._broadcasts:
            pending.cancel()  # a late hello must not follow the goodbye
        try:
            if self._info is not None:
                with anyio.move_on_after(_GOODBYE_TIMEOUT):
                    await (await aiozc.async_unregister_service(self._info))
        finally:
            self._current = self._info = None
            await _release(aiozc)


@final
class MdnsBrowser(AsyncContextManagerMixin):
    """Watches announcements of `kinds` in `mesh`; iterate it (or `events()`) for changes.

    Records of other meshes (or naming none) are dropped and counted in `ignored`. Records that
    claim our mesh but do not decode are passed up with `error` set, so a directory can show
    them as garbled or forged. Events are dropped (counted in `dropped`) only when nobody reads
    them and `buffer` are waiting; `snapshot()` is always current. Single use.
    """

    def __init__(
        self,
        kinds: Sequence[Kind],
        *,
        mesh: str,
        interfaces: Sequence[str] | None = None,
        lan: bool = False,
        buffer: int = 256,
    ) -> None:
        self._types: dict[str, Kind] = {service_type(kind): kind for kind in kinds}
        if not self._types:
            raise ValueError("MdnsBrowser needs at least one kind to browse")
        self._mesh = check_name(mesh, what="mesh name")
        self._interfaces = _interfaces(interfaces, lan=lan)
        self._buffer = buffer
        self._send: MemoryObjectSendStream[MdnsEvent] | None = None
        self._receive: MemoryObjectReceiveStream[MdnsEvent] | None = None
        self._used = False
        self._known: dict[str, Announcement | None] = {}
        self._pending: dict[str, tuple[str, ServiceStateChange]] = {}
        self._generation: dict[str, int] = {}
        self._changes = 0
        self._wake = anyio.Event()
        self._ignored = 0
        self._dropped = 0

    @property
    def ignored(self) -> int:
        """Records dropped because they belong to another mesh (or to none)."""
        return self._ignored

    @property
    def dropped(self) -> int:
        """Events lost because the consumer fell `buffer` events behind."""
        return self._dropped

    def events(self) -> MemoryObjectReceiveStream[MdnsEvent]:
        """A receive stream of changes, yours to close (`with`); it ends when the browser exits."""
        if self._receive is None:
            raise RuntimeError("enter the MdnsBrowser before reading its events")
        return self._receive.clone()

    async def __aiter__(self) -> AsyncIterator[MdnsEvent]:
        """Iterate the changes (as `events()`, closed for you)."""
        with self.events() as events:
            async for event in events:
                yield event

    def snapshot(self) -> dict[str, Announcement]:
        """Every decodable announcement of our mesh seen and not withdrawn, by instance label."""
        return {label: a for label, a in self._known.items() if a is not None}

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        if self._used:
            raise RuntimeError("an MdnsBrowser is single-use: create a new one to browse again")
        self._used = True
        aiozc = _acquire(self._interfaces)
        browser: AsyncServiceBrowser | None = None
        self._send, self._receive = anyio.create_memory_object_stream[MdnsEvent](self._buffer)
        try:
            async with anyio.create_task_group() as tg:
                browser = AsyncServiceBrowser(aiozc.zeroconf, list(self._types), handlers=[self._on_change])
                tg.start_soon(self._dispatch, aiozc.zeroconf, tg)
                try:
                    yield self
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self._send.close()  # readers see the end of the stream
            self._receive.close()
            with anyio.CancelScope(shield=True):
                if browser is not None:
                    with anyio.move_on_after(_CLOSE_TIMEOUT):
                        await browser.async_cancel()
                await _release(aiozc)

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        """Zeroconf's callback (on our loop thread, by keyword): note the change, resolve elsewhere."""
        self._pending[name] = (service_type, state_change)
        self._wake.set()

    async def _dispatch(self, zc: Zeroconf, tg: TaskGroup) -> None:
        """Turn noted changes into removals or resolve tasks; newer changes supersede older ones."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            batch, self._pending = self._pending, {}
            for name, (type_, change) in batch.items():
                self._changes += 1
                if change is ServiceStateChange.Removed:
                    self._generation.pop(name, None)
                    self._withdraw(_label(name, type_))
                else:
                    self._generation[name] = self._changes
                    tg.start_soon(self._resolve, zc, type_, name, self._changes)

    async def _resolve(self, zc: Zeroconf, type_: str, name: str, generation: int) -> None:
        """Fetch a service's records, keep ours, and report what changed."""
        label = _label(name, type_)
        try:
            info = AsyncServiceInfo(type_, name)
            found = await info.async_request(zc, _RESOLVE_TIMEOUT_MS)
            if self._generation.get(name) != generation:
                return  # a newer change to this service is being handled
            if not found:
                log.debug("mDNS service %s did not resolve", name)
                return
            self._update(label, type_, info)
        except Exception:  # task root: one odd record must not stop discovery
            log.exception("could not resolve mDNS service %r", name)

    def _update(self, label: str, type_: str, info: AsyncServiceInfo) -> None:
        """Decode a resolved service and record it, or ignore it when it is not of our mesh."""
        props = info.properties
        claimed = next((value for key, value in props.items() if key.lower() == b"m"), None)
        if claimed != self._mesh.encode():
            self._ignored += 1
            self._withdraw(label)
            return
        kind: Literal["added", "updated"] = "updated" if label in self._known else "added"
        addresses = info.parsed_addresses(IPVersion.V4Only)
        try:
            if not addresses or info.port is None:
                raise BadAnnouncement(f"mDNS service {label} has no IPv4 address or port")
            a = decode_txt(props, host=addresses[0], port=info.port, kind=self._types[type_])
        except BadAnnouncement as error:
            self._known[label] = None
            self._emit(MdnsEvent(kind, None, label, error=str(error)))
            return
        a = replace(a, addresses=tuple(addresses))
        self._known[label] = a
        self._emit(MdnsEvent(kind, a, label))

    def _withdraw(self, label: str) -> None:
        """Forget `label` and report its removal, if it was known."""
        if label in self._known:
            self._emit(MdnsEvent("removed", self._known.pop(label), label))

    def _emit(self, event: MdnsEvent) -> None:
        """Hand `event` to the consumer without ever blocking discovery."""
        assert self._send is not None
        try:
            self._send.send_nowait(event)
        except anyio.WouldBlock:
            self._dropped += 1
            if self._dropped == 1:
                log.warning("mDNS events are being dropped: %d wait unread (counted in .dropped)", self._buffer)


def _interfaces(interfaces: Sequence[str] | None, *, lan: bool) -> tuple[str, ...]:
    """The interfaces to bind: the given ones, loopback by default, or () meaning all with lan."""
    if lan:
        if interfaces is not None:
            raise ValueError("pass interfaces or lan=True, not both")
        return ()
    return tuple(interfaces) if interfaces is not None else LOOPBACK


def _acquire(interfaces: tuple[str, ...]) -> AsyncZeroconf:
    """The running loop's AsyncZeroconf on `interfaces`, opened if none is; `_release` it when done."""
    by_interfaces = _SHARED.setdefault(asyncio.get_running_loop(), {})
    shared = by_interfaces.get(interfaces)
    if shared is None:
        shared = by_interfaces[interfaces] = _Shared(_open(interfaces))
    shared.users += 1
    return shared.aiozc


async def _release(aiozc: AsyncZeroconf) -> None:
    """One user less of `aiozc`; the last one closes it (bounded, even when cancelled)."""
    by_interfaces = _SHARED.get(asyncio.get_running_loop(), {})
    for interfaces, shared in list(by_interfaces.items()):
        if shared.aiozc is aiozc:
            shared.users -= 1
            if shared.users > 0:
                return
            del by_interfaces[interfaces]  # a newcomer opens a fresh one while this one closes
    with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_TIMEOUT):
        await aiozc.async_close()


@final
class _Shared:
    """An AsyncZeroconf and how many announcers and browsers use it."""

    def __init__(self, aiozc: AsyncZeroconf) -> None:
        self.aiozc = aiozc
        self.users = 0


_SHARED: Final[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, ...], _Shared]]] = (
    weakref.WeakKeyDictionary()
)


def _open(interfaces: tuple[str, ...]) -> AsyncZeroconf:
    """An AsyncZeroconf on our running loop, IPv4 only; () binds every interface."""
    choice = list(interfaces) if interfaces else InterfaceChoice.All
    try:
        zc = Zeroconf(interfaces=choice, ip_version=IPVersion.V4Only, use_asyncio=True)
    except OSError as error:
        where = ", ".join(interfaces) or "all interfaces"
        raise DiscoveryError(f"cannot open mDNS on {where}: {error.strerror or error}") from error
    return AsyncZeroconf(zc=zc)


def _label(name: str, type_: str) -> str:
    """The instance label of a DNS-SD service name (`label.type`)."""
    return name[: -len(type_) - 1] if name.endswith(f".{type_}") else name


def machine_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses (what zeroconf itself would bind with lan)."""
    found = {ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips if isinstance(ip.ip, str)}
    return sorted(ip for ip in found if not ipaddress.ip_address(ip).is_loopback)
