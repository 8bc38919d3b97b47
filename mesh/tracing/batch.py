"""Finished spans, encoded and shipped in batches by one thread, a little at a time.

`on_end` is a deque append (atomic under the GIL, no lock). While spans come, every `TICK` the
thread encodes what has queued since its last look into the request being built, and sends the
request once it holds `max_batch` spans or is `schedule_delay` old. Encoding where a span ends would
put it on every traced call, and encoding a whole batch at once holds the GIL long enough to stall
the event loop: slices keep both costs small. The tick is not shorter because each wake-up costs
CPU, and a request goes out once a second, not more often, because each costs the exporter, the
tracer's HTTP server and its store a fixed share (docs/performance-log.md, "The span batcher");
OpenTelemetry's default is five seconds, but a decision trace should be there by the time someone
looks. With nothing queued or being built the thread rests until the next span wakes it (then it
ticks again), so a process that traces nothing pays no wake-ups: an idle mesh would otherwise pay
ten a second for each of its agents. A full queue drops the newest span and counts it; the
count is in `stats()` (health, `mesh ls`), never silent. OTEL_BSP_SCHEDULE_DELAY,
OTEL_BSP_MAX_QUEUE_SIZE and OTEL_BSP_MAX_EXPORT_BATCH_SIZE override the mesh's defaults.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from typing import Protocol, final

from mesh.tracing.otlp_wire import BatchBuilder
from mesh.tracing.span_data import MeshSpan

__all__ = ["SpanBatcher", "SpanExport"]

log = logging.getLogger(__name__)

TICK = 0.1
"""Seconds between the thread's looks at the queue while spans come (less when the schedule delay is shorter)."""
NICENESS = 10
"""How much lower than its process's the thread's CPU priority is, on Linux (where a thread has its
own): when both cores are busy, an event loop serving a call goes before encoding (the tail it
saves is in docs/performance-log.md, "The span batcher")."""


class SpanExport(Protocol):
    """What the batcher hands encoded requests to (the spooling exporter)."""

    def export(self, batch: bytes, spans: int) -> None: ...

    def shutdown(self) -> None: ...


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        log.warning("%s=%r is not an integer; using %d", name, raw, default)
        return default
    return value if value > 0 else default


@final
class SpanBatcher:
    """The span sink of a `MeshTracerProvider`: queue, encode, ship; counts what it must drop."""

    def __init__(
        self,
        exporter: SpanExport,
        *,
        schedule_delay: float = 1.0,
        max_queue: int = 8192,
        max_batch: int = 512,
    ) -> None:
        self.exporter = exporter
        self.schedule_delay = _env_int("OTEL_BSP_SCHEDULE_DELAY", int(schedule_delay * 1000)) / 1000
        self.max_queue = _env_int("OTEL_BSP_MAX_QUEUE_SIZE", max_queue)
        self.max_batch = min(_env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", max_batch), self.max_queue)
        self.dropped_spans = 0
        self._queue: deque[MeshSpan] = deque()
        self._wake = threading.Event()
        self._resting = False  # the thread waits for a span, not for a tick: the next `on_end` wakes it
        self._stopping = False
        self._lock = threading.Lock()  # one encoder at a time: the thread, or a flush
        self._tick = min(TICK, self.schedule_delay)
        self._builder = BatchBuilder()
        self._opened = 0.0  # monotonic time the request being built got its first span
        self._thread = threading.Thread(target=self._run, name="mesh-span-batcher", daemon=True)
        self._thread.start()

    def on_end(self, span: MeshSpan) -> None:
        """Queue a finished span (called on whatever thread ended it)."""
        queue = self._queue
        if len(queue) >= self.max_queue or self._stopping:
            self.dropped_spans += 1
            return
        queue.append(span)
        if self._resting or len(queue) == self.max_batch:
            self._resting = False  # one wake-up for the spans that end before the thread runs
            self._wake.set()

    def force_flush(self) -> None:
        """Encode and export everything queued, now."""
        with self._lock:
            self._encode(len(self._queue))
            self._ship()

    def shutdown(self) -> None:
        """Stop taking spans, export what is queued, stop the thread and the exporter."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=10)
        self.force_flush()
        self.exporter.shutdown()

    def stats(self) -> dict[str, int]:
        """Spans dropped (queue full, or unencodable), and spans waiting to be sent."""
        return {"dropped_spans": self.dropped_spans, "queued_spans": len(self._queue) + self._builder.spans}

    def _run(self) -> None:
        _lower_priority(NICENESS)
        while not self._stopping:
            if not self._queue and not self._builder.spans:
                self._rest()
                continue  # then a tick: the first slice takes what ends with the span that woke it
            self._wake.wait(self._tick)
            self._wake.clear()
            with self._lock:
                self._encode(len(self._queue))  # not what arrives meanwhile: that is the next slice
                if self._builder.spans and time.monotonic() - self._opened >= self.schedule_delay:
                    self._ship()

    def _rest(self) -> None:
        """Wait until a span is queued (or shutdown): nothing to encode or send until then."""
        self._resting = True
        if not self._queue:  # looked at after the flag is up: a span queued before it would not wake us
            self._wake.wait()
        self._resting = False
        self._wake.clear()

    def _encode(self, count: int) -> None:
        queue, builder = self._queue, self._builder
        for _ in range(min(count, len(queue))):
            if not builder.spans:
                self._opened = time.monotonic()
            span = queue.popleft()
            try:
                builder.add(span)
            except Exception:  # an encoder bug must not stop the thread; the span is counted as lost
                log.exception("could not encode span %r; dropped", span)
                self.dropped_spans += 1
            if builder.spans >= self.max_batch:
                self._ship()

    def _ship(self) -> None:
        spans = self._builder.spans
        if not spans:
            return
        batch = self._builder.build()
        try:
            self.exporter.export(batch, spans)
        except Exception:  # the exporter never raises by contract; a bug there must not kill the thread
            log.exception("span export failed; %d spans lost", spans)
            self.dropped_spans += spans


def _lower_priority(by: int) -> None:
    """Lower the calling thread's CPU priority (raise its niceness) by `by`, on Linux only: there a
    thread id names one thread, elsewhere it could name another process. Failing leaves it as is."""
    if sys.platform != "linux":
        return
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, min(os.getpriority(os.PRIO_PROCESS, thread) + by, 19))
    except OSError as exc:
        log.debug("the span batcher keeps its priority: %s", exc)
