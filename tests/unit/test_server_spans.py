"""`ServerSpans` records the very SERVER spans the SDK's `OpenTelemetryMiddleware` records, under
either provider an agent can run (the mesh's lean one, or the SDK's with `MESH_TRACING=sdk`)."""

from __future__ import annotations

from typing import Any, cast

import anyio
import mcp.shared._otel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp.server._otel import OpenTelemetryMiddleware
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent
from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import BaseModel, ValidationError

from mesh.testing import RecordingSink
from mesh.tracing.propagation import MeshPropagator
from mesh.tracing.server_spans import SCOPE, ServerSpans, in_place_of_sdk_spans
from mesh.tracing.spans import HOUSEKEEPING
from tests.unit.tracing_providers import MODES, Mode, make_provider

DEFAULT_PROPAGATOR = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
PARENT = trace.SpanContext(0x6B0FA219 << 96 | 0xABC, 0x1234, True, trace.TraceFlags(1))
TRACEPARENT = f"00-{PARENT.trace_id:032x}-{PARENT.span_id:016x}-01"


class _Arguments(BaseModel):
    count: int


def _validation_error() -> ValidationError:
    try:
        _Arguments.model_validate({"count": "many"})
    except ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


OUTCOMES: dict[str, Any] = {
    "result": CallToolResult(content=[TextContent(type="text", text="ok")]),
    "tool error": CallToolResult(content=[TextContent(type="text", text="no")], is_error=True),
    "raw tool error": {"isError": True, "content": []},
    "raw truthy": {"isError": 1, "content": []},
    "plain": {"tools": []},
    "mcp error": MCPError(-32601, "Method not found"),
    "invalid params": _validation_error(),
    "crash": RuntimeError("the tool fell over"),
}
messages = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["tools/call", "prompts/get", "resources/read", "ping"]),
        "params": st.one_of(
            st.none(),
            st.just({}),
            st.fixed_dictionaries({"name": st.one_of(st.sampled_from(["echo", "lookup"]), st.integers())}),
        ),
        "request_id": st.one_of(st.none(), st.integers(0, 99), st.just("req-7")),
        "meta": st.sampled_from(
            [
                None,
                {},
                {"traceparent": TRACEPARENT},
                {"traceparent": "00-junk"},
                {"traceparent": TRACEPARENT, "baggage": "mesh.data_class=pii"},
                {"traceparent": ["not", "a", "string"]},
            ]
        ),
        "outcome": st.sampled_from(sorted(OUTCOMES)),
        "ambient": st.booleans(),
    }
)


def _run(middleware: Any, provider: trace.TracerProvider, message: dict[str, Any]) -> None:
    ctx = ServerRequestContext(
        session=cast("Any", None),
        lifespan_context=None,
        protocol_version="2025-11-25",
        method=message["method"],
        params=message["params"],
        request_id=message["request_id"],
        meta=message["meta"],
    )
    outcome = OUTCOMES[message["outcome"]]

    async def call_next(_: Any) -> Any:
        if isinstance(outcome, Exception):
            raise outcome.with_traceback(None)  # one object raised again and again: its traceback would grow
        return outcome

    async def handle() -> None:
        if message["ambient"]:  # a span already current: with no valid carried context, the parent
            with provider.get_tracer("ambient").start_as_current_span("ambient"):
                await middleware(ctx, call_next)
        else:
            await middleware(ctx, call_next)

    if not isinstance(outcome, Exception):
        anyio.run(handle)
        return
    with pytest.raises(type(outcome)) as raised:  # the middleware lets it through, as it came
        anyio.run(handle)
    assert raised.value is outcome


def _shape(span: Any, ambient: dict[int, int]) -> dict[str, Any]:
    events = [
        (event.name, {k: v for k, v in event.attributes.items() if k != "exception.stacktrace"})
        for event in span.events
    ]
    parent = span.parent
    return {
        "name": span.name,
        "kind": span.kind,
        "scope": span.instrumentation_scope.name,
        "attributes": dict(span.attributes),
        "status": (span.status.status_code, span.status.description),
        "events": events,
        "parent": None if parent is None else ambient.get(parent.span_id, (parent.trace_id, parent.span_id)),
        "remote": parent is not None and parent.is_remote,
    }


def _record(middleware: Any, sink: RecordingSink, provider: trace.TracerProvider, message: dict[str, Any]) -> Any:
    before = len(sink.spans)
    _run(middleware, provider, message)
    spans = sink.spans[before:]
    ambient = {s.get_span_context().span_id: 0 for s in spans if s.name == "ambient"}  # ids differ; roles do not
    return [_shape(s, ambient) for s in spans]


_providers = {
    mode: (sink := RecordingSink(), make_provider(mode, Resource.create({"service.name": "echo"}), sink))
    for mode in MODES
}


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=150, deadline=None)
@given(message=messages, propagator=st.sampled_from([DEFAULT_PROPAGATOR, MeshPropagator()]))
def test_the_same_spans_as_the_sdk_middleware(
    mode: Mode, message: dict[str, Any], propagator: TextMapPropagator
) -> None:
    # With the mesh's propagator global, `ServerSpans` reads a plain traceparent itself (`carried_context`).
    sink, provider = _providers[mode]  # one per mode, not per example: `_record` reads only the new spans
    saved = propagate.get_global_textmap()
    propagate.set_global_textmap(propagator)
    try:
        with pytest.MonkeyPatch.context() as patch:  # the SDK's middleware uses the tracer it took at import
            patch.setattr(mcp.shared._otel, "_tracer", provider.get_tracer(SCOPE))
            theirs = _record(OpenTelemetryMiddleware(), sink, provider, message)
        mine = _record(ServerSpans(provider), sink, provider, message)
    finally:
        propagate.set_global_textmap(saved)
    assert mine == theirs
    meta = message["meta"]
    parented = message["ambient"] or (isinstance(meta, dict) and meta.get("traceparent") == TRACEPARENT)
    probe = message["method"] in HOUSEKEEPING and not parented  # a probe as a root is not sampled
    assert [s["kind"] for s in mine if s["scope"] == SCOPE] == ([] if probe else [trace.SpanKind.SERVER])


@pytest.mark.parametrize("mode", MODES)
def test_a_carried_traceparent_is_the_parent(mode: Mode) -> None:
    sink = RecordingSink()
    provider = make_provider(mode, Resource.create({"service.name": "echo"}), sink)
    message = {
        "method": "tools/call",
        "params": {"name": "echo"},
        "request_id": 3,
        "meta": {"traceparent": TRACEPARENT},
        "outcome": "tool error",
        "ambient": False,
    }
    _run(ServerSpans(provider), provider, message)
    (span,) = sink.spans
    assert span.parent == PARENT
    assert span.get_span_context().trace_id == PARENT.trace_id
    assert span.name == "tools/call echo"
    assert span.attributes["error.type"] == "tool_error"
    assert span.status.status_code is trace.StatusCode.ERROR


def test_the_sdks_own_server_spans_are_replaced_in_place_and_nothing_else() -> None:
    server = MCPServer("x")
    before = list(server.middleware)
    in_place_of_sdk_spans(server.middleware)
    assert [type(m) for m in server.middleware] == [
        ServerSpans if isinstance(m, OpenTelemetryMiddleware) else type(m) for m in before
    ]
    assert ServerSpans in {type(m) for m in server.middleware}
