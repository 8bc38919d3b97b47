"""The current span: read, made current and put back, as OpenTelemetry's context API does it, directly.

A hop asks for the current span several times and makes one current twice, so these read and set
the contextvar behind OpenTelemetry's default runtime context under its span key
(`mesh.tracing.otel_private`), and take the context API's path when either is not available.
"""

from __future__ import annotations

import logging
from contextvars import Token
from typing import Final

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context.context import Context

from mesh.tracing.otel_private import CONTEXT_VAR, SPAN_KEY
from mesh.tracing.span_data import MeshSpan

__all__ = ["attach_span", "current_span", "detach"]

log = logging.getLogger(__name__)

_CONTEXT_VAR: Final = CONTEXT_VAR if SPAN_KEY is not None else None
"""The contextvar to set directly (None: the context API is called)."""
_KEY: Final = SPAN_KEY or ""


def attach_span(span: trace.Span) -> Token[Context]:
    """`context_api.attach(trace.set_span_in_context(span))`: the current context with `span` in it
    becomes current."""
    var = _CONTEXT_VAR
    if var is None:
        return context_api.attach(trace.set_span_in_context(span))
    return var.set(Context({**var.get(), _KEY: span}))


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
    makes."""
    if SPAN_KEY is None:
        return trace.get_current_span(context)
    if context is None:
        context = _CONTEXT_VAR.get() if _CONTEXT_VAR is not None else context_api.get_current()
    span = context.get(_KEY)
    kind = type(span)
    if kind is MeshSpan or kind is trace.NonRecordingSpan:
        return span  # pyright: ignore[reportReturnType]
    return trace.INVALID_SPAN if span is None else trace.get_current_span(context)
