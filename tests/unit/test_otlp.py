"""OTLP payloads: protobuf and JSON decode to the same rows, and anything malformed is one OtlpError."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from mesh.decisions import record_decision
from mesh.testing import RecordingSink
from mesh.tracing.otlp_wire import encode_batch
from mesh.tracing.spans import MeshTracerProvider
from mesh.wire import SpanEventRecord, SpanRecord
from registry.otlp import (
    OtlpError,
    decode_json,
    decode_protobuf,
    encode_json,
    encode_request,
    encode_spans,
    foreign_service,
    governance_records,
    parse_protobuf,
    span_bodies,
    span_key,
    span_record,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def records() -> list[SpanRecord]:
    decision = SpanEventRecord(
        name="mesh.decision",
        time_ns=1_700_000_000_050_000_000,
        attributes={"mesh.decision.kind": "route", "mesh.decision.alternatives": ["billing", "tech"]},
    )
    return [
        SpanRecord(
            trace_id=TRACE,
            span_id="00f067aa0ba902b7",
            name="MCP send tools/call triage",
            kind="client",
            agent="client",
            start_ns=1_700_000_000_000_000_000,
            end_ns=1_700_000_000_100_000_000,
            status="ok",
            attributes={"mcp.method.name": "tools/call", "retries": 2, "ratio": 0.5, "sampled": True},
        ),
        SpanRecord(
            trace_id=TRACE,
            span_id="53995c3f42cd8ad8",
            parent_id="00f067aa0ba902b7",
            name="tools/call triage",
            kind="server",
            agent="support-triage",
            instance="i-1",
            start_ns=1_700_000_000_010_000_000,
            end_ns=1_700_000_000_090_000_000,
            status="error",
            status_message="boom",
            attributes={"nested": {"a": [1, "x"]}},
            events=[decision],
        ),
    ]


def rows_back(rows: list[Any]) -> list[SpanRecord]:
    return [span_record(row[0].hex(), row[3], row[4], row[-1]) for row in rows]


def test_a_protobuf_request_round_trips_every_field() -> None:
    assert rows_back(decode_protobuf(encode_spans(records()))) == records()


def test_an_otlp_json_request_round_trips_every_field() -> None:
    assert rows_back(decode_json(encode_json(records()))) == records()


def test_json_and_protobuf_give_the_same_rows() -> None:
    assert decode_json(encode_json(records())) == decode_protobuf(encode_spans(records()))


def test_rows_carry_agent_instance_times_status_and_tool() -> None:
    client, server = decode_protobuf(encode_spans(records()))
    assert client[:9] == (
        bytes.fromhex(TRACE),
        span_key(bytes.fromhex("00f067aa0ba902b7")),
        1,
        "client",
        "",
        1_700_000_000_000_000_000,
        1_700_000_000_100_000_000,
        1,
        "triage",
    )
    assert server[2:5] == (0, "support-triage", "i-1")
    assert server[7] == 2


def test_span_keys_sort_like_the_ids() -> None:
    ids = sorted(bytes.fromhex(h) for h in ("0000000000000001", "7fffffffffffffff", "8000000000000000", "ff" * 8))
    keys = [span_key(i) for i in ids]
    assert keys == sorted(keys)
    assert keys[0] >= -(2**63)
    assert keys[-1] < 2**63


def test_the_tool_falls_back_to_the_genai_attribute() -> None:
    span = records()[0].model_copy(update={"name": "call", "attributes": {"gen_ai.tool.name": "lookup"}})
    (row,) = decode_protobuf(encode_spans([span]))
    assert row[8] == "lookup"
    plain = span.model_copy(update={"attributes": {}})
    assert decode_protobuf(encode_spans([plain]))[0][8] == ""


def test_spans_exported_by_the_opentelemetry_sdk_decode() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "crm", "service.instance.id": "crm-1"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("tools/call lookup", kind=SpanKind.SERVER) as span:
        span.add_event("mesh.decision", {"mesh.decision.kind": "retry", "mesh.decision.confidence": 0.5})
        with tracer.start_as_current_span("query") as child:
            child.set_status(Status(StatusCode.ERROR, "timeout"))
    body = sdk_encode_spans(exporter.get_finished_spans()).SerializeToString()
    provider.shutdown()
    query, call = rows_back(decode_protobuf(body))
    assert (call.agent, call.instance, call.kind, call.name) == ("crm", "crm-1", "server", "tools/call lookup")
    assert call.events[0].attributes == {"mesh.decision.kind": "retry", "mesh.decision.confidence": 0.5}
    assert (query.parent_id, query.status, query.status_message) == (call.span_id, "error", "timeout")


def test_each_span_is_kept_as_received_unknown_fields_and_all() -> None:
    request = encode_request(records())  # two agents: two resources, a scope each
    unknown = b"\x98\x06\x01"  # field 99, a varint: from a newer OTLP, say
    span = request.resource_spans[1].scope_spans[0].spans[0]
    span.MergeFromString(unknown)
    body = request.SerializeToString()
    received = [bytes(raw) for raw in span_bodies(body) or []]
    assert received == [s.SerializeToString() for r in request.resource_spans for s in r.scope_spans[0].spans]
    assert received[1].endswith(unknown)
    assert [row[-1] for row in decode_protobuf(body)] == received


def test_a_request_the_span_walk_cannot_follow_is_decoded_all_the_same() -> None:
    body = encode_spans(records())
    grouped = body + b"\x2b\x2c"  # an empty group (field 5): legal protobuf, ignored by OTLP
    assert span_bodies(grouped) is None
    assert decode_protobuf(grouped) == decode_protobuf(body)


def test_a_request_without_spans_decodes_to_no_rows() -> None:
    assert decode_protobuf(b"") == []
    assert decode_json(b"{}") == []


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xff\xff",
        b"\x0a\x05\x12\x03\x12\x01",
        encode_spans(records())[:-7],
    ],
    ids=["garbage", "truncated-nesting", "truncated-span"],
)
def test_malformed_protobuf_is_an_otlp_error(body: bytes) -> None:
    with pytest.raises(OtlpError):
        decode_protobuf(body)


def json_request(**span: Any) -> bytes:
    base: dict[str, Any] = {"traceId": TRACE, "spanId": "00f067aa0ba902b7", "name": "x"}
    base.update(span)
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [base]}]}]}).encode()


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        b'{"resourceSpans": 5}',
        b"\xff\xfe",
        json_request(traceId="abc"),
        json_request(traceId="zz" * 16),
        json_request(spanId=7),
        json_request(spanId="00f067aa 0ba902b"),
        json_request(parentSpanId="00"),
        json_request(kind="sideways"),
        json_request(startTimeUnixNano="soon"),
        json_request(attributes=[{"key": "k", "value": {"intValue": "many"}}]),
        json_request(traceId="0" * 32),
        b"[" * 100_000,
    ],
    ids=[
        "not-json",
        "not-an-object",
        "wrong-type",
        "not-utf8",
        "short-trace-id",
        "non-hex-trace-id",
        "numeric-span-id",
        "span-id-with-space",
        "short-parent",
        "unknown-kind",
        "non-numeric-time",
        "bad-int-attribute",
        "zero-trace-id",
        "deeply-nested",
    ],
)
def test_malformed_json_is_an_otlp_error_with_a_one_line_message(body: bytes) -> None:
    with pytest.raises(OtlpError) as caught:
        decode_json(body)
    assert "\n" not in str(caught.value)


def test_times_beyond_what_sqlite_holds_are_refused() -> None:
    late = records()[0].model_copy(update={"end_ns": 2**64 - 1})
    with pytest.raises(OtlpError, match="2\\*\\*63"):
        decode_protobuf(encode_spans([late]))


def test_ids_of_the_wrong_length_in_protobuf_are_refused() -> None:
    request_bytes = encode_spans(records())
    short = request_bytes.replace(bytes.fromhex("00f067aa0ba902b7"), bytes.fromhex("00f067aa0ba902"), 1)
    with pytest.raises(OtlpError):
        decode_protobuf(short)


def agent_batch(*verdicts: str) -> bytes:
    """A batch as an agent encodes it: one server span per verdict, each with its policy decision."""
    sink = RecordingSink()
    tracer = MeshTracerProvider(Resource.create({"service.name": "crm"}), sink).get_tracer("t")
    for verdict in verdicts:
        with tracer.start_as_current_span("tools/call lookup", attributes={"mesh.caller": "front"}):
            attributes = {"mesh.policy.side": "callee", "mesh.policy.ids": ("p1",)}
            alternatives = ("allow", "deny", "approval")
            record_decision("policy", choice=verdict, alternatives=alternatives, attributes=attributes)
    return encode_batch(sink.spans)


def test_the_policy_verdicts_an_agent_encodes_are_found_for_the_governance_record() -> None:
    body = agent_batch("allow", "deny", "approval", "allow")
    found = governance_records(parse_protobuf(body), body)
    assert [(r["event"], r["agent"], r["caller"], r["tool"], r["side"], r["policies"]) for r in found] == [
        ("policy deny", "crm", "front", "lookup", "callee", ["p1"]),
        ("policy approval", "crm", "front", "lookup", "callee", ["p1"]),
    ]
    assert len({r["key"] for r in found}) == 2
    allowed = agent_batch("allow", "allow")
    assert governance_records(parse_protobuf(allowed), allowed) == []


def test_a_batch_naming_a_service_other_than_its_senders_is_found() -> None:
    request = parse_protobuf(encode_spans(records()))
    assert foreign_service(request, "support-triage") is not None
    assert foreign_service(parse_protobuf(agent_batch("allow")), "crm") is None
    assert foreign_service(parse_protobuf(agent_batch("allow")), "kb") == "crm"
