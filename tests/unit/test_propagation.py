"""`MeshPropagator` extracts and injects what OpenTelemetry's default propagator does, value for value."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import baggage, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context, create_key
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import CarrierValT, DefaultGetter, DefaultSetter, TextMapPropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mesh.testing import RecordingSink
from mesh.tracing import propagation
from mesh.tracing.propagation import MeshPropagator, carried_context
from tests.unit.tracing_providers import MODES, Mode, make_provider

REFERENCE = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
MESH = MeshPropagator()
OTHER_KEY = create_key("other")

hex_id = st.one_of(
    st.integers(min_value=0, max_value=2**128 - 1).map("{:032x}".format),
    st.just("0" * 32),
)
span_hex = st.one_of(st.integers(min_value=0, max_value=2**64 - 1).map("{:016x}".format), st.just("0" * 16))
flags = st.integers(min_value=0, max_value=255).map("{:02x}".format)
version = st.sampled_from(["00", "00", "00", "01", "ff", "0g", "0"])
common = st.tuples(hex_id, span_hex, flags).map("-".join).map("00-{}".format)
"""A traceparent as the mesh writes it: what takes the direct path."""
traceparent = st.one_of(
    common,
    st.tuples(version, hex_id, span_hex, flags).map("-".join),
    st.tuples(common, st.sampled_from(["-x", " ", "\n"])).map("".join),
    st.tuples(st.just(" 00"), hex_id.map(str.upper), span_hex, flags).map("-".join),
    st.text(max_size=60),
    st.lists(st.text(max_size=8), max_size=2),
    st.integers(),
    st.none(),
)
tracestate = st.one_of(st.sampled_from(["vendor=value", "a=1,b=2", "", "not a state", "k=v,,x"]), st.none())
baggage_header = st.one_of(st.sampled_from(["k=v", "a=1,b=2;prop", "mesh.data_class=pii", "=broken", ""]), st.none())


@st.composite
def carriers(draw: st.DrawFn) -> dict[str, Any]:
    """A `_meta` as the mesh sends it (half the time), or with any of the three keys, well formed or not."""
    if draw(st.booleans()):
        return {"traceparent": draw(common), "agentplex/budget_ms": 5000}
    carrier: dict[str, Any] = {}
    if draw(st.booleans()):
        carrier["traceparent"] = draw(traceparent)
    if draw(st.booleans()):
        carrier["tracestate"] = draw(tracestate)
    if draw(st.booleans()):
        carrier["baggage"] = draw(baggage_header)
    if draw(st.booleans()):
        carrier["agentplex/caller"] = {"name": "a"}
    return carrier


contexts = st.one_of(st.none(), st.just(Context()), st.integers().map(lambda v: Context({OTHER_KEY: v})))


def view(context: Context) -> dict[str, Any]:
    """A context's values, its span compared by the span's ids (spans have no value equality)."""
    return {key: value.get_span_context() if isinstance(value, trace.Span) else value for key, value in context.items()}


@settings(max_examples=400, deadline=None)
@given(carriers(), contexts)
def test_extract_matches_the_default_propagator(carrier: dict[str, Any], context: Context | None) -> None:
    assert outcome(MESH, carrier, context) == outcome(REFERENCE, carrier, context)


def outcome(propagator: TextMapPropagator, carrier: dict[str, Any], context: Context | None) -> object:
    """What extracting gives: the context's values, or the kind of error (the default raises on some junk)."""
    try:
        return view(propagator.extract(dict(carrier), context))
    except Exception as exc:
        return type(exc)


span_contexts = st.builds(
    SpanContext,
    trace_id=st.one_of(st.just(0), st.integers(min_value=0, max_value=2**128 - 1)),
    span_id=st.one_of(st.just(0), st.integers(min_value=0, max_value=2**64 - 1)),
    is_remote=st.booleans(),
    trace_flags=st.integers(min_value=0, max_value=255).map(TraceFlags),
    trace_state=st.one_of(st.none(), st.just(TraceState([("vendor", "value"), ("other", "1")]))),
)
baggages = st.dictionaries(
    st.sampled_from(["mesh.data_class", "k", "user id"]), st.sampled_from(["pii", "v w"]), max_size=2
)
carried_before = st.dictionaries(st.sampled_from(["traceparent", "x"]), st.text(max_size=4))


def context_of(span_context: SpanContext | None, entries: dict[str, str], current: bool) -> Context | None:
    context: Context | None = Context() if not current else None
    if span_context is not None:
        context = trace.set_span_in_context(NonRecordingSpan(span_context), context)
    for key, value in entries.items():
        context = baggage.set_baggage(key, value, context)
    return context


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.none(), span_contexts), baggages, carried_before)
def test_inject_matches_the_default_propagator(
    span_context: SpanContext | None, entries: dict[str, str], before: dict[str, str]
) -> None:
    context = context_of(span_context, entries, current=False)
    mine, theirs = dict(before), dict(before)
    MESH.inject(mine, context)
    REFERENCE.inject(theirs, context)
    assert mine == theirs


def test_inject_reads_the_current_context() -> None:
    span = NonRecordingSpan(SpanContext(0x6B0FA219 << 96 | 7, 9, False, TraceFlags(1)))
    with trace.use_span(span):
        carrier: dict[str, str] = {}
        MESH.inject(carrier)
    assert carrier == {"traceparent": f"00-{0x6B0FA219 << 96 | 7:032x}-{9:016x}-01"}


def test_other_carriers_and_accessors_take_the_generic_path() -> None:
    carrier = {"traceparent": f"00-{'a' * 32}-{'b' * 16}-01"}
    extracted = MESH.extract(carrier, getter=DefaultGetter())
    assert trace.get_current_span(extracted).get_span_context().trace_id == int("a" * 32, 16)
    written: MutableMapping[str, CarrierValT] = {}
    MESH.inject(written, extracted, setter=DefaultSetter())
    assert written == carrier
    assert MESH.fields == REFERENCE.fields


@pytest.fixture
def global_textmap() -> Iterator[None]:
    saved = propagate.get_global_textmap()
    yield
    propagate.set_global_textmap(saved)


@pytest.mark.usefixtures("global_textmap")
def test_install_replaces_only_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    propagate.set_global_textmap(CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()]))
    monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext,baggage")
    assert not propagation.install()  # configured explicitly: left as configured
    monkeypatch.delenv("OTEL_PROPAGATORS")
    assert propagation.install()
    assert isinstance(propagate.get_global_textmap(), MeshPropagator)
    assert propagation.install()  # twice is once
    chosen = CompositePropagator([TraceContextTextMapPropagator()])
    propagate.set_global_textmap(chosen)
    assert not propagation.install()  # the application's own choice stays
    assert propagate.get_global_textmap() is chosen


@pytest.mark.usefixtures("global_textmap")
@pytest.mark.parametrize("receiver", MODES)
@pytest.mark.parametrize("sender", MODES)
def test_a_span_of_either_provider_travels_in_meta_to_either(sender: Mode, receiver: Mode) -> None:
    propagate.set_global_textmap(MESH)
    resource = Resource.create({"service.name": "p"})
    sent, received = RecordingSink(), RecordingSink()
    with make_provider(sender, resource, sent).get_tracer("t").start_as_current_span("client"):
        meta: dict[str, Any] = {}
        propagate.inject(meta)
    with (
        make_provider(receiver, resource, received)
        .get_tracer("t")
        .start_as_current_span("server", context=carried_context(meta))
    ):
        pass
    (client,), (server,) = sent.spans, received.spans
    assert meta["traceparent"].endswith("-03")  # sampled, and the id's low 56 bits random (W3C level 2)
    assert server.parent == SpanContext(client.context.trace_id, client.context.span_id, True, TraceFlags(3))
    assert server.context.trace_id == client.context.trace_id
    assert server.context.trace_flags == TraceFlags(3)


def test_carried_context_is_none_without_a_valid_parent() -> None:
    for meta in (None, {}, {"traceparent": "00-junk"}, {"traceparent": f"00-{'0' * 32}-{'1' * 16}-01"}):
        assert carried_context(meta) is None
