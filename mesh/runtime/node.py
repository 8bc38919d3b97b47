"""`MeshNode`: one process's membership in a mesh, as a caller.

Owns the keys, the peer directory and the tasks that feed it (mDNS browsing, registry
polling, liveness probes), the registry and tracer locations found on the way, and the
`PeerPool` that calls peers. Agents add serving and announcing on top (`process`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Self, final

import anyio
import httpx2
from anyio import AsyncContextManagerMixin

from mesh.config import DEFAULT_REGISTRY_PORT, mesh_name
from mesh.discovery.feeds import feed_mdns, feed_registry, probe
from mesh.discovery.mdns import MdnsBrowser
from mesh.discovery.txt import Announcement
from mesh.errors import RegistryError
from mesh.identity import MeshKeys
from mesh.peers.directory import Instance, PeerDirectory
from mesh.peers.hop import HopClient
from mesh.peers.pool import PeerPool
from mesh.policy import Policy

__all__ = ["DISCOVERY_GRACE", "MeshNode"]

DISCOVERY_GRACE = 2.0
"""Seconds a call waits for an agent that is not known yet (mDNS answers take up to ~1.2 s)."""


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
        probe_interval: float = 2.0,
        default_timeout: float = 30.0,
    ) -> None:
        self.me = me
        self.mesh = mesh_name(mesh)
        self.metadata = dict(metadata or {})
        self.policy = policy or Policy.allow_all()
        self.keys = MeshKeys.load(self.mesh)
        self.directory = PeerDirectory()
        self.explicit_registry = registry or os.environ.get("MESH_REGISTRY") or None
        self.found_registry: str | None = None
        self.tracer_url: str | None = os.environ.get("MESH_TRACER") or None
        self.mdns = mdns
        self.lan = lan
        self.poll_interval = poll_interval
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
        )
        self._used = False

    @property
    def pool(self) -> PeerPool:
        """The caller: `await node.pool.call(agent, tool, args)`."""
        return self._pool

    @property
    def registry_url(self) -> str | None:
        """The registry's base URL: the one given, else the one found on mDNS."""
        return self.explicit_registry or self.found_registry

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
        """The registry's URL, waiting up to `timeout` for mDNS; RegistryError if none answers for this mesh."""
        with anyio.move_on_after(timeout):
            while self.registry_url is None:
                await self.registry_moved()
        if self.registry_url is None:
            raise RegistryError("no registry found for this mesh (start one with `mesh registry`, or pass --registry)")
        return self.registry_url

    async def registry_moved(self) -> None:
        """Return when a registry is found on mDNS, or the one found moves."""
        await self._registry_moved.wait()

    async def settle(self, *, browse: float = 0.6, timeout: float = 5.0) -> None:
        """Wait for a first picture of the mesh: mDNS answers, one registry poll, one probe round."""
        with anyio.move_on_after(timeout):
            await anyio.sleep(browse if self.mdns else 0)
            if self.registry_url is not None:
                with anyio.move_on_after(1.0):  # the registry may be down: mDNS alone then
                    await self.registry_synced.wait()
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
            tg.start_soon(self._poll_registry)
            tg.start_soon(self._probe_forever)
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
        host = a.reachable_host
        base = f"http://{f'[{host}]' if ':' in host else host}:{a.port}"
        if a.kind == "registry" and base != self.found_registry:
            self.found_registry = base
            self._registry_moved.set()
            self._registry_moved = anyio.Event()
        elif a.kind == "tracer" and not os.environ.get("MESH_TRACER"):
            self.tracer_url = base

    async def _poll_registry(self) -> None:
        if self.registry_url is None:
            await self._try_default_registry()
        await feed_registry(
            lambda: self.registry_url,
            self.directory,
            self.keys,
            interval=self.poll_interval,
            synced=self.registry_synced,
        )

    async def _probe_forever(self) -> None:
        changes = self.directory.watch()
        with changes:
            while True:
                # A new announcement is probed at once; everything else every probe_interval.
                with anyio.move_on_after(self.probe_interval):
                    await changes.receive()
                await probe(self.directory, self._hop_for)

    async def _refresh(self, agent: str | None, tool: str) -> None:
        """Called on a miss: wait briefly for the agent to be announced, then ask its instances."""

        def known() -> bool:
            return any(i.name == agent if agent else tool in i.tools for i in self.directory.all())

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

    async def _try_default_registry(self) -> None:
        """A registry on the documented default port of this host counts if it serves our mesh."""
        url = f"http://127.0.0.1:{DEFAULT_REGISTRY_PORT}"
        try:
            async with httpx2.AsyncClient(timeout=0.5) as http:
                health = (await http.get(f"{url}/healthz")).json()
        except (httpx2.HTTPError, ValueError):
            return
        if isinstance(health, dict) and health.get("mesh") == self.mesh and self.found_registry is None:  # pyright: ignore[reportUnknownMemberType]
            self.found_registry = url
            self._registry_moved.set()
            self._registry_moved = anyio.Event()

    def _hop_for(self, inst: Instance) -> HopClient:
        return self._pool.hop(inst)
