"""`MeshNode`: one process's membership in a mesh, as a caller.

Owns the keys, the peer directory and the tasks that feed it (mDNS browsing, registry
polling, liveness probes), the registry and tracer locations found on the way, and the
`PeerPool` that calls peers. Agents add serving and announcing on top (`process`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, Self, final

import anyio
import httpx2
from anyio import AsyncContextManagerMixin

from mesh.config import mesh_name
from mesh.discovery.feeds import feed_mdns, feed_registry, probe
from mesh.discovery.mdns import MdnsBrowser
from mesh.discovery.proof import prove_service
from mesh.discovery.registries import DEFAULT_REGISTRY, registry_urls
from mesh.discovery.txt import Announcement
from mesh.errors import RegistryError
from mesh.identity import Credential, MeshKeys
from mesh.peers.directory import Instance, PeerDirectory
from mesh.peers.hop import HopClient
from mesh.peers.pool import PeerPool
from mesh.policy import Policy
from mesh.tls import client_context

__all__ = ["DISCOVERY_GRACE", "MeshNode", "registry_urls"]

DISCOVERY_GRACE = 2.0
"""Seconds a call waits for an agent that is not known yet (mDNS answers take up to ~1.2 s)."""

log = logging.getLogger(__name__)


@final
class MeshNode(AsyncContextManagerMixin):
    """Joins mesh `mesh` as `me`: discovers peers and calls them. Single use."""

    def __init__(
        self,
        me: str,
        *,
        mesh: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        policy: Policy | None = None,
        registry: str | None = None,
        mdns: bool = True,
        lan: bool = False,
        poll_interval: float = 1.0,
        max_poll_interval: float = 4.0,
        probe_interval: float = 2.0,
        default_timeout: float = 30.0,
        credential: Credential | None = None,
    ) -> None:
        self.me = me
        self.mesh = mesh_name(mesh)
        self.metadata = dict(metadata or {})
        self.policy = policy or Policy.allow_all()
        self.keys = MeshKeys.load(self.mesh)
        self.directory = PeerDirectory()
        self.explicit_registries = registry_urls(registry or os.environ.get("MESH_REGISTRY") or "")
        self.found_registries: dict[str, None] = {}
        """Registries announced on mDNS, in the order first seen (an ordered set)."""
        self._services = _Services(given_tracer=os.environ.get("MESH_TRACER") or None)
        self.mdns = mdns
        self.lan = lan
        self.poll_interval = poll_interval
        self.max_poll_interval = max(poll_interval, max_poll_interval)
        """The registry is polled every `poll_interval` s while its listing changes, less often (up to this)
        while it does not: under the 6.7 s a lease lasts after its renewal (a 10 s lease renewed every third)."""
        self._poll_wanted = anyio.Event()
        self.probe_interval = probe_interval
        self.registry_synced = anyio.Event()
        self._registry_moved = anyio.Event()
        self._pool = PeerPool(
            me=me,
            keys=self.keys,
            directory=self.directory,
            policy=self.policy,
            metadata=self.metadata,
            default_timeout=default_timeout,
            refresh=self._refresh,
            credential=credential,
        )
        self._used = False

    @property
    def credential(self) -> Credential:
        """Where this node's bearer tokens come from (see `PeerPool.credential`)."""
        return self._pool.credential

    @property
    def pool(self) -> PeerPool:
        """The caller: `await node.pool.call(agent, tool, args)`."""
        return self._pool

    @property
    def registry_url(self) -> str | None:
        """The registry's base URL once it proved it holds the mesh secret: the one given, else one found."""
        return self._services.registry

    @property
    def tracer_url(self) -> str | None:
        """The tracer's base URL (`MESH_TRACER`, else found on mDNS) once it proved it holds the mesh secret."""
        return self._services.tracer

    async def call(
        self, agent: str, tool: str, arguments: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Call `tool` on `agent` through the mesh."""
        return await self._pool.call(agent, tool, arguments, timeout=timeout)

    async def call_any(
        self, tool: str, arguments: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Call `tool` on whichever agent offers it (find by capability)."""
        return await self._pool.call_tool_anywhere(tool, arguments, timeout=timeout)

    async def find_registry(self, *, timeout: float = 3.0) -> str:
        """The proven registry's URL, waiting up to `timeout`; RegistryError if none proves itself for this mesh."""
        with anyio.move_on_after(timeout):
            while self.registry_url is None:
                await self.registry_moved()
        if self.registry_url is None:
            if self.explicit_registries:
                named = ", ".join(self.explicit_registries)
                raise RegistryError(
                    f"registry at {named} did not prove it holds mesh {self.mesh}'s secret"
                    " (is it running, and for this mesh?)"
                )
            raise RegistryError("no registry found for this mesh (start one with `mesh registry`, or pass --registry)")
        return self.registry_url

    async def registry_moved(self) -> None:
        """Return when the registry in use changes: one proves itself, moves, or stops proving itself."""
        await self._registry_moved.wait()

    async def settle(self, *, browse: float = 0.6, timeout: float = 5.0) -> None:
        """Wait for a first picture of the mesh, then probe every instance once.

        With a registry that proves itself (the one given, this host's default, or one announced on
        mDNS within `browse` seconds) the picture is its first listing, and nothing more is waited
        for; without one (or when it does not list), it is what mDNS answers in `browse` seconds.
        """
        with anyio.move_on_after(timeout):
            started = anyio.current_time()
            if self.registry_url is None and self.mdns:
                with anyio.move_on_after(browse):  # ends as soon as a registry announced on mDNS proves itself
                    while self.registry_url is None:
                        await self.registry_moved()
            if self.registry_url is None:
                await self._proving_round()  # an announcement heard at the last moment
            if self.registry_url is not None:
                with anyio.move_on_after(1.0):  # the registry may be down: mDNS alone then
                    await self.registry_synced.wait()
            if not self.registry_synced.is_set() and self.mdns:
                await anyio.sleep(max(0.0, started + browse - anyio.current_time()))
            await probe(self.directory, self._hop_for, only_unleased=False)

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        if self._used:
            raise RuntimeError("a MeshNode is single-use: create a new one to join again")
        self._used = True
        async with self._pool, anyio.create_task_group() as tg:
            if self.mdns:
                browser = MdnsBrowser(["agent", "registry", "tracer"], mesh=self.mesh, lan=self.lan)
                await tg.start(self._browse, browser)
            tg.start_soon(self._probe_forever)  # first: it opens its watch while the registry is proved
            await tg.start(self._poll_registry)  # a registry that proves itself at once is known on entry
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()
                self.directory.close()

    async def _browse(
        self, browser: MdnsBrowser, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        async with browser:
            task_status.started()
            await feed_mdns(browser, self.directory, self.keys, on_service=self._on_service)

    def _on_service(self, a: Announcement) -> None:
        """A signed announcement names a candidate; it is used once it proves itself (`_adopt_services`)."""
        host = a.reachable_host
        base = f"http://{f'[{host}]' if ':' in host else host}:{a.port}"
        if a.kind == "registry" and base not in self.found_registries:
            self.found_registries[base] = None
            self._services.wake.set()
        elif a.kind == "tracer" and base != self._services.found_tracer:
            self._services.found_tracer = base
            self._services.wake.set()

    async def _poll_registry(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        http = httpx2.AsyncClient(timeout=_PROOF_TIMEOUT, verify=client_context())
        async with http, anyio.create_task_group() as tg:
            await tg.start(self._adopt_services, http)
            task_status.started()
            await feed_registry(
                lambda: self.registry_url,
                self.directory,
                self.keys,
                interval=self.poll_interval,
                max_interval=self.max_poll_interval,
                synced=self.registry_synced,
                moved=self._poll_now,
                failed=self._registry_failed,
            )

    async def _poll_now(self) -> None:
        """Return when the registry should be polled at once: it moved, or a caller misses an agent."""
        async with anyio.create_task_group() as tg:

            async def wait(event: Callable[[], Awaitable[None]]) -> None:
                await event()
                tg.cancel_scope.cancel()

            tg.start_soon(wait, self.registry_moved)
            tg.start_soon(wait, self._poll_wanted.wait)
        if self._poll_wanted.is_set():
            self._poll_wanted = anyio.Event()

    async def _probe_forever(self) -> None:
        changes = self.directory.watch()
        with changes:
            while True:
                # A new announcement is probed at once, everything else every probe_interval; with a
                # registry, a newcomer's lease comes with the next listing: probed only if it does not.
                # While every instance holds a lease and none has failed, nothing needs a probe before
                # the first lease lapses.
                known = [i for i in self.directory.all() if i.verified]
                lapse = min(i.lease_until for i in known) - time.time() if known else 0.0
                if any(i.failures for i in known):
                    lapse = 0.0
                with anyio.move_on_after(max(self.probe_interval, lapse)):
                    await changes.receive()
                settling = 2 * self.poll_interval if self.registry_url is not None else 0.0
                await probe(self.directory, self._hop_for, settling=settling)

    async def _refresh(self, agent: str | None, tool: str) -> None:
        """Called on a miss: wait briefly for the agent to be announced, then ask its instances."""

        def known() -> bool:
            return any(i.name == agent if agent else tool in i.tools for i in self.directory.all())

        if not known():
            self._poll_wanted.set()  # the registry may know it already: ask now, not at the next poll

        with anyio.move_on_after(DISCOVERY_GRACE):
            changes = self.directory.watch()
            with changes:
                while not known():
                    await changes.receive()
        with anyio.move_on_after(2.0):
            await probe(
                self.directory,
                self._hop_for,
                only_unleased=False,
                only=lambda i: i.name == agent if agent is not None else True,
                urgent=True,
            )

    async def _adopt_services(
        self, http: httpx2.AsyncClient, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Prove the registry and tracer candidates every poll interval, at once when one appears or fails.

        While every candidate named has proved itself, a round has nothing to do (proofs are kept
        until a poll fails): it waits for what changes that, an announcement or a failed poll.
        """
        await self._adoption_round(http)
        task_status.started()
        while True:
            named = {*self._registry_candidates(), *self._tracer_candidates()}
            settled = named <= set(self._services.proven)
            with anyio.move_on_after(math.inf if settled else self.poll_interval):
                await self._services.wake.wait()
            await self._adoption_round(http)

    async def _adoption_round(self, http: httpx2.AsyncClient) -> None:
        """Use the first registry and the first tracer named that prove themselves; tell who waits if that changes."""
        services = self._services
        services.wake = anyio.Event()
        done, services.round_done = services.round_done, anyio.Event()
        named = {*self._registry_candidates(), *self._tracer_candidates()}
        for url in [u for u in services.proven if u not in named]:
            del services.proven[url]  # a URL no longer named is proved anew if it comes back
        registry = await self._first_proven(http, self._registry_candidates(), ("registry",))
        services.tracer = await self._first_proven(http, self._tracer_candidates(), ("tracer", "registry"))
        if registry != services.registry:
            services.registry = registry
            self._registry_moved.set()
            self._registry_moved = anyio.Event()
        done.set()

    def _registry_candidates(self) -> list[str]:
        """The registries given, else those announced on mDNS and this host's default port; the one in use first.

        Keeping the one in use first means a node stays with a replica while it answers and moves to
        the next only when it fails (its proof is dropped on a failed poll), never flapping between
        replicas that are all well.
        """
        named = self.explicit_registries or [*self.found_registries, DEFAULT_REGISTRY]
        current = self._services.registry
        return [current, *(u for u in named if u != current)] if current in named else list(dict.fromkeys(named))

    def _tracer_candidates(self) -> list[str]:
        found = self._services.given_tracer or self._services.found_tracer
        return [found] if found is not None else []

    async def _first_proven(
        self, http: httpx2.AsyncClient, candidates: list[str], kinds: tuple[str, ...]
    ) -> str | None:
        """The first candidate that proved (once, cached) to be one of `kinds` of this mesh; warns once per failure."""
        services = self._services
        for url in candidates:
            kind = services.proven.get(url)
            if kind is None:
                kind = await prove_service(http, url, self.keys, timeout=_PROOF_TIMEOUT)
                if kind is not None:
                    services.proven[url] = kind
                    services.warned.discard(url)
            if kind in kinds:
                return url
            if url not in services.warned and (url != DEFAULT_REGISTRY or await self._names_this_mesh(http, url)):
                services.warned.add(url)
                log.warning("%s at %s did not prove it holds mesh %s's secret; not used", kinds[0], url, self.mesh)
        return None

    async def _names_this_mesh(self, http: httpx2.AsyncClient, url: str) -> bool:
        """Whether the service at `url` claims this mesh (an unproven claim: worth a warning, never trust)."""
        try:
            response = await http.get(f"{url}/healthz", follow_redirects=False)
            health: object = response.json()
        except (httpx2.HTTPError, ValueError, RecursionError):
            return False
        return isinstance(health, dict) and health.get("mesh") == self.mesh  # pyright: ignore[reportUnknownMemberType]

    def _registry_failed(self, url: str) -> None:
        """A poll of `url` failed: prove it again before trusting it further."""
        self._services.proven.pop(url, None)
        self._services.wake.set()

    async def _proving_round(self) -> None:
        """Wait for a round of proofs that starts after this call."""
        done = self._services.round_done
        self._services.wake.set()
        await done.wait()

    def _hop_for(self, inst: Instance) -> HopClient:
        return self._pool.hop(inst)


_PROOF_TIMEOUT: Final = 1.0


@final
class _Services:
    """The registry and tracer candidates' proofs, and the ones adopted (`MeshNode._adopt_services`)."""

    def __init__(self, *, given_tracer: str | None) -> None:
        self.given_tracer = given_tracer
        self.found_tracer: str | None = None
        self.registry: str | None = None
        self.tracer: str | None = None
        self.proven: dict[str, str] = {}
        """URL -> the kind it proved to be; dropped when the URL fails or is no longer named."""
        self.warned: set[str] = set()
        self.wake = anyio.Event()
        self.round_done = anyio.Event()
