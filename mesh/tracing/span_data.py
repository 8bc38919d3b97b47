"""The mesh's recording span: the OpenTelemetry span API over plain slots and dicts.

`MeshSpan` keeps what the SDK's span keeps, cleaned by the same rules (`BoundedAttributes` only for
values that need it, the span limits), without a lock or an object per event, and hands itself to
a `SpanSink` when it ends. What it records is what the SDK records, field for field: a property
test encodes both and compares them (tests/unit/test_spans.py).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, TypeAlias, cast, final

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes, AttributeValue

if TYPE_CHECKING:
    from mesh.tracing.lean_provider import MeshTracer

__all__ = [
    "RECORD_EXCEPTION",
    "SET_STATUS_ON_EXCEPTION",
    "UNSET_STATUS",
    "AttributeMaker",
    "DeferredEvent",
    "MeshSpan",
    "SpanEvent",
    "SpanSink",
    "clean_attributes",
]

log = logging.getLogger(__name__)

_SIMPLE = frozenset({str, bool, int, float})
_SEQUENCES = (list, tuple)
UNSET_STATUS: Final = Status(StatusCode.UNSET)
"""The status every span starts with (one object, so a reader can test it by identity)."""
RECORD_EXCEPTION: Final = 1
"""`MeshSpan`'s exit flag: an exception leaving `with span:` is recorded as an `exception` event."""
SET_STATUS_ON_EXCEPTION: Final = 2
"""`MeshSpan`'s exit flag: an exception leaving `with span:` sets the status to ERROR."""


class SpanSink(Protocol):
    """Where a span goes when it ends (the batcher); called on the thread that ends it."""

    def on_end(self, span: MeshSpan, /) -> None: ...


class SpanEvent(NamedTuple):
    """One span event, as the OTLP encoder reads it."""

    name: str
    attributes: Mapping[str, AttributeValue]
    timestamp: int
    dropped_attributes: int = 0


AttributeMaker: TypeAlias = Callable[..., Mapping[str, AttributeValue]]
"""Builds a deferred event's attributes from the arguments it was recorded with."""
DeferredEvent: TypeAlias = tuple[str, AttributeMaker, tuple[Any, ...], int]
"""An event recorded as (name, maker, its arguments, time): made into a `SpanEvent` when read."""


@final
class MeshSpan(trace.Span):
    """A recording span: plain fields, no lock (a span belongs to the task that started it)."""

    __slots__ = (
        "_context",
        "_deferred",
        "_events",
        "_limits",
        "_sink",
        "attributes",
        "dropped_attributes",
        "dropped_events",
        "dropped_links",
        "end_time",
        "exit_flags",
        "instrumentation_scope",
        "kind",
        "links",
        "name",
        "parent",
        "resource",
        "start_time",
        "status",
    )
    exit_flags: int
    """What `with span:` does with an exception leaving it; set only when not both flags (absent: both)."""

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        start_time: int,
        tracer: MeshTracer,
        sink: SpanSink,
    ) -> None:
        self.name = name
        self._context = context
        self.parent = parent
        self.kind = kind
        self.start_time = start_time
        self.end_time: int | None = None
        self.resource: Resource = tracer.resource
        self.instrumentation_scope = tracer.scope
        self._sink = sink
        self._limits = tracer.limits
        self.attributes: dict[str, AttributeValue] = {}
        self._events: list[SpanEvent | DeferredEvent] = []
        self._deferred = 0  # how many of them are still to be made
        self.links: list[Link] = []
        self.status = UNSET_STATUS
        self.dropped_attributes = 0
        self.dropped_events = 0
        self.dropped_links = 0

    def get_span_context(self) -> SpanContext:
        """This span's ids."""
        return self._context

    @property
    def context(self) -> SpanContext:
        """This span's ids, where the SDK's `ReadableSpan` has them (for span processors' `on_start`)."""
        return self._context

    def is_recording(self) -> bool:
        """True until the span ends."""
        return self.end_time is None

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Set one attribute (cleaned as the SDK cleans it; the oldest goes when the limit is reached)."""
        if self.end_time is not None:
            log.warning("Tried calling set_attribute on an ended span.")
            return
        limits, attributes = self._limits, self.attributes
        if type(value) in _SIMPLE and limits.max_attribute_length is None:  # nothing to clean: inlined
            limit = limits.max_span_attributes
            if key in attributes:
                del attributes[key]  # set again, it is the newest: the last to go at the limit, as in the SDK
                attributes[key] = value
                return
            if limit is None or len(attributes) < limit:
                attributes[key] = value
                return
        self.dropped_attributes += _put(attributes, key, value, limits.max_span_attributes, limits)

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        """Set several attributes."""
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        """Add an event; past the event limit it is counted as dropped."""
        if self.end_time is not None:
            log.warning("Tried calling add_event on an ended span.")
            return
        limit = self._limits.max_events
        if limit is not None and len(self._events) >= limit:
            self._drop_oldest_event()
        clean, dropped = (
            clean_attributes(attributes, self._limits.max_event_attributes, self._limits) if attributes else ({}, 0)
        )
        self._events.append(SpanEvent(name, clean, timestamp or time.time_ns(), dropped))

    def add_deferred_event(self, name: str, make: AttributeMaker, args: tuple[Any, ...]) -> None:
        """Add an event now whose attributes `make(*args)` builds, and the span's limits clean, when
        they are first read: on the exporter's thread, off the call path. `args` must not change
        after the call. What is recorded is what `add_event(name, make(*args))` would record.
        """
        if self.end_time is not None:
            log.warning("Tried calling add_event on an ended span.")
            return
        events = self._events
        limit = self._limits.max_events
        if limit is not None and len(events) >= limit:
            self._drop_oldest_event()
        events.append((name, make, args, time.time_ns()))
        self._deferred += 1

    @property
    def events(self) -> list[SpanEvent]:
        """The span's events, oldest first (deferred ones are made here, once)."""
        events = self._events
        if self._deferred:
            for i, event in enumerate(events):
                if type(event) is tuple:
                    events[i] = self.make_event(event)
            self._deferred = 0
        return cast("list[SpanEvent]", events)

    @property
    def event_records(self) -> Sequence[SpanEvent | DeferredEvent]:
        """The events as recorded, oldest first: a deferred one is still a plain `DeferredEvent` tuple
        (`type(record) is tuple`), for a reader that can use its arguments without making it."""
        return self._events

    @property
    def limits(self) -> SpanLimits:
        """The limits this span's attributes and events are cleaned under."""
        return self._limits

    def make_event(self, record: DeferredEvent) -> SpanEvent:
        """The event a deferred record stands for: made, and cleaned under the span's limits."""
        name, make, args, timestamp = record
        limits = self._limits
        clean, dropped = clean_attributes(make(*args), limits.max_event_attributes, limits)
        return SpanEvent(name, clean, timestamp, dropped)

    def _drop_oldest_event(self) -> None:
        if type(self._events.pop(0)) is tuple:
            self._deferred -= 1
        self.dropped_events += 1

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        """Link another span (ignored for an invalid context without attributes or trace state, as in the SDK)."""
        if not (context and (context.is_valid or attributes or context.trace_state)):
            return
        if self.end_time is not None:
            log.warning("Tried calling _add_link on an ended span.")
            return
        limit = self._limits.max_links
        if limit is not None and len(self.links) >= limit:
            self.links.pop(0)
            self.dropped_links += 1
        self.links.append(
            Link(context, clean_attributes(attributes or {}, self._limits.max_link_attributes, self._limits)[0])
        )

    def update_name(self, name: str) -> None:
        """Rename the span."""
        if self.end_time is None:
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """Set the status; OK is final, UNSET is ignored and a description only goes with ERROR (as in the SDK)."""
        if self.end_time is not None:
            log.warning("Tried calling set_status on an ended span.")
            return
        if self.status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is StatusCode.UNSET:
                return
            if description is not None:
                log.warning("Description %s ignored. Use either `Status` or `(StatusCode, Description)`", description)
            self.status = status
        elif status is not StatusCode.UNSET:
            self.status = Status(status, description if status is StatusCode.ERROR else None)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """Record an exception as an `exception` event, with the SDK's attribute names."""
        kind = type(exception)
        module = kind.__module__
        name = f"{module}.{kind.__qualname__}" if module and module != "builtins" else kind.__qualname__
        details: dict[str, AttributeValue] = {
            "exception.type": name,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            details.update(attributes)
        self.add_event("exception", details, timestamp)

    def end(self, end_time: int | None = None) -> None:
        """Finish the span and hand it to the sink."""
        if self.end_time is not None:
            log.warning("Calling end() on an ended span.")
            return
        self.end_time = end_time if end_time is not None else time.time_ns()
        self._sink.on_end(self)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        """End the span as `with tracer.start_span(...)` leaves it: an exception, cancellation included,
        is recorded and sets ERROR first, as the `start_span` flags say (as in the SDK)."""
        if exc is not None and self.end_time is None:
            flags = getattr(self, "exit_flags", RECORD_EXCEPTION | SET_STATUS_ON_EXCEPTION)  # set when not both
            if flags & RECORD_EXCEPTION:
                self.record_exception(exc, escaped=True)
            if flags & SET_STATUS_ON_EXCEPTION:
                self.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        self.end()

    def __repr__(self) -> str:
        return f"MeshSpan(name={self.name!r}, context={self._context!r})"


def _put(target: dict[str, AttributeValue], key: str, value: Any, limit: int | None, limits: SpanLimits) -> int:
    """Store one attribute as BoundedAttributes would; returns how many were dropped to make room."""
    kind = type(value)
    if kind in _SEQUENCES and limits.max_attribute_length is None and _SIMPLE.issuperset(map(type, value)):
        value = tuple(value)
    elif kind not in _SIMPLE or (limits.max_attribute_length is not None and kind is str):
        cleaned = BoundedAttributes(attributes={key: value}, immutable=False, max_value_len=limits.max_attribute_length)
        if key not in cleaned:
            return 0
        value = cleaned[key]
    if key in target:
        del target[key]  # set again, it is the newest: the last to go at the limit
        target[key] = value
        return 0
    if limit is None or len(target) < limit:
        target[key] = value
        return 0
    if limit == 0:
        return 1
    del target[next(iter(target))]
    target[key] = value
    return 1


def clean_attributes(
    attributes: Mapping[str, Any], limit: int | None, limits: SpanLimits
) -> tuple[dict[str, AttributeValue], int]:
    """A cleaned copy of `attributes` and how many were dropped; one tight loop when nothing needs cleaning."""
    if limits.max_attribute_length is None and (limit is None or len(attributes) <= limit):
        if _SIMPLE.issuperset(map(type, attributes.values())):
            return dict(attributes), 0
        out: dict[str, AttributeValue] = {}
        for key, value in attributes.items():
            kind = type(value)
            if kind in _SIMPLE:
                out[key] = value
            elif kind in _SEQUENCES and _SIMPLE.issuperset(map(type, value)):
                out[key] = tuple(value)
            else:
                break
        else:
            return out, 0
    out = {}
    dropped = 0
    for key, value in attributes.items():
        dropped += _put(out, key, value, limit, limits)
    return out, dropped
