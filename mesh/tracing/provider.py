"""The process's TracerProvider: set once, named for the agent, exporting through the spool.

Honours the OpenTelemetry environment: OTEL_SDK_DISABLED, OTEL_RESOURCE_ATTRIBUTES,
OTEL_TRACES_SAMPLER, OTEL_BSP_* and OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, which, when set,
takes the place of the tracer found through the mesh.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from mesh.tracing.export import SpoolingExporter
from mesh.tracing.spool import Spool

__all__ = ["HOUSEKEEPING", "SkipHousekeeping", "Tracing", "otlp_endpoint_from_env"]


def otlp_endpoint_from_env() -> str | None:
    """The traces endpoint the OTEL_* variables name, if any."""
    explicit = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if explicit:
        return explicit
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return base.rstrip("/") + "/v1/traces" if base else None


HOUSEKEEPING = frozenset({"tools/list", "server/discover", "initialize", "ping", "notifications/initialized"})
"""MCP methods that, as the root of a trace, are the mesh keeping itself informed (probes), not work."""


@final
class SkipHousekeeping(Sampler):
    """Samples every root span except the mesh's own probes (a listing with no caller behind it)."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        """Drop housekeeping roots; record and sample everything else."""
        method = (attributes or {}).get("mcp.method.name")
        decision = Decision.DROP if method in HOUSEKEEPING else Decision.RECORD_AND_SAMPLE
        return SamplingResult(decision, attributes if decision is Decision.RECORD_AND_SAMPLE else None, trace_state)

    def get_description(self) -> str:
        """How the sampler shows in diagnostics."""
        return "SkipHousekeeping"


@final
class Tracing:
    """Owns the provider and exporter of one process; `shutdown()` flushes (uvicorn skips exit hooks)."""

    def __init__(
        self,
        *,
        service: str,
        instance: str,
        mesh: str,
        spool_dir: Path,
        tracer_base: Callable[[], str | None],
    ) -> None:
        self.enabled = os.environ.get("OTEL_SDK_DISABLED", "").lower() != "true"
        self.exporter: SpoolingExporter | None = None
        self._provider: TracerProvider | None = None
        if not self.enabled:
            return
        from_env = otlp_endpoint_from_env()

        def endpoint() -> str | None:
            if from_env:
                return from_env
            base = tracer_base()
            return f"{base.rstrip('/')}/v1/traces" if base else None

        resource = Resource.create({"service.name": service, "service.instance.id": instance, "mesh.name": mesh})
        self.exporter = SpoolingExporter(endpoint, Spool(spool_dir / service))  # a restarted agent drains it
        sampler = None if os.environ.get("OTEL_TRACES_SAMPLER") else ParentBased(root=SkipHousekeeping())
        self._provider = TracerProvider(resource=resource, sampler=sampler)
        # Small batches: the export thread encodes while holding the GIL, so a big batch stalls
        # the event loop for milliseconds and shows up in the p99 of every call (bench/hop.py).
        self._provider.add_span_processor(
            BatchSpanProcessor(
                self.exporter,
                schedule_delay_millis=None if "OTEL_BSP_SCHEDULE_DELAY" in os.environ else 200,
                max_export_batch_size=None if "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" in os.environ else 64,
            )
        )
        sys.setswitchinterval(0.0005)
        trace.set_tracer_provider(self._provider)

    def stats(self) -> dict[str, int]:
        """Export counters (empty when tracing is disabled)."""
        return self.exporter.stats() if self.exporter else {}

    def shutdown(self) -> None:
        """Flush what is queued (to the tracer or the spool) and stop exporting."""
        if self._provider is not None:
            self._provider.shutdown()
