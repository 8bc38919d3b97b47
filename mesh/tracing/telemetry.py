"""A process's telemetry: its TracerProvider, set once, named for the agent, exporting where the environment says.

Honours the OpenTelemetry environment: OTEL_SDK_DISABLED; OTEL_RESOURCE_ATTRIBUTES (through the
SDK's `Resource`; service.name is always the agent's name, which stitching relies on);
OTEL_TRACES_SAMPLER(_ARG) (through the SDK's sampler); OTEL_PROPAGATORS (unset, the default
propagator is `MeshPropagator`, the same one read directly); OTEL_SPAN_*_LIMIT; OTEL_BSP_*;
OTEL_TRACES_EXPORTER (`otlp`, the default: to the mesh's tracer through the spool; `console`:
the SDK's console exporter, on stderr; `none`; or a comma list); and
OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, which, when set, takes the place of the tracer found through
the mesh and is sent the OTEL_EXPORTER_OTLP_* headers, compression, timeout and protocol
(`mesh.tracing.otlp_options`) and no mesh token: that goes only to the mesh's own tracer.
MESH_TRACING=sdk puts the stock SDK `TracerProvider` in place of the mesh's lean one (the same
ids, default sampling and export). Span processors added with `add_span_processor` get every span.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final, Literal, final

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import Sampler

from mesh.identity import MeshKeys, Principal, TokenSource
from mesh.tracing import processors, propagation
from mesh.tracing.batch import SpanBatcher
from mesh.tracing.export import SPANS_AUDIENCE, SpoolingExporter, SpoolSpanExporter
from mesh.tracing.lean_provider import MeshTracerProvider
from mesh.tracing.otlp_options import otlp_options
from mesh.tracing.sampling import HOUSEKEEPING, MeshSampler
from mesh.tracing.span_data import MeshSpan
from mesh.tracing.spool import Spool
from mesh.tracing.trace_ids import MeshIdGenerator

__all__ = ["HOUSEKEEPING", "ProcessTelemetry", "otlp_endpoint_from_env", "tracing_mode", "traces_exporters"]

log = logging.getLogger(__name__)

EXPORTERS: Final = frozenset({"otlp", "console"})
"""The OTEL_TRACES_EXPORTER names an agent knows."""
TracingMode = Literal["mesh", "sdk"]


def otlp_endpoint_from_env() -> str | None:
    """The traces endpoint the OTEL_* variables name, if any."""
    explicit = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if explicit:
        return explicit
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return base.rstrip("/") + "/v1/traces" if base else None


def traces_exporters(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The exporters OTEL_TRACES_EXPORTER names (default `otlp`; `none` names none); an unknown name
    is one warning and skipped."""
    raw = (os.environ if environ is None else environ).get("OTEL_TRACES_EXPORTER", "").strip()
    if not raw:
        return frozenset({"otlp"})
    names = {name.strip().lower() for name in raw.split(",")} - {"", "none"}
    for unknown in sorted(names - EXPORTERS):
        log.warning("OTEL_TRACES_EXPORTER names %r, which an agent does not know (otlp, console, none)", unknown)
    return frozenset(names & EXPORTERS)


def tracing_mode(environ: Mapping[str, str] | None = None) -> TracingMode:
    """`sdk` when MESH_TRACING asks for the stock OpenTelemetry SDK provider, else `mesh` (the lean one)."""
    raw = (os.environ if environ is None else environ).get("MESH_TRACING", "").strip().lower()
    if raw in ("", "mesh", "sdk"):
        return "sdk" if raw == "sdk" else "mesh"
    log.warning("MESH_TRACING=%r is not known (mesh or sdk); using the mesh's provider", raw)
    return "mesh"


@final
class ProcessTelemetry:
    """Owns the provider and exporters of one process; `shutdown()` flushes (uvicorn skips exit hooks).

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
        self.mesh_provider: MeshTracerProvider | None = None
        """The mesh's own provider, when it is the one in place (`MESH_TRACING` unset)."""
        self.tracer_provider: MeshTracerProvider | TracerProvider | None = None
        """The provider in place, whichever kind."""
        self._batcher: SpanBatcher | None = None
        self._unfollow: Callable[[], None] | None = None
        if not self.enabled:
            return
        exporters = traces_exporters()
        resource = Resource.create({"service.name": service, "service.instance.id": instance, "mesh.name": mesh})
        if "otlp" in exporters:
            self.exporter = _exporter(service, instance, spool_dir, tracer_base, credentials)
        sampler = TracerProvider(shutdown_on_exit=False).sampler if os.environ.get("OTEL_TRACES_SAMPLER") else None
        if tracing_mode() == "sdk":
            provider = self.tracer_provider = _stock_provider(resource, sampler, self.exporter)
        else:
            self._batcher = SpanBatcher(self.exporter) if self.exporter is not None else None
            provider = self.mesh_provider = self.tracer_provider = MeshTracerProvider(
                resource, self._batcher or _Discard(), sampler
            )
        if "console" in exporters:
            provider.add_span_processor(_console())
        self._unfollow = processors.follow(provider.add_span_processor)
        trace.set_tracer_provider(provider)
        propagation.install()

    def stats(self) -> dict[str, int]:
        """Export counters (empty when nothing is exported through the spool)."""
        if self.exporter is None:
            return {}
        exporter = self.exporter.stats()
        if self._batcher is None:
            return exporter
        batcher = self._batcher.stats()
        return {**exporter, **batcher, "dropped_spans": exporter["dropped_spans"] + batcher["dropped_spans"]}

    def shutdown(self) -> None:
        """Flush what is queued (to the tracer, the spool, each span processor) and stop exporting."""
        if self._unfollow is not None:
            self._unfollow()
            self._unfollow = None
        if self._batcher is not None:
            self._batcher.shutdown()
            self._batcher = None
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()  # its span processors (the stock provider's export among them)
            self.tracer_provider = None


def _exporter(
    service: str,
    instance: str,
    spool_dir: Path,
    tracer_base: Callable[[], str | None],
    credentials: MeshKeys | Callable[[], str] | None,
) -> SpoolingExporter:
    """The spooling OTLP exporter: to the user's endpoint with their options, else to the mesh's tracer."""
    from_env = otlp_endpoint_from_env()

    def endpoint() -> str | None:
        if from_env:
            return from_env
        base = tracer_base()
        return f"{base.rstrip('/')}/v1/traces" if base else None

    spool = Spool(spool_dir / service, instance)  # its own; it adopts what dead instances left
    if from_env:  # the user's backend: their headers and options, and never a mesh token
        return SpoolingExporter(endpoint, spool, options=otlp_options())
    return SpoolingExporter(endpoint, spool, token=_token_of(service, credentials))


def _stock_provider(resource: Resource, sampler: Sampler | None, exporter: SpoolingExporter | None) -> TracerProvider:
    """The SDK's own provider, with the mesh's ids and default sampling, exporting through the spool."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=resource, sampler=sampler or MeshSampler(), id_generator=MeshIdGenerator(), shutdown_on_exit=False
    )
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(SpoolSpanExporter(exporter), schedule_delay_millis=_delay()))
    return provider


def _console() -> SpanProcessor:
    """The SDK's console exporter behind a batch processor, writing to stderr (stdout may be MCP's)."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    return BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr), schedule_delay_millis=_delay())


def _delay() -> float | None:
    """The batch processors' delay: the mesh's one second unless OTEL_BSP_SCHEDULE_DELAY says (None: it is read)."""
    return None if os.environ.get("OTEL_BSP_SCHEDULE_DELAY") else 1000


def _token_of(service: str, credentials: MeshKeys | Callable[[], str] | None) -> Callable[[], str] | None:
    if isinstance(credentials, MeshKeys):
        tokens = TokenSource(credentials, Principal(service, "agent"))
        return lambda: tokens.token(SPANS_AUDIENCE)
    return credentials


@final
class _Discard:
    """The lean provider's sink when no exporter takes its spans (OTEL_TRACES_EXPORTER without otlp)."""

    def on_end(self, span: MeshSpan, /) -> None:
        """Let the span go (span processors, if any, had it first)."""
