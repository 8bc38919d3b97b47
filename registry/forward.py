"""Forwarding: stored trace batches sent on to another OTLP/HTTP endpoint (`mesh tracer --forward URL`).

Owns the forwarding backlog and the task that empties it. A batch is queued only once it is
stored here, and a full backlog drops it (counted) rather than pushing back, so a slow or absent
endpoint never holds up ingest. Sends retry on 429, 502, 503 and 504, honouring Retry-After but
waiting at most 5 s between attempts; any other refusal is final. The `SpanIntake` starts the task in
its task group and, on exit, gives it 5 s to drain. Bodies go out as the OTEL_EXPORTER_OTLP_*
variables say (`mesh.tracing.otlp_options`): with their headers (an API key for Grafana Tempo,
Honeycomb or an authenticated collector), gzip-compressed if asked, within their timeout, as OTLP
protobuf or JSON.

A target that proves it is a registry or tracer of this mesh (`mesh.discovery.proof`) gets an
admin token for `SPANS_AUDIENCE` with each batch, since the spans are other services'; any other
endpoint gets no mesh token. The proof is asked for again after a minute, and at once after the
target could not be reached or refused a batch for its token.
"""

from __future__ import annotations

import logging
import time
from typing import Final, Protocol, final

import anyio
import httpx2
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from mesh.discovery.proof import prove_service
from mesh.identity import MeshKeys, Principal, TokenSource
from mesh.tracing.export import SPANS_AUDIENCE
from mesh.tracing.otlp_options import OtlpOptions, otlp_options

__all__ = ["Forwarder"]

logger = logging.getLogger(__name__)


class _Counters(Protocol):
    """Where the outcomes are counted (`registry.span_intake.IntakeStats`)."""

    forwarded: int
    forward_failures: int


@final
class Forwarder:
    """Sends stored batches to `url` from a bounded backlog, counting spans delivered and batches lost.

    `keys` mint the admin token a proven target of this mesh gets; `options` (default: from the
    OTEL_EXPORTER_OTLP_* variables) say how bodies are sent.
    """

    def __init__(
        self,
        url: str,
        stats: _Counters,
        *,
        keys: MeshKeys,
        backlog: int = 256,
        attempts: int = 5,
        options: OtlpOptions | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self.options = options if options is not None else otlp_options()
        self.stats = stats
        self._keys = keys
        self._tokens = TokenSource(keys, Principal("tracer", "admin"))
        self._proven: str | None = None  # the kind of mesh service the target proved to be, if it did
        self._prove_at = 0.0  # monotonic time from which to ask for the proof again
        self._backlog = backlog
        self._attempts = attempts
        self._transport = transport
        self._queue: MemoryObjectSendStream[tuple[bytes, int]] | None = None
        self._drained = anyio.Event()

    @property
    def backlog(self) -> int:
        """Batches waiting to be sent (0 unless running)."""
        return self._queue.statistics().current_buffer_used if self._queue is not None else 0

    def start(self, tg: TaskGroup) -> None:
        """Open the backlog and send from it in a task of `tg` until `stop`."""
        queue, backlog = anyio.create_memory_object_stream[tuple[bytes, int]](self._backlog)
        self._queue, self._drained = queue, anyio.Event()
        tg.start_soon(self._forward_all, backlog, self._drained)

    async def stop(self) -> None:
        """Close the backlog, then wait (shielded, ≤ 5 s) for what is queued to be sent."""
        queue, self._queue = self._queue, None
        if queue is None:
            return
        queue.close()
        with anyio.move_on_after(5, shield=True):
            await self._drained.wait()

    def enqueue(self, body: bytes, spans: int) -> None:
        """Queue a stored batch (OTLP protobuf) of `spans` spans; if full or not running, count it as lost."""
        try:
            if self._queue is None:
                raise anyio.ClosedResourceError
            self._queue.send_nowait((body, spans))
        except (anyio.WouldBlock, anyio.ClosedResourceError):
            self.stats.forward_failures += 1

    async def _forward_all(self, backlog: MemoryObjectReceiveStream[tuple[bytes, int]], drained: anyio.Event) -> None:
        with backlog:
            try:
                async with httpx2.AsyncClient(timeout=self.options.timeout, transport=self._transport) as client:
                    async for body, spans in backlog:
                        try:
                            delivered = await self._forward(client, body)
                        except Exception:  # task root: one bad batch must not stop forwarding
                            logger.exception("forwarding a batch of %d spans failed", spans)
                            delivered = False
                        if delivered:
                            self.stats.forwarded += spans
                        else:
                            self.stats.forward_failures += 1
            finally:
                drained.set()

    async def _forward(self, client: httpx2.AsyncClient, body: bytes) -> bool:
        url = self.url
        delay = 0.2
        if self.options.rewrites:  # gzip or JSON: CPU work kept off the event loop that ingests
            content, sent_headers = await anyio.to_thread.run_sync(self.options.request, body)
        else:
            content, sent_headers = self.options.request(body)
        for attempt in range(1, self._attempts + 1):
            headers = dict(sent_headers)
            if await self._proven_target(client):
                headers["authorization"] = f"Bearer {self._tokens.token(SPANS_AUDIENCE)}"
            try:
                with anyio.fail_after(self.options.timeout + 5):  # the client's timeout is per read, not overall
                    response = await client.post(url, content=content, headers=headers)
            except (httpx2.HTTPError, TimeoutError) as exc:
                logger.debug("forward attempt %d to %s failed: %s", attempt, url, exc)
                self._prove_at = 0.0  # perhaps another service is there when it is back
            else:
                if response.status_code < 300:
                    return True
                if response.status_code in (401, 403) and attempt == 1:
                    self._prove_at = 0.0  # perhaps a tracer of this mesh that was not up when last asked
                    continue
                if response.status_code not in (429, 502, 503, 504):
                    logger.warning("forward endpoint %s refused a batch: HTTP %d", url, response.status_code)
                    return False
                delay = max(delay, _retry_after(response.headers.get("retry-after")))
            if attempt < self._attempts:
                await anyio.sleep(min(delay, 5.0))
                delay = min(delay * 2, 5.0)
        logger.warning("giving up forwarding a batch to %s after %d attempts", url, self._attempts)
        return False

    async def _proven_target(self, client: httpx2.AsyncClient) -> bool:
        """True when the target lately proved it is a registry or tracer of this mesh (asking it when due)."""
        if time.monotonic() >= self._prove_at:
            self._proven = await prove_service(client, _base_of(self.url), self._keys)
            self._prove_at = time.monotonic() + _PROOF_LIFETIME
        return self._proven is not None


_PROOF_LIFETIME: Final = 60.0
"""Seconds a target's proof stands before it is asked for again (another process may take its port)."""


def _base_of(url: str) -> str:
    """Where a target's `/healthz` is: its OTLP URL without the `/v1/traces` path."""
    return url.rstrip("/").removesuffix("/v1/traces")


def _retry_after(value: str | None) -> float:
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0
