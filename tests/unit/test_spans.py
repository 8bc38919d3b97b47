"""The mesh's lean tracer records what the OpenTelemetry SDK records, field for field.

The tests parametrized by `mode` hold for both providers an agent can run: the mesh's lean one
and the stock SDK one (`MESH_TRACING=sdk`); the others are about the lean one's own machinery.
"""

from __future__ import annotations

import time
from contextvars import Token
from typing import Any, cast

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import context, propagate, trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace.propagation import _SPAN_KEY  # pyright: ignore[reportPrivateUsage]

import mesh.tracing.current
from mesh.decisions import record_decision
from mesh.testing import RecordingSink
from mesh.tracing.otlp_wire import encode_batch
from mesh.tracing.spans import MeshTracerProvider, attach_span, current_span, detach, valid_span_context
from tests.unit.tracing_providers import MODES, Mode, make_provider

RESOURCE = Resource.create({"service.name": "prop", "mesh.name": "m"})

text = st.text(max_size=12)
scalar = st.one_of(
    text, st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(allow_nan=False)
)
value = st.one_of(
    scalar,
    st.none(),
    st.binary(max_size=4),
    st.lists(text, max_size=3),
    st.lists(st.integers(min_value=0, max_value=10**6), max_size=3),
    st.lists(st.one_of(text, st.none()), max_size=2),
    st.dictionaries(st.text(min_size=1, max_size=4), scalar, max_size=2),
    st.builds(object),
)
attributes = st.dictionaries(st.text(min_size=1, max_size=8), value, max_size=5)
span_plan = st.fixed_dictionaries(
    {
        "name": text,
        "kind": st.sampled_from(list(trace.SpanKind)),
        "attributes": attributes,
        "later": attributes,
        "events": st.lists(st.tuples(text, attributes, st.booleans()), max_size=4),  # True: as a decision
        "links": st.lists(attributes, max_size=3),
        "error": st.one_of(st.none(), text),
        "ok_first": st.booleans(),
        "raises": st.booleans(),
        "child": st.booleans(),
    }
)
limits = st.builds(
    SpanLimits,
    max_span_attributes=st.integers(min_value=1, max_value=6),
    max_events=st.integers(min_value=1, max_value=5),
    max_event_attributes=st.integers(min_value=1, max_value=6),
    max_links=st.integers(min_value=1, max_value=2),
    max_link_attributes=st.integers(min_value=1, max_value=6),
)
LINKED = trace.SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=trace.TraceFlags(1))


class _Boom(Exception):
    pass


def _run(tracer: trace.Tracer, plans: list[dict[str, Any]]) -> None:
    for plan in plans:
        try:
            links = [trace.Link(LINKED, attrs) for attrs in plan["links"]]
            with tracer.start_as_current_span(
                plan["name"], kind=plan["kind"], attributes=plan["attributes"], links=links
            ) as span:
                span.set_attributes(plan["later"])
                for name, attrs, decided in plan["events"]:
                    if decided:  # on the mesh's spans, deferred: made when the exporter reads them
                        record_decision(name, reason=name, alternatives=[name], attributes=attrs, span=span)
                    else:
                        span.add_event(name, attrs)
                if plan["ok_first"]:
                    span.set_status(trace.StatusCode.OK)
                if plan["error"] is not None:
                    span.set_status(trace.StatusCode.ERROR, plan["error"])
                if plan["child"]:
                    with tracer.start_as_current_span("child"):
                        record_decision("route", choice="b", alternatives=("b", "c"), confidence=0.5)
                if plan["raises"]:
                    raise _Boom("planned")
        except _Boom:
            pass


def _normalised(request: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
    """Ids and times differ between two runs; which span is whose parent must not."""
    ids: dict[bytes, int] = {}
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                span.parent_span_id = (
                    ids.setdefault(span.parent_span_id, len(ids)).to_bytes(8) if span.parent_span_id else b""
                )
                span.span_id = ids.setdefault(span.span_id, len(ids)).to_bytes(8)
                span.trace_id = b"\x01" * 16
                span.start_time_unix_nano = span.end_time_unix_nano = 0
                for event in span.events:
                    event.time_unix_nano = 0
                    for kv in event.attributes:
                        if kv.key == "exception.stacktrace":
                            kv.value.string_value = ""
    return request


@settings(max_examples=80, deadline=None)
@given(st.lists(span_plan, min_size=1, max_size=4), limits)
def test_the_lean_tracer_records_what_the_sdk_records(plans: list[dict[str, Any]], span_limits: SpanLimits) -> None:
    exporter = InMemorySpanExporter()
    sdk = TracerProvider(resource=RESOURCE, span_limits=span_limits, shutdown_on_exit=False)
    sdk.add_span_processor(SimpleSpanProcessor(exporter))
    _run(sdk.get_tracer("agentplex"), plans)
    sink = RecordingSink()
    _run(MeshTracerProvider(RESOURCE, sink, limits=span_limits).get_tracer("agentplex"), plans)

    expected = ExportTraceServiceRequest.FromString(encode_batch(exporter.get_finished_spans()))
    got = ExportTraceServiceRequest.FromString(encode_batch(sink.spans))
    assert _normalised(got) == _normalised(expected)


@pytest.mark.parametrize("mode", MODES)
def test_a_child_joins_its_parents_trace_across_a_traceparent(mode: Mode) -> None:
    sink = RecordingSink()
    tracer = make_provider(mode, RESOURCE, sink).get_tracer("t")
    carrier: dict[str, str] = {}
    with tracer.start_as_current_span("client", kind=trace.SpanKind.CLIENT) as client:
        propagate.inject(carrier)
    with tracer.start_as_current_span("server", context=propagate.extract(carrier), kind=trace.SpanKind.SERVER):
        pass
    client_span, server_span = sink.spans
    assert server_span.parent is not None
    assert server_span.parent.is_remote
    assert server_span.parent.span_id == client.get_span_context().span_id
    assert server_span.get_span_context().trace_id == client_span.get_span_context().trace_id


@pytest.mark.parametrize("mode", MODES)
def test_a_new_trace_id_starts_with_the_time_and_ends_random(mode: Mode) -> None:
    tracer = make_provider(mode, RESOURCE, RecordingSink()).get_tracer("t")
    before = time.time_ns()
    ids = [tracer.start_span("root").get_span_context().trace_id for _ in range(64)]
    after = time.time_ns()
    assert all(before // 10**9 <= trace_id >> 96 <= after // 10**9 for trace_id in ids)  # the second
    assert all(before * 256 // 10**9 <= trace_id >> 88 <= after * 256 // 10**9 for trace_id in ids)  # its 256ths
    assert len({trace_id & (2**88 - 1) for trace_id in ids}) == len(ids)  # 88 random bits each
    assert len({trace_id & 0xFF for trace_id in ids}) > 1  # the low byte too (W3C: the last 7 are random)


@pytest.mark.parametrize("mode", MODES)
def test_mesh_probes_start_no_trace_but_work_does(mode: Mode) -> None:
    sink = RecordingSink()
    tracer = make_provider(mode, RESOURCE, sink).get_tracer("t")
    with (
        tracer.start_as_current_span("tools/list", attributes={"mcp.method.name": "tools/list"}) as probe,
        tracer.start_as_current_span("inside the probe"),
    ):
        pass
    with (
        tracer.start_as_current_span("tools/call", attributes={"mcp.method.name": "tools/call"}),
        tracer.start_as_current_span("inside the call"),
    ):
        pass
    assert not probe.is_recording()
    assert probe.get_span_context().is_valid  # ids still travel, unsampled
    assert [s.name for s in sink.spans] == ["inside the call", "tools/call"]


@pytest.mark.parametrize("mode", MODES)
def test_an_sdk_sampler_is_obeyed(mode: Mode) -> None:
    sink = RecordingSink()
    tracer = make_provider(mode, RESOURCE, sink, sampler=ALWAYS_OFF).get_tracer("t")
    with tracer.start_as_current_span("work") as span:
        span.set_attribute("ignored", 1)
    assert sink.spans == []


def test_a_sampler_replaced_later_reaches_every_tracer_handed_out() -> None:
    sink = RecordingSink()
    provider = MeshTracerProvider(RESOURCE, sink)
    plain, scoped = provider.get_tracer("t"), provider.get_tracer("t", attributes={"team": "a"})
    with plain.start_as_current_span("before"):
        provider.sampler = ParentBased(ALWAYS_OFF)
        with plain.start_as_current_span("child of a sampled span"):
            pass
    for tracer in (plain, scoped):
        with tracer.start_as_current_span("off"):
            pass
    provider.sampler = None
    with scoped.start_as_current_span("on again"):
        pass
    assert [s.name for s in sink.spans] == ["child of a sampled span", "before", "on again"]


def test_a_provider_switched_off_makes_nothing_and_propagates_nothing_until_switched_back() -> None:
    sink = RecordingSink()
    provider = MeshTracerProvider(RESOURCE, sink)
    tracer = provider.get_tracer("t")
    provider.enabled = False
    carrier: dict[str, str] = {}
    with tracer.start_as_current_span("off") as span:
        propagate.inject(carrier)
        assert not span.get_span_context().is_valid
        assert not span.is_recording()
    assert carrier == {}
    provider.enabled = True
    with tracer.start_as_current_span("on again"):
        propagate.inject(carrier)
    assert [s.name for s in sink.spans] == ["on again"]
    assert "traceparent" in carrier


@pytest.mark.parametrize("mode", MODES)
def test_the_decorator_form_traces_each_call_sync_and_async(mode: Mode) -> None:
    sink = RecordingSink()
    tracer = make_provider(mode, RESOURCE, sink).get_tracer("t")

    @tracer.start_as_current_span("sync work")
    def work() -> int:
        return 1

    @tracer.start_as_current_span("async work")
    async def async_work() -> int:
        await anyio.lowlevel.checkpoint()
        return trace.get_current_span().get_span_context().span_id

    assert work() + work() == 2
    span_id = anyio.run(async_work)
    assert [s.name for s in sink.spans] == ["sync work", "sync work", "async work"]
    assert sink.spans[2].get_span_context().span_id == span_id


@pytest.mark.parametrize("mode", MODES)
def test_an_ended_span_ignores_changes_and_is_handed_over_once(mode: Mode, caplog: pytest.LogCaptureFixture) -> None:
    sink = RecordingSink()
    span = make_provider(mode, RESOURCE, sink).get_tracer("t").start_span("once")
    span.end()
    span.end()
    span.set_attribute("late", 1)
    span.add_event("late")
    span.update_name("renamed")
    span.set_status(trace.StatusCode.ERROR)
    (ended,) = sink.spans
    assert dict(ended.attributes) == {}
    assert list(ended.events) == []
    assert ended.name == "once"
    assert ended.status.status_code is trace.StatusCode.UNSET
    assert "ended span" in caplog.text


@pytest.mark.parametrize("mode", MODES)
def test_the_current_span_is_restored_after_the_block(mode: Mode) -> None:
    tracer = make_provider(mode, RESOURCE, RecordingSink()).get_tracer("t")
    before = trace.get_current_span()
    token = context.attach(context.get_current())
    try:
        with tracer.start_as_current_span("outer") as outer:
            with tracer.start_as_current_span("inner"):
                pass
            assert trace.get_current_span() is outer
    finally:
        context.detach(token)
    assert trace.get_current_span() is before


@pytest.mark.parametrize("mode", MODES)
def test_the_recording_sink_lists_decisions(mode: Mode) -> None:
    sink = RecordingSink()
    tracer = make_provider(mode, RESOURCE, sink).get_tracer("t")
    with tracer.start_as_current_span("work"):
        record_decision("route", choice="b", reason="nearest")
    assert sink.decisions() == [("work", "route", "b")]


@pytest.mark.parametrize("mode", MODES)
def test_a_decision_is_made_from_what_its_arguments_held_when_recorded(mode: Mode) -> None:
    sink = RecordingSink()
    tracer = make_provider(mode, RESOURCE, sink).get_tracer("t")
    alternatives = ["b", "c"]
    extra: dict[str, Any] = {"mesh.policy.ids": ["p1"]}
    with tracer.start_as_current_span("work"):
        record_decision("route", choice="b", alternatives=alternatives, attributes=extra)
        alternatives.append("d")
        extra["late"] = True
    (event,) = sink.spans[0].events
    assert event.attributes == {
        "mesh.decision.kind": "route",
        "mesh.decision.choice": "b",
        "mesh.decision.alternatives": ("b", "c"),
        "mesh.policy.ids": ("p1",),
    }


@pytest.mark.parametrize("mode", MODES)
def test_deferred_and_direct_events_share_the_event_limit_in_order(mode: Mode) -> None:
    sink = RecordingSink()
    tracer = make_provider(mode, RESOURCE, sink, limits=SpanLimits(max_events=2)).get_tracer("t")
    with tracer.start_as_current_span("work") as span:
        record_decision("route", choice="first")
        span.add_event("second")
        record_decision("retry", choice="third")
        span.add_event("fourth")
        record_decision("fallback", choice="fifth")
    (recorded,) = sink.spans
    assert recorded.dropped_events == 3
    assert [(e.name, e.attributes.get("mesh.decision.choice")) for e in recorded.events] == [
        ("fourth", None),
        ("mesh.decision", "fifth"),
    ]


@pytest.mark.parametrize("mode", MODES)
def test_a_decision_with_a_confidence_out_of_range_is_refused_at_once(mode: Mode) -> None:
    tracer = make_provider(mode, RESOURCE, RecordingSink()).get_tracer("t")
    with tracer.start_as_current_span("work"), pytest.raises(ValueError, match="between 0 and 1"):
        record_decision("route", choice="b", confidence=1.5)


def test_current_span_reads_what_opentelemetry_reads() -> None:
    tracer = MeshTracerProvider(RESOURCE, RecordingSink()).get_tracer("t")
    sdk_span = TracerProvider(resource=RESOURCE, shutdown_on_exit=False).get_tracer("t").start_span("sdk")
    remote = trace.NonRecordingSpan(LINKED)
    contexts = [
        None,
        context.Context(),
        trace.set_span_in_context(tracer.start_span("mesh")),
        trace.set_span_in_context(remote),
        trace.set_span_in_context(sdk_span),
        context.set_value("current-span", remote),  # a key of that name, not OpenTelemetry's own
        context.set_value(_SPAN_KEY, "not a span"),
    ]
    for carried in contexts:
        assert current_span(carried) is trace.get_current_span(carried)
    token = context.attach(trace.set_span_in_context(remote))
    try:
        assert current_span() is trace.get_current_span() is remote
    finally:
        context.detach(token)


def test_attach_span_and_detach_do_what_the_context_api_does(caplog: pytest.LogCaptureFixture) -> None:
    span = MeshTracerProvider(RESOURCE, RecordingSink()).get_tracer("t").start_span("mesh")
    outer = context.attach(context.set_value("k", "v"))  # what was current stays, with the span added
    try:
        before = context.get_current()
        token = attach_span(span)
        assert context.get_current() == trace.set_span_in_context(span, before)
        assert trace.get_current_span() is span
        detach(token)
        assert context.get_current() is before
        stale = attach_span(span)
        detach(stale)
        with caplog.at_level("ERROR"):
            detach(stale)  # used twice: logged as the context API logs it, not raised
        assert "Failed to detach context" in caplog.text
        assert context.get_current() is before
    finally:
        context.detach(outer)


def test_under_another_runtime_context_the_context_api_is_called(monkeypatch: pytest.MonkeyPatch) -> None:
    # With OTEL_PYTHON_CONTEXT naming another runtime context there is no contextvar to use directly.
    monkeypatch.setattr(mesh.tracing.current, "_CONTEXT_VAR", None)
    calls: list[str] = []
    attach, detach_api = context.attach, context.detach

    def counted_attach(ctx: context.Context) -> Token[context.Context]:
        calls.append("attach")
        return attach(ctx)

    def counted_detach(token: Token[context.Context]) -> None:
        calls.append("detach")
        detach_api(token)

    monkeypatch.setattr(context, "attach", counted_attach)
    monkeypatch.setattr(context, "detach", counted_detach)
    span = MeshTracerProvider(RESOURCE, RecordingSink()).get_tracer("t").start_span("mesh")
    token = attach_span(span)
    assert current_span() is trace.get_current_span() is span
    detach(token)
    assert current_span() is trace.INVALID_SPAN
    assert calls == ["attach", "detach"]


def test_a_valid_span_context_is_what_its_constructor_makes() -> None:
    flags, state = trace.TraceFlags(1), trace.TraceState([("k", "v")])
    made = valid_span_context((0xABC, 0xDEF, True, flags, state, True))
    assert made == trace.SpanContext(0xABC, 0xDEF, True, flags, state)
    assert type(made) is trace.SpanContext
    assert (made.trace_id, made.span_id, made.is_remote, made.trace_flags, made.trace_state, made.is_valid) == (
        0xABC,
        0xDEF,
        True,
        flags,
        state,
        True,
    )


def test_a_decision_on_a_non_recording_span_builds_nothing() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise AssertionError("the decision's attributes were built")

    alternatives = cast("list[str]", [Unprintable()])
    record_decision("route", choice="b", alternatives=alternatives, span=trace.INVALID_SPAN)
    with pytest.raises(ValueError, match="between 0 and 1"):  # its arguments are still checked
        record_decision("route", choice="b", confidence=2.0, span=trace.INVALID_SPAN)
