"""The process's TracerProvider: set once, named for the agent, exporting through the spool.

Honours the OpenTelemetry environment: OTEL_SDK_DISABLED; OTEL_RESOURCE_ATTRIBUTES (through the
SDK's `Resource`; service.name is always the agent's name, which stitching relies on);
OTEL_TRACES_SAMPLER(_ARG) (through the SDK's sampler); OTEL_PROPAGATORS (unset, the default
propagator is `MeshPropagator`, the same one read faster); OTEL_SPAN_*_LIMIT; OTEL_BSP_*; and
OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, which, when set, takes the place of the tracer found
through the mesh (and is sent no mesh token: that goes only to the mesh's own tracer). The
provider itself is the mesh's lean one (`mesh.tracing.spans`): without a sampler variable, every
root span is sampled except the mesh's own probes (`HOUSEKEEPING`), and children follow their
parent.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import final

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from mesh.identity import MeshKeys, Principal, TokenSource
from mesh.tracing import propagation
from mesh.tracing.batch import SpanBatcher
from mesh.tracing.export import SPANS_AUDIENCE, SpoolingExporter
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
    """Owns the provider and exporter of one process; `shutdown()` flushes (uvicorn skips exit hooks).

    `credentials` authenticate the spans to the mesh's tracer: the mesh's keys (the exporter mints
    `service`'s agent tokens for `SPANS_AUDIENCE`), a callable giving a live token, or None to send
    none (a tracer of the mesh then refuses the spans, which wait in the spool).
    """

    def __init__(
        self,
        *,
        service: str,
        instance: str,
        mesh: str,
        spool_dir: Path,
        tracer_base: Callable[[], str | None],
        credentials: MeshKeys | Callable[[], str] | None,
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

        token = None if from_env else _token_of(service, credentials)  # the user's backend gets no mesh token
        resource = Resource.create({"service.name": service, "service.instance.id": instance, "mesh.name": mesh})
        spool = Spool(spool_dir / service, instance)  # its own; it adopts what dead instances left
        self.exporter = SpoolingExporter(endpoint, spool, token=token)
        self._batcher = SpanBatcher(self.exporter)
        sampler = TracerProvider(shutdown_on_exit=False).sampler if os.environ.get("OTEL_TRACES_SAMPLER") else None
        self.provider = MeshTracerProvider(resource, self._batcher, sampler)
        trace.set_tracer_provider(self.provider)
        propagation.install()

    def stats(self) -> dict[str, int]:
        """Export counters (empty when tracing is disabled)."""
        if self.exporter is None or self._batcher is None:
            return {}
        exporter, batcher = self.exporter.stats(), self._batcher.stats()
        return {**exporter, **batcher, "dropped_spans": exporter["dropped_spans"] + batcher["dropped_spans"]}

    def shutdown(self) -> None:
        """Flush what is queued (to the tracer or the spool) and stop exporting."""
        if self._batcher is not None:
            self._batcher.shutdown()
            self._batcher = None


def _token_of(service: str, credentials: MeshKeys | Callable[[], str] | None) -> Callable[[], str] | None:
    if isinstance(credentials, MeshKeys):
        tokens = TokenSource(credentials, Principal(service, "agent"))
        return lambda: tokens.token(SPANS_AUDIENCE)
    return credentials
