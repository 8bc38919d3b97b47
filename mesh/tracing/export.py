"""Span export for agents: OTLP/HTTP protobuf to the mesh's tracer, spooled to disk when it is away.

The endpoint is looked up at each export (the tracer may be found, lost and found again);
a batch that cannot be delivered goes to the spool and a drain thread retries it, oldest
first, so spans emitted equal spans stored once the tracer is back. This module is the one
that talks to the tracer; it runs on the batcher's thread and never on the event loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import final

import httpx2

from mesh.tracing.spool import Spool

__all__ = ["SpoolingExporter"]

log = logging.getLogger(__name__)


@final
class SpoolingExporter:
    """Delivers batches to `endpoint()` (an OTLP/HTTP `/v1/traces` URL) or spools them."""

    def __init__(
        self,
        endpoint: Callable[[], str | None],
        spool: Spool,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 2.0,
        drain_every: float = 1.0,
    ) -> None:
        self._endpoint = endpoint
        self.spool = spool
        self._http = httpx2.Client(
            timeout=timeout, headers={"content-type": "application/x-protobuf", **(headers or {})}
        )
        self._stop = threading.Event()
        self._drain_every = drain_every
        self.exported_spans = 0
        self.spooled_batches = 0
        self._drainer = threading.Thread(target=self._drain_loop, name="mesh-span-spool", daemon=True)
        self._drainer.start()

    def export(self, batch: bytes, spans: int) -> None:
        """Send one encoded batch of `spans` spans now, or keep it in the spool; never raises."""
        if self.spool.pending() == 0 and self._deliver(batch):
            self.exported_spans += spans
        else:
            self.spool.put(batch)  # behind older batches, so order is kept
            self.spooled_batches += 1

    def force_flush(self) -> None:
        """Try once more to deliver what the spool holds."""
        self.spool.drain(self._deliver)

    def shutdown(self) -> None:
        """Stop the drain thread after a last attempt; what is left stays on disk for next time."""
        self._stop.set()
        self.spool.drain(self._deliver)
        self._drainer.join(timeout=5)
        self._http.close()

    def stats(self) -> dict[str, int]:
        """Counters for health endpoints: exported spans, batches spooled, pending and dropped."""
        return {
            "exported_spans": self.exported_spans,
            "spooled_batches": self.spooled_batches,
            "pending_batches": self.spool.pending(),
            "dropped_batches": self.spool.dropped_batches,
        }

    def _deliver(self, batch: bytes) -> bool:
        url = self._endpoint()
        if url is None:
            return False
        try:
            response = self._http.post(url, content=batch)
        except httpx2.HTTPError as exc:
            log.debug("tracer at %s unreachable: %s", url, exc)
            return False
        if response.status_code == 200:
            return True
        if response.status_code == 400:
            log.error("tracer at %s rejected a batch as malformed; dropping it: %s", url, response.text[:200])
            self.spool.dropped_batches += 1
            return True  # retrying a batch the tracer cannot read would block the spool forever
        return False  # 429, 5xx: keep it and try later

    def _drain_loop(self) -> None:
        while not self._stop.wait(self._drain_every):
            try:
                self.spool.drain(self._deliver)
            except OSError:
                log.exception("span spool drain failed")
