"""The peer directory: every instance this process knows, merged from mDNS and the registry.

mDNS is a hint and the registry a lease; neither is liveness on its own (a kill -9'd
agent's mDNS record lingers for minutes). An instance is healthy while it is verified and
either its lease holds or its last probe or call succeeded, and no recent failure opened
its circuit. Owns that state and its change events; it does no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, final

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["Instance", "PeerDirectory", "Source"]

Source = Literal["mdns", "registry"]

PROBE_FRESH = 6.0
"""Seconds a successful probe or call keeps an instance healthy without a lease."""


@dataclass(frozen=True, slots=True)
class Instance:
    """One running copy of an agent, as far as this process knows."""

    name: str
    instance: str
    url: str
    tools: tuple[str, ...] = ()
    tool_info: tuple[Mapping[str, Any], ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict[str, Any])
    sources: frozenset[Source] = frozenset()
    verified: bool = True
    reason: str | None = None
    auth: bool = True
    lease_until: float = 0.0
    last_ok: float = 0.0
    down_until: float = 0.0
    failures: int = 0
    seen: float = 0.0
    """When this process first heard of the instance (set by the directory)."""

    @property
    def key(self) -> tuple[str, str]:
        """(name, instance): unique within a mesh."""
        return (self.name, self.instance)

    def healthy(self, now: float | None = None) -> bool:
        """Verified, not circuit-broken, and vouched for by a lease or a recent success."""
        now = time.time() if now is None else now
        if not self.verified or self.failures:
            return False  # after a failure, only a success (a probe) brings an instance back
        return now < self.lease_until or now - self.last_ok < PROBE_FRESH


@final
class PeerDirectory:
    """Instances by (name, instance), with the sources that reported them; broadcasts changes."""

    def __init__(self) -> None:
        self._instances: dict[tuple[str, str], Instance] = {}
        self._watchers: list[MemoryObjectSendStream[str]] = []

    def __len__(self) -> int:
        return len(self._instances)

    def all(self) -> list[Instance]:
        """Every instance, healthy or not, sorted by name then instance."""
        return sorted(self._instances.values(), key=lambda i: i.key)

    def get(self, name: str, instance: str) -> Instance | None:
        """One instance, if known."""
        return self._instances.get((name, instance))

    def instances(self, name: str, *, now: float | None = None) -> list[Instance]:
        """The healthy instances of agent `name`."""
        return [i for i in self._instances.values() if i.name == name and i.healthy(now)]

    def offering(self, tool: str, *, now: float | None = None) -> list[Instance]:
        """The healthy instances of any agent that serves `tool`."""
        return [i for i in self._instances.values() if tool in i.tools and i.healthy(now)]

    def metadata_of(self, name: str) -> Mapping[str, Any] | None:
        """Governance metadata of agent `name` (from any instance), if known."""
        for inst in self._instances.values():
            if inst.name == name and inst.verified:
                return inst.metadata
        return None

    def report(self, source: Source, found: Instance) -> Instance:
        """Merge what `source` says about an instance; returns the merged view."""
        old = self._instances.get(found.key)
        if old is None:
            merged = replace(found, sources=frozenset({source}), seen=time.time())
        else:
            merged = replace(
                old,
                url=found.url or old.url,
                tools=found.tools or old.tools,
                tool_info=found.tool_info or old.tool_info,
                metadata=found.metadata or old.metadata,
                sources=old.sources | {source},
                verified=found.verified if source == "mdns" else old.verified or found.verified,
                reason=found.reason if source == "mdns" else old.reason,
                auth=found.auth,
                lease_until=max(old.lease_until, found.lease_until),
                last_ok=max(old.last_ok, found.last_ok),
            )
        self._instances[found.key] = merged
        if old is None or _visible(old) != _visible(merged):
            self._notify(found.name)
        return merged

    def withdraw(self, source: Source, name: str, instance: str) -> None:
        """`source` no longer reports the instance (goodbye, deregistration, lease gone)."""
        old = self._instances.get((name, instance))
        if old is None:
            return
        left = old.sources - {source}
        if not left:
            del self._instances[old.key]
        else:
            self._instances[old.key] = replace(
                old, sources=left, lease_until=0.0 if source == "registry" else old.lease_until
            )
        self._notify(name)

    def sync(self, source: Source, present: Iterable[Instance]) -> None:
        """Replace everything `source` reports with `present` (a full listing from the registry)."""
        seen: set[tuple[str, str]] = set()
        for found in present:
            self.report(source, found)
            seen.add(found.key)
        for key, inst in list(self._instances.items()):
            if source in inst.sources and key not in seen:
                self.withdraw(source, *key)

    def extend_leases(self, source: Source, until: float) -> None:
        """Every instance `source` reports is leased at least `until` (a registry's unchanged listing)."""
        for key, inst in self._instances.items():
            if source in inst.sources and inst.lease_until < until:
                self._instances[key] = replace(inst, lease_until=until)  # same keys: iterating stays valid

    def succeeded(self, name: str, instance: str, *, now: float | None = None) -> None:
        """A probe or call to the instance worked: it is alive, and its circuit closes."""
        old = self._instances.get((name, instance))
        if old is not None:
            was = old.healthy(now)
            self._instances[old.key] = replace(
                old, last_ok=time.time() if now is None else now, failures=0, down_until=0.0
            )
            if not was:
                self._notify(name)

    def failed(self, name: str, instance: str, *, down_for: float = 1.0, now: float | None = None) -> None:
        """The instance could not be reached: out of rotation until a probe succeeds, probed after `down_for` s."""
        old = self._instances.get((name, instance))
        if old is not None:
            now = time.time() if now is None else now
            self._instances[old.key] = replace(
                old, failures=old.failures + 1, down_until=now + down_for * min(4, old.failures + 1), last_ok=0.0
            )
            self._notify(name)

    def watch(self) -> MemoryObjectReceiveStream[str]:
        """A stream of agent names whose instances changed (for tools/list_changed)."""
        send, receive = anyio.create_memory_object_stream[str](256)
        self._watchers.append(send)
        return receive

    def _notify(self, name: str) -> None:
        alive: list[MemoryObjectSendStream[str]] = []
        for watcher in self._watchers:
            try:
                watcher.send_nowait(name)
                alive.append(watcher)
            except anyio.WouldBlock:
                alive.append(watcher)  # a slow watcher misses a beat; the next change re-syncs it
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                watcher.close()  # its reader is gone
        self._watchers = alive

    def close(self) -> None:
        """End every watch stream (their readers see the end of the stream)."""
        for watcher in self._watchers:
            watcher.close()
        self._watchers = []


def _visible(inst: Instance) -> tuple[bool, tuple[str, ...], str]:
    return (inst.verified, inst.tools, inst.url)
