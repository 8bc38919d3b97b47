"""The SERVER span of every inbound MCP message, as the SDK's `OpenTelemetryMiddleware` makes it, made directly.

The SDK's middleware opens its span through two generator context managers (its `otel_span`, then
the `ProxyTracer` it got at import, before any provider was set) around the tracer's own, on every
agent's every call, and the layers run with tracing off too. `ServerSpans` makes the same span
(name, kind, scope, attributes, parent, status, exception event) with one `start_span` and an
attach, for less work (docs/performance-log.md has the counts); a unit test runs both on the same
messages and compares what they record. `in_place_of_sdk_spans` puts it in the SDK's place, the
seam the SDK documents for opting out of its own ("drop it from this list"), without importing the
SDK's private `mcp.server._otel`.
"""

from __future__ import annotations

from collections.abc import MutableSequence
from typing import Any, Final, final

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolResult
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import ValidationError

from mesh.tracing.current import attach_span, detach
from mesh.tracing.propagation import carried_context

__all__ = ["SCOPE", "ServerSpans", "in_place_of_sdk_spans"]

SCOPE: Final = "mcp-python-sdk"
"""The instrumentation scope of the SDK's server spans, kept so that what reads them finds them alike."""


@final
class ServerSpans:
    """Context-tier middleware: each inbound message inside a SERVER span, current while it is handled."""

    def __init__(self, provider: trace.TracerProvider | None = None) -> None:
        self._provider = provider  # None: the process's, looked up at each message (it is set after import)
        self._tracer: tuple[trace.TracerProvider, trace.Tracer] | None = None  # the last provider's tracer

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        params = ctx.params
        name = params.get("name") if params else None
        target = name if isinstance(name, str) else None
        method = ctx.method
        attributes: dict[str, Any] = {"mcp.method.name": method, "mcp.protocol.version": ctx.protocol_version}
        if ctx.request_id is not None:
            attributes["jsonrpc.request.id"] = str(ctx.request_id)
        if method == "tools/call":
            attributes["gen_ai.operation.name"] = "execute_tool"
            if target is not None:
                attributes["gen_ai.tool.name"] = target
        elif method == "prompts/get" and target is not None:
            attributes["gen_ai.prompt.name"] = target
        provider = self._provider or trace.get_tracer_provider()
        known = self._tracer
        if known is None or known[0] is not provider:  # the SDK's provider makes a new tracer per call
            known = self._tracer = (provider, provider.get_tracer(SCOPE))
        span = known[1].start_span(
            f"{method} {target}" if target else method,
            carried_context(ctx.meta),  # the SDK's own rule for a carried parent
            SpanKind.SERVER,
            attributes,
        )
        token = attach_span(span)
        try:
            result = await call_next(ctx)
            if method == "tools/call":
                # As the SDK: only shapes that reach the wire as an error count (the model, or the
                # camelCase alias of a raw dict, as a literal bool).
                match result:
                    case CallToolResult(is_error=True) | {"isError": True}:
                        span.set_attribute("error.type", "tool_error")
                        span.set_status(StatusCode.ERROR)
                    case _:
                        pass
            return result
        except MCPError as exc:
            code = str(exc.error.code)
            span.set_attributes({"error.type": code, "rpc.response.status_code": code})
            span.set_status(StatusCode.ERROR, exc.error.message)
            raise
        except ValidationError:
            # As the SDK: the wire answer is sanitised, and pydantic's message carries client input.
            code = str(INVALID_PARAMS)
            span.set_attributes({"error.type": code, "rpc.response.status_code": code})
            span.set_status(StatusCode.ERROR, "Invalid request parameters")
            raise
        except Exception as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            span.record_exception(exc)
            span.set_status(StatusCode.ERROR, str(exc))
            raise
        finally:
            detach(token)
            span.end()


def in_place_of_sdk_spans(middleware: MutableSequence[Any]) -> None:
    """Replace the MCP SDK's own OpenTelemetry middleware in a server's `middleware` list with `ServerSpans`."""
    middleware[:] = [ServerSpans() if _is_sdk_spans(layer) else layer for layer in middleware]


def _is_sdk_spans(layer: object) -> bool:
    # Known by name: the class lives in the SDK's private `mcp.server._otel`.
    kind = type(layer)
    return kind.__name__ == "OpenTelemetryMiddleware" and kind.__module__.split(".")[0] == "mcp"
