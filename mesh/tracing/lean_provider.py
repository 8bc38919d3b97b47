"""The mesh's TracerProvider: the OpenTelemetry tracing API, with spans cheap enough for every hop.

`MeshTracer` starts `MeshSpan`s (`mesh.tracing.span_data`) and hands finished ones to a `SpanSink`
(the batcher); what it records is what the SDK's tracer records, field for field, for every way a
span starts and ends (a property test compares them). OTEL_TRACES_SAMPLER and the
OTEL_SPAN_*_LIMIT variables are honoured through the SDK's own readers; any SDK `SpanProcessor`
can be added (`add_span_processor`), at no cost to spans until one is.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from typing import Any, Final, final

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.span import DEFAULT_TRACE_STATE
from opentelemetry.util.types import Attributes

from mesh.tracing.activation import Activation
from mesh.tracing.current import current_span
from mesh.tracing.otel_private import SPAN_CONTEXT_IS_TUPLE, span_context_fields, valid_span_context
from mesh.tracing.processors import ProcessorSink
from mesh.tracing.sampling import HOUSEKEEPING
from mesh.tracing.span_data import RECORD_EXCEPTION, SET_STATUS_ON_EXCEPTION, MeshSpan, SpanSink, clean_attributes
from mesh.tracing.trace_ids import new_trace_id

__all__ = ["MeshTracer", "MeshTracerProvider"]

_FLAGS: Final = tuple(TraceFlags(flags) for flags in range(4))
"""Trace flags by (random-trace-id bit | sampled bit): one object each, made once."""
_RANDOM: Final = TraceFlags.RANDOM_TRACE_ID


@final
class MeshTracer(trace.Tracer):
    """Starts `MeshSpan`s; the default sampler is inlined (parent's decision, else skip housekeeping)."""

    def __init__(self, provider: MeshTracerProvider, scope: InstrumentationScope) -> None:
        self.resource = provider.resource
        self.scope = scope
        self.limits = provider.limits
        self._provider = provider  # its switch, sampler and sinks are read at each span's start: they may change

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
        """A recording span if the sampler records it, else a non-recording one that still carries the ids.

        While the provider is switched off (`enabled` False), the invalid span: no ids to propagate.
        """
        provider = self._provider
        if not provider.enabled:
            return trace.INVALID_SPAN
        parent: SpanContext | None = current_span(context).get_span_context()
        trace_id, _, _, flags, state, valid = parent if SPAN_CONTEXT_IS_TUPLE else span_context_fields(parent)
        if valid:
            random_bit = flags & _RANDOM
        else:
            parent, trace_id, state, random_bit = None, new_trace_id(), DEFAULT_TRACE_STATE, _RANDOM
        sampler = provider.sampler
        if sampler is None:
            if parent is not None:
                sampled = recorded = bool(flags & TraceFlags.SAMPLED)
            else:
                sampled = recorded = not (attributes and attributes.get("mcp.method.name") in HOUSEKEEPING)
        else:
            result = sampler.should_sample(context, trace_id, name, kind, attributes, links)
            decision = result.decision
            sampled = decision is Decision.RECORD_AND_SAMPLE
            recorded = sampled or decision is Decision.RECORD_ONLY
            state = result.trace_state or DEFAULT_TRACE_STATE
            attributes = result.attributes if recorded else attributes
        # Both ids are valid here (the span id is never 0), so `SpanContext.__new__`'s checks are skipped.
        span_id = random.getrandbits(64) or 1
        span_context = valid_span_context((trace_id, span_id, False, _FLAGS[random_bit | sampled], state, True))
        if not recorded:
            return trace.NonRecordingSpan(span_context)
        span = MeshSpan(
            name,
            span_context,
            parent,
            kind,
            start_time or time.time_ns(),
            self,
            provider.sink if sampled else provider.record_only_sink,
        )
        if not (record_exception and set_status_on_exception):
            span.exit_flags = (RECORD_EXCEPTION if record_exception else 0) | (
                SET_STATUS_ON_EXCEPTION if set_status_on_exception else 0
            )
        if attributes:
            span.attributes, span.dropped_attributes = clean_attributes(
                attributes, self.limits.max_span_attributes, self.limits
            )
        for link in links or ():
            span.add_link(link.context, link.attributes)
        if provider.on_start is not None:  # an SDK processor was added
            provider.on_start(span, context)
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
        start = (name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception)
        return Activation(self, start, end_on_exit)  # pyright: ignore[reportReturnType]


@final
class MeshTracerProvider(trace.TracerProvider):
    """One per process (`trace.set_tracer_provider`); all tracers share its resource, sampler and sinks."""

    def __init__(
        self, resource: Resource, sink: SpanSink, sampler: Sampler | None = None, limits: SpanLimits | None = None
    ) -> None:
        self.resource = resource
        self.sink = sink
        """Where sampled spans go when they end."""
        self.record_only_sink: SpanSink = _NOWHERE
        """Where spans recorded but not sampled (`Decision.RECORD_ONLY`) go: to span processors only."""
        self.on_start: Any = None
        """Called with each recording span and its parent context as it starts, once a processor is added."""
        # Replaceable at any time (None: the mesh's default): every tracer reads it as a span starts.
        # Spans begun keep their decision; `bench/tracing_overhead.py --toggle` switches it.
        self.sampler = sampler
        # False: tracing off at run time, as OTEL_SDK_DISABLED turns it off at start (every tracer
        # hands out the invalid span: nothing is made, recorded or propagated) until set back.
        # `bench/tracing_overhead.py --switch` flips it.
        self.enabled = True
        self.limits = limits or SpanLimits()  # SpanLimits() reads OTEL_SPAN_*_LIMIT and OTEL_ATTRIBUTE_*_LIMIT
        self._processors: list[SpanProcessor] = []
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

    def add_span_processor(self, processor: SpanProcessor) -> None:
        """Hand every span that starts from now on to an OpenTelemetry SDK span processor too
        (`on_start` with the live span, `on_end` with a `ReadableSpan`), as the SDK's provider does."""
        processors = self._processors
        processors.append(processor)
        if len(processors) == 1:
            self.sink = ProcessorSink(processors, self.sink)
            self.record_only_sink = ProcessorSink(processors, None)
            self.on_start = self.sink.on_start

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Ask every added processor to export what it holds; True if all did in time."""
        flushed = [processor.force_flush(timeout_millis) for processor in self._processors]  # each, not the first
        return all(flushed)

    def shutdown(self) -> None:
        """Shut down every added processor (the sink is its owner's to shut down)."""
        for processor in self._processors:
            processor.shutdown()


@final
class _Nowhere:
    """The sink of spans recorded but not sampled while no processor wants them: a sampled-only
    exporter would drop them too."""

    def on_end(self, span: MeshSpan, /) -> None:
        """Let the span go."""


_NOWHERE: Final = _Nowhere()
