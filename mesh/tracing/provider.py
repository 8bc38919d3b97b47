"""The process's TracerProvider: set once, named for the agent, exporting through the spool.

Honours the OpenTelemetry environment: OTEL_SDK_DISABLED; OTEL_RESOURCE_ATTRIBUTES (through the
SDK's `Resource`; service.name is always the agent's name, which stitching relies on);
OTEL_TRACES_SAMPLER(_ARG) (through the SDK's sampler); OTEL_PROPAGATORS (unset, the default
propagator is `MeshPropagator`, the same one read faster); OTEL_SPAN_*_LIMIT; OTEL_BSP_*; and
OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, which, when set, takes the place of the tracer found
through the mesh. The provider itself is the mesh's lean one (`mesh.tracing.spans`): without a
sampler variable, every root span is sampled except the mesh's own probes (`HOUSEKEEPING`), and
children follow their parent.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import final

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from mesh.tracing import propagation
from mesh.tracing.batch import SpanBatcher
from mesh.tracing.export import SpoolingExporter
from mesh.tracing.spans import HOUSEKEEPING, MeshTracerProvider
from mesh.tracing.spool import Spool

__all__ = ["HOUSEKEEPING", "Tracing", "otlp_endpoint_from_env"]


def otlp_endpoint_from_env() -> str | None:
    """The traces endpoint the OTEL_* variables name, if any."""
    explicit = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if explicit:
        return explicit
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return base.rstrip("/") + "/v1/traces" if base else None


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
        self.provider: MeshTracerProvider | None = None
        self._batcher: SpanBatcher | None = None
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
        self._batcher = SpanBatcher(self.exporter)
        sampler = TracerProvider(shutdown_on_exit=False).sampler if os.environ.get("OTEL_TRACES_SAMPLER") else None
        self.provider = MeshTracerProvider(resource, self._batcher, sampler)
        trace.set_tracer_provider(self.provider)
        propagation.install()

    def stats(self) -> dict[str, int]:
        """Export counters (empty when tracing is disabled)."""
        if self.exporter is None or self._batcher is None:
            return {}
        return {**self.exporter.stats(), **self._batcher.stats()}

    def shutdown(self) -> None:
        """Flush what is queued (to the tracer or the spool) and stop exporting."""
        if self._batcher is not None:
            self._batcher.shutdown()
            self._batcher = None
