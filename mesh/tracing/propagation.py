"""W3C trace context and baggage in `_meta`, as OpenTelemetry's default propagator carries them, read and
written directly in the common case.

Every mesh hop injects a `traceparent` into the request's `_meta` and the callee extracts it.
OpenTelemetry's default (a `CompositePropagator` of `TraceContextTextMapPropagator` and
`W3CBaggagePropagator`) spends most of that work on generic machinery: getters and setters, a
pattern looked up in `re`'s cache on each call, a context copied once per propagator, a 128-bit int
formatted with `:032x` (docs/performance-log.md has the counts). `MeshPropagator`
handles the carrier a hop actually has (a dict with a version-00 `traceparent` and no `tracestate` or
`baggage`) in a few lines, and hands everything else to that very composite, so what it extracts and
injects is what the default would, value for value (a property test compares the two).

`install()` puts it in place of the default only when the default is what is configured: with
OTEL_PROPAGATORS set, or a propagator already chosen by the application, nothing changes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Final, final

from opentelemetry import baggage, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context, get_current
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.trace import INVALID_SPAN_CONTEXT, NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from mesh.tracing.current import current_span
from mesh.tracing.otel_private import (
    BAGGAGE_KEY,
    SPAN_CONTEXT_IS_TUPLE,
    SPAN_KEY,
    span_context_fields,
    valid_span_context,
)
from mesh.wire import BAGGAGE_META_KEY, TRACEPARENT_META_KEY, TRACESTATE_META_KEY

__all__ = ["MeshPropagator", "carried_context", "install"]

_DEFAULT_FIELDS: Final = frozenset({TRACEPARENT_META_KEY, TRACESTATE_META_KEY, BAGGAGE_META_KEY})
_COMMON = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
"""A version-00 traceparent exactly, as the mesh writes it; any other shape takes the generic path."""
_FLAGS: Final = tuple(f"{flags:02x}" for flags in range(0x100))
_FLAG_VALUES: Final = {text: TraceFlags(flags) for flags, text in enumerate(_FLAGS)}


@final
class MeshPropagator(TextMapPropagator):
    """OpenTelemetry's default propagator (tracecontext, then baggage), with a direct path for `_meta` dicts."""

    def __init__(self) -> None:
        self._baggage = W3CBaggagePropagator()
        self._reference = CompositePropagator([TraceContextTextMapPropagator(), self._baggage])

    @property
    def fields(self) -> set[str]:
        """The carrier keys it reads and writes."""
        return self._reference.fields

    def extract(
        self, carrier: CarrierT, context: Context | None = None, getter: Getter[CarrierT] = default_getter
    ) -> Context:
        """The context the carrier holds, on top of `context` (an empty one when None)."""
        if getter is default_getter and type(carrier) is dict:
            carried = _plain_parent(carrier)  # pyright: ignore[reportUnknownArgumentType]
            if carried is not None:
                if SPAN_KEY is None:
                    return trace.set_span_in_context(NonRecordingSpan(carried), context or Context())
                values = dict(context) if context else {}  # what `set_span_in_context` makes, directly
                values[SPAN_KEY] = NonRecordingSpan(carried)
                return Context(values)
        return self._reference.extract(carrier, context, getter)

    def inject(
        self, carrier: CarrierT, context: Context | None = None, setter: Setter[CarrierT] = default_setter
    ) -> None:
        """Write the current (or `context`'s) span and baggage into the carrier."""
        if setter is not default_setter or type(carrier) is not dict:
            self._reference.inject(carrier, context, setter)
            return
        span_context = current_span(context).get_span_context()
        if span_context != INVALID_SPAN_CONTEXT:
            trace_id, span_id, _, flags, state, valid = (  # one unpacking, not five properties
                span_context if SPAN_CONTEXT_IS_TUPLE else span_context_fields(span_context)
            )
            carrier[TRACEPARENT_META_KEY] = _traceparent(trace_id, span_id, flags, valid)  # pyright: ignore[reportIndexIssue]
            if state:
                carrier[TRACESTATE_META_KEY] = state.to_header()  # pyright: ignore[reportIndexIssue]
        current = context if context is not None else get_current()
        if BAGGAGE_KEY is None:
            carries = bool(baggage.get_all(current))
        else:  # what `baggage.get_all` reads, without its copy
            entries = current.get(BAGGAGE_KEY)
            carries = bool(entries) and isinstance(entries, dict)
        if carries:
            self._baggage.inject(carrier, context, setter)


def carried_context(meta: Mapping[str, Any] | None) -> Context | None:
    """The context a request's `_meta` carries, or None when it carries no valid parent (the span is
    then parented by the ambient context): the MCP SDK's rule for its server spans. A plain
    `traceparent` is read here directly when `MeshPropagator` is the global propagator, sparing every
    inbound call the generic path through `propagate.extract` and its validity check."""
    if not meta:
        return None
    if type(meta) is dict and type(propagate.get_global_textmap()) is MeshPropagator:
        carried = _plain_parent(meta)  # pyright: ignore[reportUnknownArgumentType]
        if carried is not None:
            if SPAN_KEY is None:
                return trace.set_span_in_context(NonRecordingSpan(carried), Context())
            return Context({SPAN_KEY: NonRecordingSpan(carried)})
    try:
        context = propagate.extract(meta)
    except (ValueError, TypeError):  # a propagator that raises on junk: as no parent
        return None
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def _plain_parent(carrier: dict[str, Any]) -> SpanContext | None:
    """The remote parent of a carrier holding a valid version-00 `traceparent` and no `tracestate` or
    `baggage`, as the default propagator reads it; None for any other carrier."""
    found = carrier.get(TRACEPARENT_META_KEY)
    if type(found) is not str or TRACESTATE_META_KEY in carrier or BAGGAGE_META_KEY in carrier:
        return None
    match = _COMMON.fullmatch(found)
    if match is None:
        return None
    trace_id, span_id = int(match[1], 16), int(match[2], 16)
    if not (trace_id and span_id):  # else, at 32 and 16 hex digits, in range: valid
        return None
    return valid_span_context((trace_id, span_id, True, _FLAG_VALUES[match[3]], DEFAULT_TRACE_STATE, True))


def _traceparent(trace_id: int, span_id: int, flags: int, valid: bool) -> str:
    """The header the default writes: with bytes' `hex()`, cheaper than `:032x` on a 128-bit int."""
    if valid and 0 <= flags < 0x100:
        return f"00-{trace_id.to_bytes(16, 'big').hex()}-{span_id.to_bytes(8, 'big').hex()}-{_FLAGS[flags]}"
    return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"


def install() -> bool:
    """Make `MeshPropagator` the global propagator if OpenTelemetry's default is in place; True if it is now."""
    current = propagate.get_global_textmap()
    if isinstance(current, MeshPropagator):
        return True
    if os.environ.get("OTEL_PROPAGATORS") or not isinstance(current, CompositePropagator):
        return False
    if frozenset(current.fields) != _DEFAULT_FIELDS:
        return False
    propagate.set_global_textmap(MeshPropagator())
    return True
