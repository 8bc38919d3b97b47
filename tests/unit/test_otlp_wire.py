"""The direct OTLP encoder writes exactly what OpenTelemetry's reference encoder writes, cached or not."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mesh.decisions import record_decision
from mesh.testing import RecordingSink
from mesh.tracing.otlp_wire import encode_batch
from mesh.tracing.spans import MeshTracerProvider

text = st.text(max_size=20)
scalar = st.one_of(
    text, st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(allow_nan=False)
)
value = st.one_of(scalar, st.lists(text, max_size=3), st.lists(st.integers(min_value=0, max_value=10**6), max_size=3))
attributes = st.dictionaries(st.text(min_size=1, max_size=12), value, max_size=5)
span_plan = st.fixed_dictionaries(
    {
        "name": text,
        "kind": st.sampled_from(list(trace.SpanKind)),
        "attributes": attributes,
        "events": st.lists(st.tuples(text, attributes), max_size=3),
        "error": st.one_of(st.none(), text),
        "child": st.booleans(),
    }
)


def _record(plans: list[dict[str, Any]]) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "prop", "mesh.name": "m"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracers = [provider.get_tracer("agentplex"), provider.get_tracer("mcp-python-sdk", "2.3.0")]
    for i, plan in enumerate(plans):
        tracer = tracers[i % 2]
        with tracer.start_as_current_span(plan["name"], kind=plan["kind"], attributes=plan["attributes"]) as span:
            for name, attrs in plan["events"]:
                span.add_event(name, attrs)
            if plan["error"] is not None:
                span.set_status(trace.StatusCode.ERROR, plan["error"])
            if plan["child"]:
                with tracer.start_as_current_span("child"):
                    pass
    provider.shutdown()
    return list(exporter.get_finished_spans())


@settings(max_examples=60, deadline=None)
@given(st.lists(span_plan, min_size=1, max_size=6))
def test_the_direct_encoder_decodes_to_the_reference_request(plans: list[dict[str, Any]]) -> None:
    spans = _record(plans)
    assert ExportTraceServiceRequest.FromString(encode_batch(spans)) == encode_spans(spans)


def test_an_empty_batch_is_an_empty_request() -> None:
    assert encode_batch([]) == b""


def _array(*values: AnyValue) -> AnyValue:
    return AnyValue(array_value=ArrayValue(values=values))


def test_equal_values_of_other_types_keep_their_own_type() -> None:
    # 1 == 1.0 == True in Python, so an encoding cache keyed on values alone hands one the other's bytes.
    sink = RecordingSink()
    tracer = MeshTracerProvider(Resource.create({"service.name": "t"}), sink).get_tracer("t")
    one, yes, real = AnyValue(int_value=1), AnyValue(bool_value=True), AnyValue(double_value=1.0)
    cases: list[tuple[object, AnyValue]] = [
        (1, one),
        (True, yes),
        (1.0, real),
        ((1, 1), _array(one, one)),
        ((True, 1), _array(yes, one)),
        ((1.0, 1.0), _array(real, real)),
    ]
    for value, _ in cases * 2:  # the second round is served from the caches
        with tracer.start_as_current_span("s", attributes={"v": value, "w": value}) as span:  # pyright: ignore[reportArgumentType]
            span.add_event("e", {"v": value})  # pyright: ignore[reportArgumentType]
    request = ExportTraceServiceRequest.FromString(encode_batch(sink.spans))
    got = [span for resource in request.resource_spans for scope in resource.scope_spans for span in scope.spans]
    for (_, expected), span in zip(cases * 2, got, strict=True):
        assert [kv.value for kv in span.attributes] == [expected, expected]
        assert [kv.value for kv in span.events[0].attributes] == [expected]


def test_spans_of_several_resources_and_scopes_are_grouped_as_the_reference_groups_them() -> None:
    spans: list[ReadableSpan] = []
    for resource in (
        Resource.create({"service.name": "triage"}),
        Resource.create({"service.name": "crm"}, schema_url="https://opentelemetry.io/schemas/1.21.0"),
    ):
        exporter = InMemorySpanExporter()
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        plain = provider.get_tracer("agentplex")
        versioned = provider.get_tracer("mcp-python-sdk", "2.3.0", "https://opentelemetry.io/schemas/1.24.0")
        for tracer in (plain, versioned, plain):  # interleaved: each scope's spans gather under it
            with tracer.start_as_current_span("work", attributes={"n": 1}):
                pass
        spans += exporter.get_finished_spans()
        provider.shutdown()
    request = ExportTraceServiceRequest.FromString(encode_batch(spans))
    assert request == encode_spans(spans)
    assert [len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans] == [2, 1, 2, 1]


def _decisions(request: ExportTraceServiceRequest) -> list[list[tuple[str, AnyValue]]]:
    spans = [span for resource in request.resource_spans for scope in resource.scope_spans for span in scope.spans]
    return [[(kv.key, kv.value) for kv in event.attributes] for span in spans for event in span.events]


def test_a_decision_is_encoded_from_its_arguments_as_its_made_event_would_be() -> None:
    # The encoder keys a deferred decision on its arguments: equal values of other types, other
    # limits, and arguments marshal cannot write must each still encode as their own made event.
    class Opaque:
        def __str__(self) -> str:
            return "opaque"

    arguments: list[dict[str, Any]] = [
        {"choice": "b", "attributes": {"n": 1}},
        {"choice": "b", "attributes": {"n": True}},
        {"choice": "b", "attributes": {"n": 1.0}},
        {"choice": "b", "alternatives": ("x", "y")},
        {"choice": "b", "alternatives": [Opaque()]},  # marshal cannot write it
        {"choice": "a much longer choice", "reason": "why", "confidence": 0.5},
    ]
    for limits in (SpanLimits(), SpanLimits(max_attribute_length=4), SpanLimits(max_event_attributes=2)):
        sink = RecordingSink()
        tracer = MeshTracerProvider(Resource.create({"service.name": "t"}), sink, limits=limits).get_tracer("t")
        for kwargs in arguments * 2:  # the second round is served from the cache
            with tracer.start_as_current_span("s") as span:
                record_decision("route", span=span, **kwargs)
        deferred = ExportTraceServiceRequest.FromString(encode_batch(sink.spans))
        for span in sink.spans:
            assert span.events  # made now, so the encoder reads them as ordinary events
        made = ExportTraceServiceRequest.FromString(encode_batch(sink.spans))
        assert _decisions(deferred) == _decisions(made)
        assert len(set(map(str, _decisions(made)))) == len(arguments)  # 1, True and 1.0 each their own
