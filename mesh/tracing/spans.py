"""The mesh's TracerProvider: the OpenTelemetry tracing API, with spans cheap enough for every hop.

The SDK's span validates each attribute through `BoundedAttributes`, takes a lock per call and
builds an event object per `add_event`: ~35 µs for a mesh client span with its decisions, paid
twice per hop (client and server), which alone was 10-20 % of a 1.3 ms call. `MeshSpan` keeps
the same data in plain slots and dicts, takes the cleaning path only for values that need it,
and hands finished spans to a `SpanSink` (the batcher). What it records is what the SDK records,
field for field (a property test encodes both and compares); OTEL_TRACES_SAMPLER and the
OTEL_SPAN_*_LIMIT variables are honoured through the SDK's own readers.
"""

from __future__ import annotations

import logging
import random
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import Token
from functools import partial, wraps
from inspect import iscoroutinefunction
from types import TracebackType
from typing import Any, Final, NamedTuple, Protocol, TypeAlias, cast, final

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes

# The process's runtime context, and the key OpenTelemetry keeps the current span under: `current_span`,
# `attach_span` and `detach` read and write them as the context API and `get_current_span` do.
from opentelemetry.context import _RUNTIME_CONTEXT  # pyright: ignore[reportPrivateUsage]
from opentelemetry.context.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits
from opentelemetry.sdk.trace.sampling import Decision, Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation import _SPAN_KEY  # pyright: ignore[reportPrivateUsage]
from opentelemetry.trace.span import DEFAULT_TRACE_STATE
from opentelemetry.util.types import Attributes, AttributeValue

__all__ = [
    "HOUSEKEEPING",
    "TRACE_ID_RANDOM_BITS",
    "UNSET_STATUS",
    "AttributeMaker",
    "DeferredEvent",
    "MeshSpan",
    "MeshTracer",
    "MeshTracerProvider",
    "SpanEvent",
    "SpanSink",
    "attach_span",
    "current_span",
    "detach",
    "new_trace_id",
    "trace_id_at",
    "valid_span_context",
]

log = logging.getLogger(__name__)

HOUSEKEEPING = frozenset({"tools/list", "server/discover", "initialize", "ping", "notifications/initialized"})
"""MCP methods that, as the root of a trace, are the mesh keeping itself informed (probes), not work."""

_SIMPLE = frozenset({str, bool, int, float})
_SEQUENCES = (list, tuple)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)
UNSET_STATUS: Final = Status(StatusCode.UNSET)
"""The status every span starts with (one object, so a reader can test it by identity)."""


class SpanSink(Protocol):
    """Where a span goes when it ends (the batcher); called on the thread that ends it."""

    def on_end(self, span: MeshSpan) -> None: ...


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
        "instrumentation_scope",
        "kind",
        "links",
        "name",
        "parent",
        "resource",
        "start_time",
        "status",
    )

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        start_time: int,
        tracer: MeshTracer,
    ) -> None:
        self.name = name
        self._context = context
        self.parent = parent
        self.kind = kind
        self.start_time = start_time
        self.end_time: int | None = None
        self.resource: Resource = tracer.resource
        self.instrumentation_scope = tracer.scope
        self._sink = tracer.sink
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
            if limit is None or len(attributes) < limit or key in attributes:
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
            _clean_all(attributes, self._limits.max_event_attributes, self._limits) if attributes else ({}, 0)
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
        clean, dropped = _clean_all(make(*args), limits.max_event_attributes, limits)
        return SpanEvent(name, clean, timestamp, dropped)

    def _drop_oldest_event(self) -> None:
        if type(self._events.pop(0)) is tuple:
            self._deferred -= 1
        self.dropped_events += 1

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        """Link another span (ignored for an invalid context, as in the SDK)."""
        if self.end_time is not None or not context.is_valid:
            return
        limit = self._limits.max_links
        if limit is not None and len(self.links) >= limit:
            self.links.pop(0)
            self.dropped_links += 1
        self.links.append(
            Link(context, _clean_all(attributes or {}, self._limits.max_link_attributes, self._limits)[0])
        )

    def update_name(self, name: str) -> None:
        """Rename the span."""
        if self.end_time is None:
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """Set the status; OK is final and a description only goes with ERROR (as in the SDK)."""
        if self.end_time is not None or self.status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if description is not None:
                log.warning("Description %s ignored. Use either `Status` or `(StatusCode, Description)`", description)
            self.status = status
        else:
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
        name = (
            f"{kind.__module__}.{kind.__qualname__}" if kind.__module__ not in ("", "builtins") else kind.__qualname__
        )
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
    if key in target or limit is None or len(target) < limit:
        target[key] = value
        return 0
    if limit == 0:
        return 1
    del target[next(iter(target))]
    target[key] = value
    return 1


def _clean_all(
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


_StartArgs: TypeAlias = tuple[
    str, "context_api.Context | None", SpanKind, Attributes, "Sequence[Link] | None", "int | None"
]
"""`MeshTracer.start_span`'s positional arguments: name, context, kind, attributes, links, start time."""


@final
class _Activation:
    """`start_as_current_span` without a generator: attach, run, record a failure, detach, end."""

    __slots__ = ("_end", "_record", "_set_status", "_start", "_token", "_tracer", "span")
    _token: Token[Context]  # set by __enter__

    def __init__(self, tracer: MeshTracer, start: _StartArgs, end: bool, record: bool, set_status: bool) -> None:
        self._tracer = tracer
        self._start = start  # `start_span`'s arguments, kept as they came: no closure to make
        self._end = end
        self._record = record
        self._set_status = set_status

    def __enter__(self) -> trace.Span:
        self.span = span = self._tracer.start_span(*self._start)
        self._token = attach_span(span)
        return span

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        detach(self._token)
        span = self.span
        if isinstance(exc, Exception) and span.is_recording():
            if self._record:
                span.record_exception(exc)
            if self._set_status:
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        if self._end:
            span.end()

    def __call__(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Used as a decorator: a fresh span around every call, sync or async."""

        def fresh() -> _Activation:
            return _Activation(self._tracer, self._start, self._end, self._record, self._set_status)

        if iscoroutinefunction(func):

            @wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with fresh():
                    return await func(*args, **kwargs)

            return run_async

        @wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with fresh():
                return func(*args, **kwargs)

        return run


@final
class MeshTracer(trace.Tracer):
    """Starts `MeshSpan`s; the default sampler is inlined (parent's decision, else skip housekeeping)."""

    def __init__(self, provider: MeshTracerProvider, scope: InstrumentationScope) -> None:
        self.resource = provider.resource
        self.scope = scope
        self.sink = provider.sink
        self.limits = provider.limits
        self._provider = provider  # its switch and sampler are read at each span's start: they may change

    def start_span(
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        """A recording span if sampled, else a non-recording one that still carries the ids.

        While the provider is switched off (`enabled` False), the invalid span: no ids to propagate.
        """
        provider = self._provider
        if not provider.enabled:
            return trace.INVALID_SPAN
        parent: SpanContext | None = current_span(context).get_span_context()
        trace_id, _, _, flags, state, valid = parent  # one unpacking, not four properties
        if not valid:
            parent, trace_id, state = None, new_trace_id(), DEFAULT_TRACE_STATE
        sampler = provider.sampler
        if sampler is None:
            if parent is not None:
                sampled = bool(flags & TraceFlags.SAMPLED)
            else:
                sampled = not (attributes and attributes.get("mcp.method.name") in HOUSEKEEPING)
        else:
            result = sampler.should_sample(context, trace_id, name, kind, attributes, links)
            sampled = result.decision is Decision.RECORD_AND_SAMPLE
            state = result.trace_state or state
            attributes = result.attributes if sampled else attributes
            if result.decision is Decision.RECORD_ONLY:
                log.debug("RECORD_ONLY is treated as DROP by the mesh tracer")
        # Both ids are valid here (the span id is never 0), so `SpanContext.__new__`'s checks are skipped.
        span_id = random.getrandbits(64) or 1
        span_context = valid_span_context((trace_id, span_id, False, _SAMPLED if sampled else _UNSAMPLED, state, True))
        if not sampled:
            return trace.NonRecordingSpan(span_context)
        span = MeshSpan(name, span_context, parent, kind, start_time or time.time_ns(), self)
        if attributes:
            span.attributes, span.dropped_attributes = _clean_all(
                attributes, self.limits.max_span_attributes, self.limits
            )
        for link in links or ():
            span.add_link(link.context, link.attributes)
        return span

    def start_as_current_span(  # pyright: ignore[reportIncompatibleMethodOverride]
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        """Start a span and make it current for the `with` block (or, as a decorator, for each call)."""
        start = (name, context, kind, attributes, links, start_time)
        return _Activation(self, start, end_on_exit, record_exception, set_status_on_exception)  # pyright: ignore[reportReturnType]


valid_span_context: Final = partial(tuple.__new__, SpanContext)
"""A `SpanContext` from its six fields as its `__new__` lays them out (trace id, span id, remote,
flags, state, True), for ids known to be valid: `__new__` checks them in Python, for every span."""


_CONTEXT_VAR: Final = (
    _RUNTIME_CONTEXT._current_context  # pyright: ignore[reportPrivateUsage]
    if type(_RUNTIME_CONTEXT) is ContextVarsRuntimeContext
    else None
)
"""The contextvar OpenTelemetry's default runtime context keeps the current context in (None under
another runtime context, chosen with OTEL_PYTHON_CONTEXT: then the context API is called)."""


def attach_span(span: trace.Span) -> Token[Context]:
    """`context_api.attach(trace.set_span_in_context(span))`: the current context with `span` in it
    becomes current, set directly on the contextvar: this runs twice a hop, so the context API's
    indirection is skipped."""
    var = _CONTEXT_VAR
    if var is None:
        return context_api.attach(trace.set_span_in_context(span))
    return var.set(Context({**var.get(), _SPAN_KEY: span}))


def detach(token: Token[Context]) -> None:
    """`context_api.detach`: the context before `attach_span` is current again (logged, not
    raised, if the token is not this context's, as the context API does)."""
    var = _CONTEXT_VAR
    if var is None:
        context_api.detach(token)
        return
    try:
        var.reset(token)
    except (ValueError, RuntimeError):  # another context's token, or one used before
        log.exception("Failed to detach context")


def current_span(context: context_api.Context | None = None) -> trace.Span:
    """`trace.get_current_span`, without its abstract-class check for the two kinds of span the mesh
    makes: a hop asks several times."""
    if context is None:
        context = _CONTEXT_VAR.get() if _CONTEXT_VAR is not None else context_api.get_current()
    span = context.get(_SPAN_KEY)
    kind = type(span)
    if kind is MeshSpan or kind is trace.NonRecordingSpan:
        return cast("trace.Span", span)
    return trace.INVALID_SPAN if span is None else trace.get_current_span(context)


def new_trace_id() -> int:
    """The id of a new trace, made now (`trace_id_at`)."""
    return trace_id_at(time.time_ns(), random.getrandbits(TRACE_ID_RANDOM_BITS))


TRACE_ID_RANDOM_BITS = 88
"""How many of a trace id's 128 bits are random; the time takes the other 40."""


def trace_id_at(time_ns: int, random_bits: int) -> int:
    """A trace id: the Unix time in 256ths of a second (5 bytes), then 88 random bits.

    The first 4 bytes are the second, as AWS X-Ray's ids carry it. W3C Trace Context asks only
    that an id's rightmost 7 bytes be random, and ratio samplers read the low 8. The time in
    front makes the ids of one moment sort together, so the trace store's index on them grows at
    its end: with random ids each new trace wrote its own index page (3.8 times the bytes written
    a trace with 200,000 traces stored, `bench/trace_ids.py`), and with whole seconds a busy
    tracer's batch still wrote into the many pages of the current second's ids (74 WAL frames a
    512-span commit at 100,000 spans/s, against 62 with 256ths).
    """
    return (time_ns * 256 // 1_000_000_000 & 0xFFFFFFFFFF) << TRACE_ID_RANDOM_BITS | random_bits


@final
class MeshTracerProvider(trace.TracerProvider):
    """One per process (`trace.set_tracer_provider`); all tracers share its resource, sampler and sink."""

    def __init__(
        self, resource: Resource, sink: SpanSink, sampler: Sampler | None = None, limits: SpanLimits | None = None
    ) -> None:
        self.resource = resource
        self.sink = sink
        # Replaceable at any time (None: the mesh's default): every tracer reads it as a span starts.
        # Spans begun keep their decision; `bench/tracing_overhead.py --toggle` switches it.
        self.sampler = sampler
        # False: tracing off at run time, as OTEL_SDK_DISABLED turns it off at start (every tracer
        # hands out the invalid span: nothing is made, recorded or propagated) until set back.
        # `bench/tracing_overhead.py --switch` flips it.
        self.enabled = True
        self.limits = limits or SpanLimits()  # SpanLimits() reads OTEL_SPAN_*_LIMIT and OTEL_ATTRIBUTE_*_LIMIT
        self._tracers: dict[tuple[str, str | None, str | None], MeshTracer] = {}

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> trace.Tracer:
        """The tracer for one instrumentation scope."""
        key = (instrumenting_module_name, instrumenting_library_version, schema_url)
        tracer = self._tracers.get(key)
        if tracer is None or attributes:
            scope = InstrumentationScope(
                instrumenting_module_name, instrumenting_library_version, schema_url, attributes
            )
            tracer = MeshTracer(self, scope)
            if not attributes:
                self._tracers[key] = tracer
        return tracer
