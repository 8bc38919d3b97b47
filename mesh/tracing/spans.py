"""The mesh's lean tracing, by the names its callers have always imported.

Each piece has a module of its own: the span (`span_data`), the tracer and provider
(`lean_provider`), making a span current (`activation`, `current`), trace ids (`trace_ids`),
sampling (`sampling`) and what is read of OpenTelemetry's internals (`otel_private`).
"""

from __future__ import annotations

from mesh.tracing.current import attach_span, current_span, detach
from mesh.tracing.lean_provider import MeshTracer, MeshTracerProvider
from mesh.tracing.otel_private import valid_span_context
from mesh.tracing.sampling import HOUSEKEEPING
from mesh.tracing.span_data import UNSET_STATUS, AttributeMaker, DeferredEvent, MeshSpan, SpanEvent, SpanSink
from mesh.tracing.trace_ids import TRACE_ID_RANDOM_BITS, new_trace_id, trace_id_at

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
