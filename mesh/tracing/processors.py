"""OpenTelemetry SDK span processors on the mesh's spans, and the processors this process adds.

An SDK `SpanProcessor` expects `on_start(span, parent_context)` with the live span and
`on_end(ReadableSpan)`. Once one is added to a `MeshTracerProvider`, `ProcessorSink` stands
between its spans and its sink: `on_start` gets the `MeshSpan` itself (the span API, writable,
with the read-only fields a `ReadableSpan` has), `on_end` a `ReadableSpan` made from it. Until a
processor is added none of this runs. `add_span_processor` is the public way in: it reaches the
provider this process's `ProcessTelemetry` made, whichever kind it is, and any made later.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, final

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor

from mesh.tracing.span_data import MeshSpan, SpanEvent, SpanSink

__all__ = ["ProcessorSink", "add_span_processor", "added_span_processors", "follow", "readable_span"]

log = logging.getLogger(__name__)


def add_span_processor(processor: SpanProcessor) -> None:
    """Hand every span this process's agent records to `processor` too (any OpenTelemetry SDK
    `SpanProcessor`: a `BatchSpanProcessor` with your exporter, an instrumentation library's).

    Call it before or after the agent starts; the processor is shut down with the agent's tracing.
    """
    with _lock:
        _added.append(processor)
        targets = list(_targets)
    for add in targets:
        add(processor)


def added_span_processors() -> list[SpanProcessor]:
    """The processors added so far, oldest first."""
    with _lock:
        return list(_added)


def follow(add: Callable[[SpanProcessor], None]) -> Callable[[], None]:
    """Call `add` with every processor added so far and with each one added later, until the
    returned function is called."""
    with _lock:
        _targets.append(add)
        added = list(_added)
    for processor in added:
        add(processor)

    def unfollow() -> None:
        with _lock:
            if add in _targets:
                _targets.remove(add)

    return unfollow


@final
class ProcessorSink:
    """Hands spans to SDK processors, then on to `then` (None: to no one else).

    `processors` is shared, not copied: a processor added to it later gets the spans that start
    after. A processor that raises is logged and skipped: telemetry never breaks a call.
    """

    def __init__(self, processors: Sequence[SpanProcessor], then: SpanSink | None) -> None:
        self.processors = processors
        self._then = then

    def on_start(self, span: MeshSpan, parent_context: Context | None) -> None:
        """Each processor's `on_start`, with the live span."""
        live: Any = span  # the span API and a ReadableSpan's fields: what processors read on start
        for processor in self.processors:
            try:
                processor.on_start(live, parent_context)
            except Exception:  # a user's processor: logged, never raised into the traced code
                log.exception("span processor %r failed on start", processor)

    def on_end(self, span: MeshSpan) -> None:
        """Each processor's `on_end`, with the span as a `ReadableSpan`; then `then`."""
        if self.processors:
            readable = readable_span(span)
            for processor in self.processors:
                try:
                    processor.on_end(readable)
                except Exception:  # a user's processor: logged, never raised into the traced code
                    log.exception("span processor %r failed on end", processor)
        if self._then is not None:
            self._then.on_end(span)


def readable_span(span: MeshSpan) -> ReadableSpan:
    """A finished `MeshSpan` as the SDK's `ReadableSpan`, drop counts included."""
    return _Ended(span)


@final
class _Ended(ReadableSpan):
    """A `ReadableSpan` of a finished `MeshSpan`: its fields are the span's own (it changes no more)."""

    def __init__(self, span: MeshSpan) -> None:
        super().__init__(
            name=span.name,
            context=span.get_span_context(),
            parent=span.parent,
            resource=span.resource,
            attributes=span.attributes,
            events=[_event(event) for event in span.events],
            links=span.links,
            kind=span.kind,
            status=span.status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )
        self._dropped = (span.dropped_attributes, span.dropped_events, span.dropped_links)

    @property
    def dropped_attributes(self) -> int:
        """Attributes dropped at the span's limit."""
        return self._dropped[0]

    @property
    def dropped_events(self) -> int:
        """Events dropped at the span's limit."""
        return self._dropped[1]

    @property
    def dropped_links(self) -> int:
        """Links dropped at the span's limit."""
        return self._dropped[2]


def _event(event: SpanEvent) -> Event:
    if not event.dropped_attributes:
        return Event(event.name, event.attributes, event.timestamp)
    attributes = BoundedAttributes(attributes=event.attributes, immutable=True)
    attributes.dropped = event.dropped_attributes  # the SDK's event reads its drop count from here
    return Event(event.name, attributes, event.timestamp)


_lock = threading.Lock()
_added: list[SpanProcessor] = []
_targets: list[Callable[[SpanProcessor], None]] = []
