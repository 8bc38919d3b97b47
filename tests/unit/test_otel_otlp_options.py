"""OTEL_EXPORTER_OTLP_* options: read once for every sender, and honoured on the wire to the user's backend."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource

from mesh.testing import RecordingSink
from mesh.tracing.export import SpoolingExporter
from mesh.tracing.lean_provider import MeshTracerProvider
from mesh.tracing.otlp_json import to_otlp_json
from mesh.tracing.otlp_options import OtlpOptions, otlp_options
from mesh.tracing.otlp_wire import encode_batch
from mesh.tracing.spool import Spool
from registry.otlp import parse_json
from tests.otlp_receiver import OtlpReceiver

LINKED = trace.SpanContext(0xAB << 64 | 0xCD, 0xEF, True, trace.TraceFlags(1))


def _batch(count: int, *, links: bool = False) -> bytes:
    sink = RecordingSink()
    tracer = MeshTracerProvider(Resource.create({"service.name": "opts"}), sink).get_tracer("t")
    for n in range(count):
        with (
            tracer.start_as_current_span(f"s{n}", links=[trace.Link(LINKED, {"k": n})] if links else None),
            tracer.start_as_current_span(f"child{n}", attributes={"n": n, "blob": b"\x00\xff"}),
        ):
            pass
    return encode_batch(sink.spans)


def test_headers_are_the_specs_list_with_percent_decoding() -> None:
    options = otlp_options({"OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=s3cr%3Dt, Tenant=a%20b,,=junk"})
    assert dict(options.headers) == {"x-api-key": "s3cr=t", "tenant": "a b"}


def test_the_traces_variable_wins_option_by_option() -> None:
    options = otlp_options(
        {
            "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=general",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-api-key=traces",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "500",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
        }
    )
    assert options == OtlpOptions({"x-api-key": "traces"}, "gzip", 0.5, "http/json")


def test_without_variables_it_is_protobuf_uncompressed_with_the_specs_ten_seconds() -> None:
    assert otlp_options({}) == OtlpOptions({}, "none", 10.0, "http/protobuf")


def test_the_timeout_is_in_milliseconds_as_the_spec_says() -> None:
    assert otlp_options({"OTEL_EXPORTER_OTLP_TIMEOUT": "2500"}).timeout == 2.5


@pytest.mark.parametrize(
    ("variable", "value", "warning"),
    [
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli", "not supported (gzip or none)"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon", "not a positive number of milliseconds"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "-5", "not a positive number of milliseconds"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "not supported (http/protobuf or http/json)"),
    ],
)
def test_a_bad_value_is_one_warning_and_the_default(
    variable: str, value: str, warning: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert otlp_options({variable: value}) == OtlpOptions()
    (record,) = caplog.records
    assert variable in record.getMessage()
    assert warning in record.getMessage()


def test_a_header_that_http_cannot_carry_is_dropped_without_showing_its_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    options = otlp_options({"OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=line%0Abreak-secret,ok=1"})
    assert dict(options.headers) == {"ok": "1"}
    assert "x-api-key" in caplog.text
    assert "secret" not in caplog.text


def test_otlp_json_has_hex_ids_and_decodes_to_the_same_request() -> None:
    batch = _batch(3)
    document = json.loads(to_otlp_json(batch))
    spans = [s for rs in document["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    assert all(len(s["traceId"]) == 32 and len(s["spanId"]) == 16 for s in spans)
    assert all(int(s["kind"]) in range(6) for s in spans)  # integer enums
    assert parse_json(to_otlp_json(batch)) == ExportTraceServiceRequest.FromString(batch)


def test_otlp_json_writes_link_ids_in_hex_too() -> None:
    document = json.loads(to_otlp_json(_batch(1, links=True)))
    (link,) = [
        link
        for rs in document["resourceSpans"]
        for ss in rs["scopeSpans"]
        for s in ss["spans"]
        for link in s.get("links", ())
    ]
    assert (link["traceId"], link["spanId"]) == (f"{LINKED.trace_id:032x}", f"{LINKED.span_id:016x}")
    blob = [
        a
        for rs in document["resourceSpans"]
        for ss in rs["scopeSpans"]
        for s in ss["spans"]
        for a in s.get("attributes", ())
        if a["key"] == "blob"
    ]
    assert base64.b64decode(blob[0]["value"]["bytesValue"]) == b"\x00\xff"  # other bytes stay base64


def test_a_request_carries_the_options_after_the_content_headers() -> None:
    options = OtlpOptions({"x-api-key": "k"}, "gzip", 1.0, "http/json")
    body, headers = options.request(_batch(1))
    assert headers == {"content-type": "application/json", "content-encoding": "gzip", "x-api-key": "k"}
    assert json.loads(gzip.decompress(body))["resourceSpans"]


@pytest.mark.parametrize(("compression", "protocol"), [("gzip", "http/protobuf"), ("none", "http/json")])
def test_the_exporter_delivers_every_span_to_a_backend_that_requires_a_key(
    tmp_path: Path, compression: str, protocol: str
) -> None:
    options = otlp_options(
        {
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-api-key=s3cr%3Dt",
            "OTEL_EXPORTER_OTLP_COMPRESSION": compression,
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        }
    )
    batches = [_batch(5), _batch(7)]
    with OtlpReceiver(require={"x-api-key": "s3cr=t"}) as receiver:
        exporter = SpoolingExporter(lambda: receiver.url, Spool(tmp_path, "i"), options=options)
        try:
            for batch in batches:
                exporter.export(batch, 0)
        finally:
            exporter.shutdown()
        expected = [
            s.span_id
            for b in batches
            for rs in ExportTraceServiceRequest.FromString(b).resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
        ]
        assert receiver.span_ids() == expected
        assert receiver.refused == 0
        for received in receiver.requests():
            assert received.headers.get("content-encoding") == ("gzip" if compression == "gzip" else None)
            assert received.headers["content-type"] == (
                "application/json" if protocol == "http/json" else "application/x-protobuf"
            )
            assert "authorization" not in received.headers
    assert exporter.stats()["pending_batches"] == 0


def test_a_backend_that_refuses_the_key_leaves_the_batch_in_the_spool(tmp_path: Path) -> None:
    options = otlp_options({"OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=wrong"})
    with OtlpReceiver(require={"x-api-key": "right"}) as receiver:
        exporter = SpoolingExporter(lambda: receiver.url, Spool(tmp_path, "i"), options=options, drain_every=60)
        try:
            exporter.export(_batch(2), 4)
            assert exporter.stats()["pending_batches"] == 1
            assert receiver.refused == 1
        finally:
            exporter.shutdown()
