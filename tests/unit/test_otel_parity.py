"""Every way a span can start and end records the same with the mesh's provider as with the SDK's.

Hypothesis plans trees of spans: started with `start_span` (as a `with` block, by hand, through
`use_span`) or `start_as_current_span` (a block, a block that does not end it, a decorator on a
sync or async function); the flags `record_exception` and `set_status_on_exception`; explicit
status changes, renames, events, links at start and later, recorded exceptions; sampler decisions
including RECORD_ONLY; remote parents; and endings by return, an exception, a `BaseException` and
real anyio cancellation. Both providers run the same plan; an SDK processor added to each sees
the same starts and ends, and the exporter sees the same sampled spans.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import context, trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.util.types import Attributes

from mesh.testing import RecordingSink
from mesh.tracing.lean_provider import MeshTracerProvider
from mesh.tracing.otlp_wire import encode_batch
from mesh.tracing.sampling import MeshSampler
from mesh.tracing.trace_ids import MeshIdGenerator

RESOURCE = Resource.create({"service.name": "parity", "mesh.name": "m"})
REMOTE_TRACE = 0x6B0FA219 << 96 | 0xABCDEF
STATE = TraceState([("vendor", "v")])


class Boom(ValueError):
    """An error the traced code raises."""


class Halt(BaseException):
    """Not an error: a `BaseException` that is not an `Exception` (as `GeneratorExit` is)."""


class ByName(Sampler):
    """Each span's decision comes from its plan, looked up by name."""

    def __init__(self, decisions: dict[str, Decision]) -> None:
        self.decisions = decisions

    def should_sample(
        self,
        parent_context: context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        decision = self.decisions.get(name.removesuffix(" renamed"), Decision.RECORD_AND_SAMPLE)
        parent = trace.get_current_span(parent_context).get_span_context()
        state = parent.trace_state if parent.is_valid else None
        return SamplingResult(decision, None if decision is Decision.DROP else attributes, state)

    def get_description(self) -> str:
        return "ByName"


class Collect(SpanProcessor):
    """What an SDK processor is handed: each start (name, attributes, parent's role) and each end."""

    def __init__(self) -> None:
        self.started: list[tuple[str, dict[str, Any], bool]] = []
        self.ended: list[ReadableSpan] = []

    def on_start(self, span: Any, parent_context: context.Context | None = None) -> None:
        self.started.append((span.name, dict(span.attributes), span.parent is not None))

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


# -- plans -------------------------------------------------------------------------------------

HOWS = ("with_start_span", "manual", "use_span", "current", "current_no_end", "decorator", "async_decorator")
ENDINGS = ("return", "raise", "halt", "cancel")
scalar = st.one_of(st.text(max_size=6), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False, width=32))
attributes = st.dictionaries(st.sampled_from(["a", "b", "c", "mcp.method.name"]), scalar, max_size=3)
statuses = st.one_of(
    st.tuples(st.sampled_from(list(StatusCode)), st.one_of(st.none(), st.text(max_size=5))).map(
        lambda pair: ("code", *pair)
    ),
    st.tuples(st.sampled_from(list(StatusCode)), st.one_of(st.none(), st.text(max_size=5))).map(
        lambda pair: ("object", *pair)
    ),
)
link_targets = st.sampled_from(["valid", "invalid", "invalid_with_state"])
actions = st.one_of(
    st.tuples(st.just("attribute"), st.sampled_from(["a", "z"]), scalar),
    st.tuples(st.just("event"), st.text(max_size=4), attributes),
    st.tuples(st.just("status"), statuses),
    st.tuples(st.just("rename")),
    st.tuples(st.just("record"), st.booleans()),
    st.tuples(st.just("link"), link_targets, attributes),
)


@st.composite
def span_plans(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    children = draw(st.lists(span_plans(depth + 1), max_size=2)) if depth < 2 else []
    return {
        "how": draw(st.sampled_from(HOWS)),
        "kind": draw(st.sampled_from(list(SpanKind))),
        "record_exception": draw(st.booleans()),
        "set_status_on_exception": draw(st.booleans()),
        "decision": draw(st.sampled_from([Decision.RECORD_AND_SAMPLE, Decision.RECORD_ONLY, Decision.DROP])),
        "attributes": draw(attributes),
        "probe": draw(st.booleans()),
        "links": draw(st.lists(st.tuples(link_targets, attributes), max_size=2)),
        "parent": draw(st.sampled_from(["ambient", "ambient", "remote_sampled", "remote_unsampled", "none"])),
        "actions": draw(st.lists(actions, max_size=4)),
        "children": children,
        "ending": draw(st.sampled_from(ENDINGS)) if depth or draw(st.booleans()) else "return",
    }


def _name(plans: list[dict[str, Any]]) -> None:
    """Give every span of the plans a unique name, in order."""
    count = 0

    def visit(plan: dict[str, Any]) -> None:
        nonlocal count
        plan["name"] = f"s{count}"
        count += 1
        for child in plan["children"]:
            visit(child)

    for plan in plans:
        visit(plan)


def _decisions(plans: list[dict[str, Any]]) -> dict[str, Decision]:
    found: dict[str, Decision] = {}

    def visit(plan: dict[str, Any]) -> None:
        found[plan["name"]] = plan["decision"]
        for child in plan["children"]:
            visit(child)

    for plan in plans:
        visit(plan)
    return found


def _link_context(target: str) -> SpanContext:
    if target == "valid":
        return SpanContext(0x1234, 0x5678, True, TraceFlags(1))
    return SpanContext(0, 0, False, TraceFlags(0), STATE if target == "invalid_with_state" else None)


def _parent_context(parent: str) -> context.Context | None:
    if parent == "ambient":
        return None
    if parent == "none":
        return context.Context()  # no parent at all: a root, whatever is current
    flags = TraceFlags(1 if parent == "remote_sampled" else 0)
    return trace.set_span_in_context(trace.NonRecordingSpan(SpanContext(REMOTE_TRACE, 0x77, True, flags, STATE)))


# -- running a plan ----------------------------------------------------------------------------


class Runner:
    """Runs plans against one tracer, noting what each started span looked like."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer
        self.seen: list[tuple[str, bool, int, bool]] = []  # name, recording, trace flags, valid

    async def run(self, plans: list[dict[str, Any]]) -> None:
        for plan in plans:
            with anyio.CancelScope() as scope:
                with contextlib.suppress(Boom, Halt):
                    await self.span(plan, scope)

    async def span(self, plan: dict[str, Any], scope: anyio.CancelScope) -> None:
        tracer = self.tracer
        attrs = {**plan["attributes"], **({"mcp.method.name": "tools/list"} if plan["probe"] else {})}
        options: dict[str, Any] = {
            "context": _parent_context(plan["parent"]),
            "kind": plan["kind"],
            "attributes": attrs,
            "links": [Link(_link_context(target), link_attrs) for target, link_attrs in plan["links"]],
            "record_exception": plan["record_exception"],
            "set_status_on_exception": plan["set_status_on_exception"],
        }
        name, how = plan["name"], plan["how"]
        if how == "with_start_span":
            with tracer.start_span(name, **options) as span:
                await self.body(span, plan, scope)
        elif how == "manual":
            span = tracer.start_span(name, **options)
            try:
                await self.body(span, plan, scope)
            finally:
                span.end()
        elif how == "use_span":
            span = tracer.start_span(name, **options)
            with trace.use_span(
                span,
                end_on_exit=True,
                record_exception=plan["record_exception"],
                set_status_on_exception=plan["set_status_on_exception"],
            ):
                await self.body(span, plan, scope)
        elif how == "current":
            with tracer.start_as_current_span(name, **options) as span:
                await self.body(span, plan, scope)
        elif how == "current_no_end":
            span = trace.INVALID_SPAN
            try:
                with tracer.start_as_current_span(name, end_on_exit=False, **options) as span:
                    await self.body(span, plan, scope)
            finally:
                span.end()  # by hand, after the block
        elif how == "decorator":

            @tracer.start_as_current_span(name, **options)
            def sync_work() -> None:
                span = trace.get_current_span()
                self.note(name, span)
                self.act(span, plan)
                if plan["ending"] in ("raise", "halt"):
                    raise Boom("planned") if plan["ending"] == "raise" else Halt()

            sync_work()  # a sync function has no children and cannot be cancelled inside
        else:

            @tracer.start_as_current_span(name, **options)
            async def async_work() -> None:
                await self.body(trace.get_current_span(), plan, scope)

            await async_work()

    async def body(self, span: trace.Span, plan: dict[str, Any], scope: anyio.CancelScope) -> None:
        self.note(plan["name"], span)
        self.act(span, plan)
        for child in plan["children"]:
            await self.span(child, scope)
        ending = plan["ending"]
        if ending == "raise":
            raise Boom(f"planned in {plan['name']}")
        if ending == "halt":
            raise Halt()
        if ending == "cancel":
            scope.cancel()
            await anyio.lowlevel.checkpoint()  # raises the cancellation here, inside the span

    def note(self, name: str, span: trace.Span) -> None:
        ids = span.get_span_context()
        self.seen.append((name, span.is_recording(), int(ids.trace_flags), ids.is_valid))

    def act(self, span: trace.Span, plan: dict[str, Any]) -> None:
        for action in plan["actions"]:
            match action:
                case ("attribute", key, value):
                    span.set_attribute(key, value)
                case ("event", name, attrs):
                    span.add_event(name, attrs)
                case ("status", ("code", code, description)):
                    span.set_status(code, description)
                case ("status", ("object", code, description)):
                    span.set_status(Status(code, description if code is StatusCode.ERROR else None))
                case ("rename",):
                    span.update_name(f"{plan['name']} renamed")
                case ("record", escaped):
                    span.record_exception(Boom("recorded"), {"extra": 1}, escaped=escaped)
                case ("link", target, attrs):
                    span.add_link(_link_context(target), attrs)
                case _:
                    raise AssertionError(action)


# -- comparing ---------------------------------------------------------------------------------

_SCOPE_ID = re.compile(r"[0-9a-f]{8,}")


def _normalised(spans: Sequence[Any]) -> ExportTraceServiceRequest:
    """The spans' OTLP request with run-specific values (ids, times, stack traces, scope ids) made equal;
    which span is whose parent is kept."""
    request = ExportTraceServiceRequest.FromString(encode_batch(spans))
    ids: dict[bytes, int] = {}
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if span.parent_span_id:
                    span.parent_span_id = ids.setdefault(span.parent_span_id, len(ids)).to_bytes(8)
                span.span_id = ids.setdefault(span.span_id, len(ids)).to_bytes(8)
                if span.trace_id != REMOTE_TRACE.to_bytes(16):
                    span.trace_id = b"\x01" * 16
                span.start_time_unix_nano = span.end_time_unix_nano = 0
                span.status.message = _SCOPE_ID.sub("ID", span.status.message)
                for event in span.events:
                    event.time_unix_nano = 0
                    for kv in event.attributes:
                        if kv.key == "exception.stacktrace":
                            kv.value.string_value = ""
                        elif kv.key == "exception.message":
                            kv.value.string_value = _SCOPE_ID.sub("ID", kv.value.string_value)
    return request


def _console(spans: Sequence[ReadableSpan]) -> list[dict[str, Any]]:
    """What the SDK's console exporter prints for each span (`to_json`), run-specific values blanked."""
    shown: list[dict[str, Any]] = []
    for span in spans:
        data = json.loads(span.to_json())
        data["context"] = {"trace_state": data["context"]["trace_state"]}
        data["parent_id"] = data["parent_id"] is not None
        data["start_time"] = data["end_time"] = None
        data["status"]["description"] = _SCOPE_ID.sub("ID", data["status"].get("description") or "")
        for event in data["events"]:
            event["timestamp"] = None
            event["attributes"].pop("exception.stacktrace", None)
            if "exception.message" in event["attributes"]:
                event["attributes"]["exception.message"] = _SCOPE_ID.sub("ID", event["attributes"]["exception.message"])
        for link in data["links"]:
            link["context"] = {"trace_state": link["context"]["trace_state"]}
        shown.append(data)
    return shown


def _run_both(
    plans: list[dict[str, Any]], limits: SpanLimits, default_sampler: bool
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    decisions = _decisions(plans)
    sdk_exported, sdk_seen = InMemorySpanExporter(), Collect()
    sdk = TracerProvider(
        resource=RESOURCE,
        sampler=MeshSampler() if default_sampler else ByName(decisions),
        span_limits=limits,
        id_generator=MeshIdGenerator(),
        shutdown_on_exit=False,
    )
    sdk.add_span_processor(sdk_seen)
    sdk.add_span_processor(SimpleSpanProcessor(sdk_exported))
    sdk_runner = Runner(sdk.get_tracer("parity"))
    anyio.run(sdk_runner.run, plans)

    sink, mesh_seen = RecordingSink(), Collect()
    mesh = MeshTracerProvider(RESOURCE, sink, None if default_sampler else ByName(decisions), limits)
    mesh.add_span_processor(mesh_seen)
    mesh_runner = Runner(mesh.get_tracer("parity"))
    anyio.run(mesh_runner.run, plans)

    def outcome(seen: Collect, exported: Sequence[Any], runner: Runner) -> tuple[Any, ...]:
        return (
            runner.seen,
            seen.started,
            _normalised(seen.ended),
            _console(seen.ended),
            _normalised(exported),
        )

    return outcome(sdk_seen, sdk_exported.get_finished_spans(), sdk_runner), outcome(mesh_seen, sink.spans, mesh_runner)


limits = st.builds(
    SpanLimits,
    max_span_attributes=st.integers(min_value=1, max_value=4),
    max_events=st.integers(min_value=1, max_value=4),
    max_event_attributes=st.integers(min_value=1, max_value=4),
    max_links=st.integers(min_value=1, max_value=2),
    max_link_attributes=st.integers(min_value=1, max_value=4),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(span_plans(), min_size=1, max_size=3), limits, st.booleans())
def test_every_way_a_span_starts_and_ends_records_what_the_sdk_records(
    plans: list[dict[str, Any]], span_limits: SpanLimits, default_sampler: bool
) -> None:
    _name(plans)
    theirs, mine = _run_both(plans, span_limits, default_sampler)
    assert mine[0] == theirs[0]  # each span as started: recording, flags, ids valid
    assert mine[1] == theirs[1]  # what a processor's on_start sees
    assert mine[2] == theirs[2]  # what a processor's on_end sees, RECORD_ONLY spans included
    assert mine[3] == theirs[3]  # what the console exporter prints
    assert mine[4] == theirs[4]  # what the exporter gets: sampled spans only


def _one(how: str, ending: str, **flags: bool) -> dict[str, Any]:
    return {
        "name": "s0",
        "how": how,
        "kind": SpanKind.INTERNAL,
        "record_exception": flags.get("record_exception", True),
        "set_status_on_exception": flags.get("set_status_on_exception", True),
        "decision": Decision.RECORD_AND_SAMPLE,
        "attributes": {},
        "probe": False,
        "links": [],
        "parent": "ambient",
        "actions": [],
        "children": [],
        "ending": ending,
    }


@pytest.mark.parametrize("ending", ["raise", "halt", "cancel"])
def test_an_exception_leaving_a_start_span_block_is_an_error_with_an_exception_event(ending: str) -> None:
    sink = RecordingSink()
    anyio.run(Runner(MeshTracerProvider(RESOURCE, sink).get_tracer("t")).run, [_one("with_start_span", ending)])
    (span,) = sink.spans
    assert span.status.status_code is StatusCode.ERROR
    ((name, attributes),) = [(e.name, e.attributes) for e in span.events]
    assert name == "exception"
    assert attributes["exception.escaped"] == "True"


def test_the_flags_of_start_span_turn_the_record_and_the_status_off() -> None:
    sink = RecordingSink()
    plan = _one("with_start_span", "raise", record_exception=False, set_status_on_exception=False)
    anyio.run(Runner(MeshTracerProvider(RESOURCE, sink).get_tracer("t")).run, [plan])
    (span,) = sink.spans
    assert span.status.status_code is StatusCode.UNSET
    assert span.events == []


def test_record_only_is_recorded_for_processors_but_not_exported() -> None:
    sink, seen = RecordingSink(), Collect()
    provider = MeshTracerProvider(RESOURCE, sink, ByName({"quiet": Decision.RECORD_ONLY}))
    provider.add_span_processor(seen)
    with provider.get_tracer("t").start_as_current_span("quiet") as span:
        assert span.is_recording()
        assert not span.get_span_context().trace_flags.sampled
        span.set_attribute("k", "v")
    assert sink.spans == []
    (ended,) = seen.ended
    assert ended.attributes == {"k": "v"}


def test_a_processor_that_raises_is_logged_and_the_span_still_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(SpanProcessor):
        def on_start(self, span: Any, parent_context: context.Context | None = None) -> None:
            raise RuntimeError("on start")

        def on_end(self, span: ReadableSpan) -> None:
            raise RuntimeError("on end")

    sink = RecordingSink()
    provider = MeshTracerProvider(RESOURCE, sink)
    provider.add_span_processor(Broken())
    with provider.get_tracer("t").start_as_current_span("work"):
        pass
    assert [s.name for s in sink.spans] == ["work"]
    assert "failed on start" in caplog.text
    assert "failed on end" in caplog.text


def test_a_processor_added_later_gets_the_spans_that_start_after() -> None:
    sink, seen = RecordingSink(), Collect()
    provider = MeshTracerProvider(RESOURCE, sink)
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("before"):
        pass
    provider.add_span_processor(seen)
    with tracer.start_as_current_span("after"):
        pass
    assert [s.name for s in sink.spans] == ["before", "after"]
    assert [name for name, _, _ in seen.started] == ["after"]
    assert [s.name for s in seen.ended] == ["after"]
