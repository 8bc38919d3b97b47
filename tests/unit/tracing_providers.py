"""The two tracer providers an agent can run (`MESH_TRACING` unset, or `sdk`), made alike for tests.

`make_provider("mesh", ...)` is the lean `MeshTracerProvider`; `make_provider("sdk", ...)` is the
stock SDK `TracerProvider` as `ProcessTelemetry` builds it (the mesh's ids and default sampling), whose
finished spans reach the same `RecordingSink`, so a test reads both the same way.
"""

from __future__ import annotations

from typing import Any, Literal

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import Sampler

from mesh.testing import RecordingSink
from mesh.tracing.lean_provider import MeshTracerProvider
from mesh.tracing.sampling import MeshSampler
from mesh.tracing.trace_ids import MeshIdGenerator

Mode = Literal["mesh", "sdk"]
MODES: tuple[Mode, ...] = ("mesh", "sdk")


class ToSink(SpanProcessor):
    """An SDK processor handing each sampled span, as it ends, to a `RecordingSink` (as a batch
    processor's exporter would get it)."""

    def __init__(self, sink: RecordingSink) -> None:
        self.sink = sink

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is not None and context.trace_flags.sampled:
            spans: list[Any] = self.sink.spans
            spans.append(span)


def make_provider(
    mode: Mode,
    resource: Resource,
    sink: RecordingSink,
    *,
    sampler: Sampler | None = None,
    limits: SpanLimits | None = None,
) -> trace.TracerProvider:
    """A provider of `mode` whose sampled spans end up in `sink`."""
    if mode == "mesh":
        return MeshTracerProvider(resource, sink, sampler, limits)
    provider = TracerProvider(
        resource=resource,
        sampler=sampler or MeshSampler(),
        span_limits=limits,
        id_generator=MeshIdGenerator(),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(ToSink(sink))
    return provider
