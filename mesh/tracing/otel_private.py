"""What the mesh reads of OpenTelemetry's private internals, each found and checked at import.

The fast paths of `mesh.tracing` read five things OpenTelemetry keeps private: the contextvar
behind its default runtime context, the context keys of the current span and of the baggage,
`SpanContext`'s tuple layout, and `SpanKind`'s `_value_` (its `value` is a Python property).
pyproject pins `opentelemetry-*` to the minor versions tested; each is still checked here against
the public API it stands for, and is None (or False) when it is missing or behaves otherwise, so
that its readers take the public path: slower, correct. MESH_TRACING_PUBLIC_API=1 takes the public
path everywhere (a test runs the tracing suite so).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextvars import ContextVar
from functools import partial
from typing import Any, Final, cast

from opentelemetry import baggage, trace
from opentelemetry import context as context_api
from opentelemetry.context.context import Context
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags, TraceState

__all__ = [
    "BAGGAGE_KEY",
    "CONTEXT_VAR",
    "PUBLIC_ONLY",
    "SPAN_CONTEXT_IS_TUPLE",
    "SPAN_KEY",
    "SPAN_KIND_SUNDER_VALUE",
    "SpanContextFields",
    "span_context_fields",
    "valid_span_context",
]

PUBLIC_ONLY: Final = os.environ.get("MESH_TRACING_PUBLIC_API", "") not in ("", "0")
"""True when MESH_TRACING_PUBLIC_API asks for the public API everywhere (to test the fallbacks)."""

SpanContextFields = tuple[int, int, bool, TraceFlags, TraceState, bool]
"""A span context's fields in `SpanContext.__new__`'s order: trace id, span id, remote, flags, state, valid."""


def _context_var() -> ContextVar[Context] | None:
    """The contextvar OpenTelemetry's default runtime context keeps the current context in."""
    try:
        from opentelemetry.context import _RUNTIME_CONTEXT  # pyright: ignore[reportPrivateUsage]
        from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
    except ImportError:
        return None
    if type(_RUNTIME_CONTEXT) is not ContextVarsRuntimeContext:  # another one, chosen with OTEL_PYTHON_CONTEXT
        return None
    var: Any = getattr(_RUNTIME_CONTEXT, "_current_context", None)
    if not isinstance(var, ContextVar):
        return None
    probe = Context({"mesh.probe": True})
    token = var.set(probe)  # pyright: ignore[reportUnknownMemberType]
    try:
        seen = context_api.get_current() is probe
    finally:
        var.reset(token)  # pyright: ignore[reportUnknownMemberType]
    return var if seen else None  # pyright: ignore[reportUnknownVariableType]


def _span_key() -> str | None:
    """The context key `trace.set_span_in_context` keeps the current span under."""
    try:
        from opentelemetry.trace.propagation import _SPAN_KEY  # pyright: ignore[reportPrivateUsage]
    except ImportError:
        return None
    span = trace.NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)
    written = trace.set_span_in_context(span, Context()).get(_SPAN_KEY) is span
    read = trace.get_current_span(Context({_SPAN_KEY: span})) is span
    return _SPAN_KEY if written and read else None


def _baggage_key() -> str | None:
    """The context key `baggage.set_baggage` keeps the baggage (a dict) under."""
    try:
        from opentelemetry.baggage import _BAGGAGE_KEY  # pyright: ignore[reportPrivateUsage]
    except ImportError:
        return None
    written = baggage.set_baggage("k", "v", Context()).get(_BAGGAGE_KEY) == {"k": "v"}
    read = baggage.get_all(Context({_BAGGAGE_KEY: {"a": "b"}})) == {"a": "b"}
    return _BAGGAGE_KEY if written and read else None


def _span_context_is_tuple() -> bool:
    """True when a `SpanContext` is the tuple of its six fields, and one made from them is whole."""
    flags, state = TraceFlags(1), TraceState([("k", "v")])
    made = SpanContext(0xABC, 0xDEF, True, flags, state)
    if not isinstance(made, tuple) or tuple(made) != (0xABC, 0xDEF, True, flags, state, True):  # pyright: ignore[reportUnnecessaryIsInstance]
        return False
    built = tuple.__new__(SpanContext, (0xABC, 0xDEF, True, flags, state, True))
    return built == made and (
        built.trace_id,
        built.span_id,
        built.is_remote,
        built.trace_flags,
        built.trace_state,
        built.is_valid,
    ) == (0xABC, 0xDEF, True, flags, state, True)


def _span_kind_sunder_value() -> bool:
    """True when every `SpanKind`'s `_value_` is its `value`."""
    return all(getattr(kind, "_value_", None) == kind.value for kind in SpanKind)


CONTEXT_VAR: Final = None if PUBLIC_ONLY else _context_var()
"""The contextvar holding the current context, or None: then the context API is called."""
SPAN_KEY: Final = None if PUBLIC_ONLY else _span_key()
"""The current span's context key, or None: then `trace.set_span_in_context` / `get_current_span`."""
BAGGAGE_KEY: Final = None if PUBLIC_ONLY else _baggage_key()
"""The baggage's context key, or None: then `baggage.get_all`."""
SPAN_CONTEXT_IS_TUPLE: Final = False if PUBLIC_ONLY else _span_context_is_tuple()
"""True when span contexts may be built and read as tuples of their fields."""
SPAN_KIND_SUNDER_VALUE: Final = False if PUBLIC_ONLY else _span_kind_sunder_value()
"""True when a span kind's number may be read as `kind._value_` (else `kind.value`)."""


def _made(fields: SpanContextFields) -> SpanContext:
    trace_id, span_id, remote, flags, state, _ = fields
    return SpanContext(trace_id, span_id, remote, flags, state)


valid_span_context: Final[Callable[[SpanContextFields], SpanContext]] = (
    cast("Callable[[SpanContextFields], SpanContext]", partial(tuple.__new__, SpanContext))
    if SPAN_CONTEXT_IS_TUPLE
    else _made
)
"""A `SpanContext` from its six fields, for ids known to be valid: built as a tuple when the layout
allows (`SpanContext.__new__` checks the ids in Python, for every span), else by the constructor."""


def span_context_fields(context: SpanContext) -> SpanContextFields:
    """A span context's six fields, read through its public properties (for when it is not a tuple)."""
    return (
        context.trace_id,
        context.span_id,
        context.is_remote,
        context.trace_flags,
        context.trace_state,
        context.is_valid,
    )
