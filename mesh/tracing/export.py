"""Span export for agents: OTLP/HTTP to the mesh's tracer (or the user's backend), spooled to disk when it is away.

The endpoint is looked up at each export (the tracer may be found, lost and found again);
a batch that cannot be delivered goes to the spool and a drain thread retries it, oldest
first, so spans emitted equal spans stored once the tracer is back. The drain thread also
adopts the spools of the service's dead instances (`Spool.adopt`). It wakes every `drain_every`
only while batches wait; with the spool empty, only for the next adoption or when a batch is
spooled (an idle mesh pays no drain ticks). Requests carry the service's bearer token when one is
given: the caller gives one only for the mesh's own tracer, never for an endpoint of the user's
choosing, which gets the OTEL_EXPORTER_OTLP_* headers, compression, timeout and protocol instead
(`OtlpOptions`). This module is the one that talks to the tracer; it runs on the batcher's thread
and never on the event loop. `SpoolSpanExporter` is the same export as an SDK `SpanExporter`, for
the stock provider.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final, final

import httpx2
from google.protobuf.message import DecodeError
from google.rpc.status_pb2 import Status
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from mesh.tls import client_context
from mesh.tracing.otlp_options import PROTOBUF, OtlpOptions
from mesh.tracing.otlp_wire import encode_batch
from mesh.tracing.spool import Spool

__all__ = ["SPANS_AUDIENCE", "SpoolSpanExporter", "SpoolingExporter"]

log = logging.getLogger(__name__)

SPANS_AUDIENCE: Final = "spans"
"""The audience of the tokens that `POST /v1/traces` accepts (a tracer or registry of the mesh)."""

ADOPT_EVERY: Final = 30.0
"""Seconds between looks for the spools of the service's instances that have died."""


@final
class SpoolingExporter:
    """Delivers batches to `endpoint()` (an OTLP/HTTP `/v1/traces` URL) or spools them.

    `token`, when given, is called for each request and sent as `Authorization: Bearer`;
    `options`, when given, are the user's backend's (headers, compression, timeout, protocol);
    `transport` is for tests.
    """

    def __init__(
        self,
        endpoint: Callable[[], str | None],
        spool: Spool,
        *,
        token: Callable[[], str] | None = None,
        options: OtlpOptions | None = None,
        timeout: float = 2.0,
        drain_every: float = 1.0,
        transport: httpx2.BaseTransport | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._token = token
        self._options = options
        self.spool = spool
        self._http = httpx2.Client(
            timeout=options.timeout if options is not None else timeout,
            headers={"content-type": PROTOBUF},
            transport=transport,
            verify=client_context(),  # the process's one TLS context: no trust store parsed per agent start
        )
        self._wake = threading.Event()
        self._stopping = False
        self._resting = False  # the drain thread waits only for the next adoption: a spooled batch wakes it
        self._drain_every = drain_every
        self._refused = 0  # status of the last refusal logged, so a lasting one is logged once
        self.exported_spans = 0
        self.spooled_batches = 0
        self.dropped_spans = 0
        """Spans in batches the tracer refused for good (malformed, or not this service's)."""
        self.dropped_batches = 0
        self._adopt_at = 0.0
        self._adopt()  # what earlier instances left goes out first, by the drain thread
        self._drainer = threading.Thread(target=self._drain_loop, name="mesh-span-spool", daemon=True)
        self._drainer.start()

    def export(self, batch: bytes, spans: int) -> None:
        """Send one encoded batch of `spans` spans now, or keep it in the spool; never raises."""
        if self.spool.pending() == 0 and self._deliver(batch, spans):
            return
        try:
            self.spool.put(batch, spans)  # behind older batches, so order is kept
        except OSError:
            log.exception("cannot spool a batch of %d spans; they are lost", spans)
            self.dropped_spans += spans
            self.dropped_batches += 1
        else:
            self.spooled_batches += 1
            if self._resting:
                self._resting = False
                self._wake.set()

    def force_flush(self) -> None:
        """Try once more to deliver what the spool holds."""
        self._drain()

    def shutdown(self) -> None:
        """Stop the drain thread after a last attempt; what is left stays on disk for the next instance."""
        self._stopping = True
        self._wake.set()
        self._drainer.join(timeout=5)
        self._drain()
        self.spool.close()
        self._http.close()

    def stats(self) -> dict[str, int]:
        """Counters for health endpoints: exported spans, batches spooled and pending, spans and batches dropped."""
        return {
            "exported_spans": self.exported_spans,
            "spooled_batches": self.spooled_batches,
            "pending_batches": self.spool.pending(),
            "dropped_spans": self.dropped_spans + self.spool.dropped_spans,
            "dropped_batches": self.dropped_batches + self.spool.dropped_batches,
        }

    def _drain(self) -> None:
        self.spool.drain(self._deliver)

    def _deliver(self, batch: bytes, spans: int) -> bool:
        url = self._endpoint()
        if url is None:
            return False
        body = batch
        headers: dict[str, str] | None = None
        if self._options is not None:
            body, headers = self._options.request(batch)
        if self._token is not None:
            headers = {**(headers or {}), "authorization": f"Bearer {self._token()}"}
        try:
            response = self._http.post(url, content=body, headers=headers)
        except httpx2.HTTPError as exc:
            log.debug("tracer at %s unreachable: %s", url, exc)
            return False
        status = response.status_code
        if status == 200:
            self._refused = 0
            self.exported_spans += spans  # only what the tracer took: a refused batch is counted as dropped
            return True
        if status in (400, 403):
            # Retrying a batch the tracer cannot read, or will never take from this sender, would
            # block the spool forever.
            log.error("tracer at %s refused %d spans (HTTP %d); dropping them: %s", url, spans, status, _why(response))
            self.dropped_spans += spans
            self.dropped_batches += 1
            return True
        if status == 401 and self._refused != 401:  # kept: a token the tracer takes may come (clocks, secret)
            log.warning("tracer at %s refuses this service's token; spans wait in the spool: %s", url, _why(response))
        self._refused = status
        return False  # 401, 429, 5xx: keep it and try later

    def _adopt(self) -> None:
        self._adopt_at = time.monotonic() + ADOPT_EVERY
        try:
            if adopted := self.spool.adopt():
                log.info("took over %d span batches left by earlier instances", adopted)
        except OSError:
            log.exception("cannot take over the span spools of earlier instances")

    def _drain_loop(self) -> None:
        while not self._stopping:
            waiting = self._waiting()
            if waiting:
                self._wake.wait(self._drain_every)
            else:
                self._rest()
            self._wake.clear()
            if self._stopping:
                return
            if time.monotonic() >= self._adopt_at:
                self._adopt()
            if waiting:
                try:
                    self._drain()
                except OSError:
                    log.exception("span spool drain failed")

    def _rest(self) -> None:
        """Wait for the next adoption, or until a batch is spooled (or shutdown)."""
        self._resting = True
        if not self._waiting():  # looked at after the flag is up: a batch spooled before it would not wake us
            self._wake.wait(max(0.0, self._adopt_at - time.monotonic()))
        self._resting = False

    def _waiting(self) -> bool:
        """Whether batches wait in the spool (yes, if it cannot be read: then it is retried at the drain pace)."""
        try:
            return self.spool.pending() > 0
        except OSError:
            log.exception("cannot read the span spool")
            return True


def _why(response: httpx2.Response) -> str:
    """The one-line reason in a refusal: an OTLP `Status` message (the tracer answers so), or the text."""
    if response.headers.get("content-type", "").startswith("application/x-protobuf"):
        try:
            return Status.FromString(response.content).message[:200]
        except DecodeError:
            pass
    return " ".join(response.text.split())[:200]


@final
class SpoolSpanExporter(SpanExporter):
    """An SDK `SpanExporter` over a `SpoolingExporter`: each batch encoded by the mesh's encoder and
    delivered or spooled (the stock provider's `BatchSpanProcessor` hands it batches)."""

    def __init__(self, exporter: SpoolingExporter) -> None:
        self.exporter = exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Deliver or spool the batch: it is never lost here, so always SUCCESS."""
        if spans:
            self.exporter.export(encode_batch(spans), len(spans))
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Try the spool once more."""
        self.exporter.force_flush()
        return True

    def shutdown(self) -> None:
        """Stop the exporter (what is spooled waits on disk)."""
        self.exporter.shutdown()
