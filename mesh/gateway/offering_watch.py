"""Telling the gateway's client when what the agents offer besides tools has changed.

Owns `OfferingWatch`. Once the client has listed resources or prompts, it keeps one
`subscriptions/listen` stream (2026-07-28, SEP-2575) open to the instance each agent's offering is
asked of, for `notifications/resources/list_changed` and `prompts/list_changed` (an adopted server's
own, which its adapter passes on); such an event makes the gateway forget what that instance offered.
On each event, and each time agents join or leave, it compares what the mesh offers with what the
client last saw, and says which listing changed. Listing and naming are `mesh.gateway.resources`'.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, final

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from mesh.errors import MeshError
from mesh.gateway.catalog import Listing
from mesh.gateway.resources import MeshOfferings
from mesh.peers.directory import Instance

__all__ = ["Announce", "OfferingWatch"]

log = logging.getLogger(__name__)

Announce = Callable[[Listing], Awaitable[None]]
"""Tells the client that one of its listings changed."""

_RECHECK: Final = 2.0  # seconds between looks when nothing is heard: an agent's health also lapses silently
_FIRST_RETRY: Final = 1.0  # seconds before listening again to an agent whose stream ended
_MAX_RETRY: Final = 60.0
_ACKNOWLEDGED: Final = "notifications/subscriptions/acknowledged"
_CHANGED: Final[Mapping[str, Listing]] = {
    "notifications/resources/list_changed": "resources",
    "notifications/prompts/list_changed": "prompts",
}
_WANTED: Final = {"resourcesListChanged": True, "promptsListChanged": True}


@final
class OfferingWatch:
    """Follows the offerings of the agents `offerings` lists, for as long as `follow` runs."""

    def __init__(self, offerings: MeshOfferings) -> None:
        self._offerings = offerings
        self._wake = anyio.Event()
        self.listening: dict[tuple[str, str], anyio.CancelScope] = {}
        """The instances a listen stream is kept open to, by (agent, instance)."""

    async def follow(self, announce: Announce) -> None:
        """Until cancelled, `announce` each listing the client has seen whenever it changes."""
        offerings = self._offerings
        await offerings.listed.wait()  # nothing to correct before the client's first listing
        changes = offerings.node.directory.watch()
        with changes:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._wake_on, changes)
                while True:
                    self._wake = anyio.Event()  # what happens from here on wakes the next round
                    self._listen_to_chosen(tg)
                    try:
                        await self._compare(announce)
                    except Exception:  # a task root: one failed look must not stop the following
                        log.exception("could not compare the resource and prompt listings")
                    with anyio.move_on_after(_RECHECK):
                        await self._wake.wait()

    async def _compare(self, announce: Announce) -> None:
        offerings = self._offerings
        now = await offerings.offerings(refresh=False)
        for listing in ("resources", "prompts"):
            shown = offerings.shown.get(listing)
            current = now.fingerprint(listing)
            if shown is not None and shown != current:
                offerings.shown[listing] = current
                log.info("the mesh's %s changed: telling the client", listing)
                await announce(listing)

    def _listen_to_chosen(self, tg: TaskGroup) -> None:
        chosen = {inst.key: inst for inst in self._offerings.chosen().values()}
        for key in [key for key in self.listening if key not in chosen]:
            self.listening.pop(key).cancel()
        for key, inst in chosen.items():
            if key not in self.listening:
                scope = anyio.CancelScope()
                self.listening[key] = scope
                tg.start_soon(self._listen, inst, scope)

    async def _listen(self, inst: Instance, scope: anyio.CancelScope) -> None:
        """Keep a listen stream open to `inst`; each change it reports makes its offering be asked again."""
        offerings = self._offerings
        delay = _FIRST_RETRY
        with scope:
            while True:
                acknowledged = False

                async def heard(method: str, params: Mapping[str, Any]) -> None:
                    nonlocal acknowledged
                    del params
                    if method == _ACKNOWLEDGED:
                        acknowledged = True
                    elif method in _CHANGED:
                        offerings.cache.forget(inst.key)
                        self._wake.set()

                hop = offerings.node.pool.hop(inst)
                try:
                    await hop.request(
                        "subscriptions/listen",
                        {"notifications": _WANTED, "_meta": hop.envelope()},
                        timeout=None,
                        on_notice=heard,
                    )
                except MeshError as exc:
                    log.debug("listening to %s (%s) stopped: %s", inst.name, inst.instance, exc)
                if acknowledged:  # it was heard, then lost: whatever changed meanwhile, ask again
                    delay = _FIRST_RETRY
                    offerings.cache.forget(inst.key)
                    self._wake.set()
                await anyio.sleep(delay)
                delay = min(delay * 2, _MAX_RETRY)

    async def _wake_on(self, changes: MemoryObjectReceiveStream[str]) -> None:
        async for _ in changes:
            self._wake.set()
