"""`start_as_current_span` as a plain class: a span started, made current, and ended on the way out.

OpenTelemetry's tracer builds this from a generator context manager around `use_span`; a mesh hop
opens two, and a class with `__enter__` and `__exit__` does the same with less work per span. What
happens on an exception is `use_span`'s rule: an `Exception` is recorded and sets ERROR (as the
flags say); cancellation and other `BaseException`s leave the span as it was, and it still ends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import Token
from functools import wraps
from inspect import iscoroutinefunction
from types import TracebackType
from typing import Any, TypeAlias, final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes

from mesh.tracing.current import attach_span, detach

__all__ = ["Activation", "StartArgs"]

StartArgs: TypeAlias = tuple[
    str, "Context | None", SpanKind, Attributes, "Sequence[Link] | None", "int | None", bool, bool
]
"""`Tracer.start_span`'s positional arguments: name, context, kind, attributes, links, start time,
record_exception, set_status_on_exception."""


@final
class Activation:
    """Attach on entry; on exit detach, record an exception, end. Also a decorator (a span per call)."""

    __slots__ = ("_end", "_start", "_token", "_tracer", "span")
    _token: Token[Context]  # set by __enter__

    def __init__(self, tracer: trace.Tracer, start: StartArgs, end: bool) -> None:
        self._tracer = tracer
        self._start = start  # `start_span`'s arguments, kept as they came: no closure to make
        self._end = end

    def __enter__(self) -> trace.Span:
        self.span = span = self._tracer.start_span(*self._start)
        self._token = attach_span(span)
        return span

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        detach(self._token)
        span = self.span
        if isinstance(exc, Exception) and span.is_recording():
            if self._start[6]:
                span.record_exception(exc)
            if self._start[7]:
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        if self._end:
            span.end()

    def __call__(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Used as a decorator: a fresh span around every call, sync or async."""

        def fresh() -> Activation:
            return Activation(self._tracer, self._start, self._end)

        if iscoroutinefunction(func):

            @wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with fresh():
                    return await func(*args, **kwargs)

            return run_async

        @wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with fresh():
                return func(*args, **kwargs)

        return run
