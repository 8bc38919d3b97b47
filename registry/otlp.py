"""OTLP/HTTP trace payloads: decode requests into flat span rows, and encode spans into requests.

Owns the mapping between OTLP (`ExportTraceServiceRequest`, protobuf and the OTLP JSON
encoding: hex ids, integer enums, camelCase names) and the rows the trace store inserts.
Decoding uses opentelemetry-proto's generated classes (upb backend) and builds plain tuples,
never a pydantic model per span; each span's bytes are sliced from a protobuf request as
received rather than serialized again. Owns no I/O, no HTTP and no SQL.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, NoReturn

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from mesh.text import one_line
from mesh.wire import SpanEventRecord, SpanKind, SpanRecord, SpanStatus

__all__ = [
    "PROTOBUF",
    "JSON",
    "OtlpError",
    "SpanRow",
    "parse_protobuf",
    "parse_json",
    "span_rows",
    "span_bodies",
    "span_key",
    "foreign_service",
    "governance_records",
    "decode_protobuf",
    "decode_json",
    "span_record",
    "encode_request",
    "encode_spans",
    "encode_json",
]

PROTOBUF: Final = "application/x-protobuf"
"""The content type of OTLP/HTTP protobuf."""
JSON: Final = "application/json"
"""The content type of OTLP/HTTP JSON."""

SpanRow = tuple[
    bytes,  # trace_id (16 bytes)
    int,  # span_id as a signed 64-bit integer that sorts like the id (`span_key`)
    int,  # 1 if the span has no parent, else 0 (the parent id itself is in the body)
    str,  # agent: the resource's service.name
    str,  # instance: the resource's service.instance.id, or ""
    int,  # start, ns since the epoch
    int,  # end, ns since the epoch
    int,  # status: the OTLP enum (0 unset, 1 ok, 2 error)
    str,  # tool: gen_ai.tool.name or the target of a "tools/call X" name, or ""
    bytearray,  # the whole Span message, serialized: name, kind, attributes, events, links
]
"""One span, flattened for the trace store; field order is the column order.

Only types SQLite binds directly (int, str, bytearray): `bytes` and None cost the sqlite3 module
a failed adapter lookup per value, which doubles the insert cost.
"""


class OtlpError(ValueError):
    """An OTLP payload that cannot be decoded; the message is one line saying why."""


def parse_protobuf(data: bytes) -> ExportTraceServiceRequest:
    """Parse a protobuf `ExportTraceServiceRequest`."""
    try:
        return ExportTraceServiceRequest.FromString(data)
    except (DecodeError, RecursionError) as exc:
        raise OtlpError(f"malformed OTLP protobuf: {one_line(exc)}") from None


def parse_json(data: bytes | str) -> ExportTraceServiceRequest:
    """Parse an OTLP JSON `ExportTraceServiceRequest` (hex ids; unknown fields ignored, per the spec)."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise OtlpError(f"malformed OTLP JSON: {one_line(exc)}") from None
    if not isinstance(document, dict):
        raise OtlpError("malformed OTLP JSON: the request must be a JSON object")
    _ids_hex_to_base64(document)
    try:
        return json_format.ParseDict(document, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise OtlpError(f"malformed OTLP JSON: {one_line(exc)}") from None


def span_rows(request: ExportTraceServiceRequest, bodies: Sequence[bytearray] | None = None) -> list[SpanRow]:
    """Flatten every span of a request into rows, checking ids; raises OtlpError on the first bad one.

    `bodies`: each span's bytes as received, in order (`span_bodies`); without them, or if they do
    not match the request, each span is serialized again.
    """
    rows: list[SpanRow] = []
    append = rows.append
    scopes = [scope.spans for resource in request.resource_spans for scope in resource.scope_spans]
    if bodies is None or len(bodies) != sum(map(len, scopes)):
        bodies = [bytearray(span.SerializeToString()) for spans in scopes for span in spans]
    next_body = iter(bodies).__next__
    for resource_spans in request.resource_spans:
        agent, instance = _service(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                # The hot loop of ingest: one attribute read per field, one combined check.
                trace_id = span.trace_id
                span_id = span.span_id
                parent = span.parent_span_id
                start = span.start_time_unix_nano
                end = span.end_time_unix_nano
                if (
                    len(trace_id) != 16
                    or len(span_id) != 8
                    or (parent and len(parent) != 8)
                    or start > _MAX_NS
                    or end > _MAX_NS
                    or trace_id == _ZERO_TRACE
                    or span_id == _ZERO_SPAN
                ):
                    _refuse(span)
                name = span.name
                at = name.find(_TOOL_CALL)
                append(
                    (
                        trace_id,
                        int.from_bytes(span_id, "big") - _HALF,
                        0 if parent and parent != _ZERO_SPAN else 1,
                        agent,
                        instance,
                        start,
                        end,
                        span.status.code,
                        name[at + _TOOL_CALL_LEN :] if at >= 0 else _attribute_tool(span),
                        next_body(),
                    )
                )
    return rows


def foreign_service(request: ExportTraceServiceRequest, sender: str) -> str | None:
    """The first `service.name` in `request` other than `sender`'s ("unknown" if a resource has none), or None."""
    for resource_spans in request.resource_spans:
        agent, _ = _service(resource_spans.resource.attributes)
        if agent != sender:
            return agent
    return None


def governance_records(request: ExportTraceServiceRequest, body: bytes | None = None) -> list[dict[str, Any]]:
    """An entry for the governance record per policy decision event in `request` that denied or asked for approval.

    Each is keyed `trace/span/event index`, so a redelivered span gives the same key again.
    `body`, the protobuf `request` was parsed from, lets a batch without such a choice skip the walk.
    """
    if body is not None and not any(marker in body for marker in _VERDICT_MARKERS):
        # Most batches: finding the bytes of the choice's key-value pair costs next to nothing, where
        # walking every span's events costs a few percent of ingest. Encoders write a pair's key,
        # then its value, so the pair's bytes are exactly these wherever it is.
        return []
    found: list[dict[str, Any]] = []
    for resource_spans in request.resource_spans:
        agent, _ = _service(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if span.events:  # most spans have none: this walk costs them one check
                    found += _policy_verdicts(span, agent)
    return found


def span_bodies(data: bytes) -> list[bytearray] | None:
    """Each span's bytes in a protobuf OTLP request, in order, without decoding them; None if the
    request uses an encoding this walk does not follow (groups).

    Slicing is cheaper than serializing each decoded span again (docs/performance-log.md, "Span
    bodies"). Call it on a body that `parse_protobuf` accepted.
    """
    buffer = bytearray(data)  # slices of a bytearray are bytearrays: SQLite binds them directly
    bodies: list[bytearray] = []
    try:
        for resource_start, resource_end in _ranges(buffer, 0, len(buffer), 1):  # resource_spans
            for scope_start, scope_end in _ranges(buffer, resource_start, resource_end, 2):  # scope_spans
                bodies += [buffer[start:end] for start, end in _ranges(buffer, scope_start, scope_end, 2)]  # spans
    except (ValueError, IndexError):
        return None
    return bodies


def decode_protobuf(data: bytes) -> list[SpanRow]:
    """Rows from a protobuf OTLP request."""
    return span_rows(parse_protobuf(data), span_bodies(data))


def decode_json(data: bytes | str) -> list[SpanRow]:
    """Rows from an OTLP JSON request."""
    return span_rows(parse_json(data))


def span_key(span_id: bytes) -> int:
    """A span id as the signed 64-bit integer the store keeps: same order as the bytes (and hex)."""
    return int.from_bytes(span_id, "big") - _HALF


def span_record(trace_id: str, agent: str, instance: str | None, body: bytes) -> SpanRecord:
    """The `SpanRecord` of a stored row (its serialized span plus the resource's agent and instance)."""
    span = Span.FromString(body)
    return SpanRecord(
        trace_id=trace_id,
        span_id=span.span_id.hex(),
        parent_id=span.parent_span_id.hex() or None,
        name=span.name,
        kind=_KINDS.get(span.kind, "internal"),
        agent=agent,
        instance=instance or None,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        status=_STATUSES.get(span.status.code, "unset"),
        status_message=span.status.message or None,
        attributes=_attributes(span.attributes),
        events=[
            SpanEventRecord(name=event.name, time_ns=event.time_unix_nano, attributes=_attributes(event.attributes))
            for event in span.events
        ],
    )


def encode_request(spans: Iterable[SpanRecord]) -> ExportTraceServiceRequest:
    """An OTLP request holding `spans`, one resource per (agent, instance)."""
    request = ExportTraceServiceRequest()
    scopes: dict[tuple[str, str | None], Any] = {}
    for record in spans:
        key = (record.agent, record.instance)
        scope = scopes.get(key)
        if scope is None:
            resource_spans = request.resource_spans.add()
            resource_spans.resource.attributes.extend(_key_values(_resource(record.agent, record.instance)))
            scope = scopes[key] = resource_spans.scope_spans.add()
            scope.scope.name = "agentplex"
        span = scope.spans.add()
        span.trace_id = bytes.fromhex(record.trace_id)
        span.span_id = bytes.fromhex(record.span_id)
        if record.parent_id:
            span.parent_span_id = bytes.fromhex(record.parent_id)
        span.name = record.name
        span.kind = _KIND_CODES[record.kind]  # pyright: ignore[reportAttributeAccessIssue]
        span.start_time_unix_nano = record.start_ns
        span.end_time_unix_nano = record.end_ns
        span.status.code = _STATUS_CODES[record.status]  # pyright: ignore[reportAttributeAccessIssue]
        if record.status_message:
            span.status.message = record.status_message
        span.attributes.extend(_key_values(record.attributes))
        for event in record.events:
            encoded = span.events.add()
            encoded.name = event.name
            encoded.time_unix_nano = event.time_ns
            encoded.attributes.extend(_key_values(event.attributes))
    return request


def encode_spans(spans: Iterable[SpanRecord]) -> bytes:
    """A protobuf OTLP request body holding `spans`."""
    return encode_request(spans).SerializeToString()


def encode_json(spans: Iterable[SpanRecord]) -> bytes:
    """An OTLP JSON request body holding `spans` (hex ids, integer enums)."""
    document = json_format.MessageToDict(encode_request(spans), use_integers_for_enums=True)
    for resource_spans in document.get("resourceSpans", ()):
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                for field in _ID_FIELDS:
                    if field in span:
                        span[field] = base64.b64decode(span[field]).hex()
    return json.dumps(document, separators=(",", ":")).encode()


# -- private helpers ---------------------------------------------------------------------------

_ZERO_TRACE: Final = bytes(16)
_ZERO_SPAN: Final = bytes(8)
_HALF: Final = 2**63
_MAX_NS: Final = 2**63 - 1
_KINDS: Final[dict[int, SpanKind]] = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_KIND_CODES: Final[dict[SpanKind, int]] = {name: code for code, name in _KINDS.items()}
_STATUSES: Final[dict[int, SpanStatus]] = {0: "unset", 1: "ok", 2: "error"}
_STATUS_CODES: Final[dict[SpanStatus, int]] = {name: code for code, name in _STATUSES.items()}
_DECISION_EVENT: Final = "mesh.decision"
_RECORDED_VERDICTS: Final = ("deny", "approval")
_VERDICT_MARKERS: Final = tuple(
    KeyValue(key="mesh.decision.choice", value=AnyValue(string_value=verdict)).SerializeToString()
    for verdict in _RECORDED_VERDICTS
)
_TOOL_CALL: Final = "tools/call "
_TOOL_CALL_LEN: Final = len(_TOOL_CALL)
_ID_FIELDS: Final = ("traceId", "spanId", "parentSpanId")
_HEX_LENGTHS: Final = {"traceId": 32, "spanId": 16, "parentSpanId": 16}
_HEX: Final = re.compile(r"[0-9a-fA-F]*")
_KIND_NAMES: Final = frozenset(Span.SpanKind.keys())
_STATUS_NAMES: Final = frozenset(Status.StatusCode.keys())


def _ranges(data: bytearray, start: int, end: int, field: int) -> list[tuple[int, int]]:
    # Where each occurrence of length-delimited `field` lies in the message data[start:end].
    found: list[tuple[int, int]] = []
    wanted = field << 3 | 2
    at = start
    while at < end:
        tag = data[at]
        if tag < 0x80:
            at += 1
        else:
            tag, at = _varint(data, at)
        kind = tag & 7
        if kind == 2:
            size = data[at]
            if size < 0x80:
                at += 1
            elif data[at + 1] < 0x80:  # two bytes: a span's usual size
                size = size & 0x7F | data[at + 1] << 7
                at += 2
            else:
                size, at = _varint(data, at)
            if tag == wanted:
                found.append((at, at + size))
            at += size
        elif kind == 0:
            while data[at] >= 0x80:
                at += 1
            at += 1
        elif kind == 1:
            at += 8
        elif kind == 5:
            at += 4
        else:
            raise ValueError(f"wire type {kind}")
    if at != end:
        raise ValueError("a field runs past the end of its message")
    return found


def _varint(data: bytearray, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _service(attributes: Sequence[KeyValue]) -> tuple[str, str]:
    agent = "unknown"
    instance = ""
    for attribute in attributes:
        if attribute.key == "service.name":
            agent = attribute.value.string_value or agent
        elif attribute.key == "service.instance.id":
            instance = attribute.value.string_value
    return agent, instance


def _attribute_tool(span: Span) -> str:
    # The SDK names MCP spans "tools/call X" (server) and "MCP send tools/call X" (client), so the
    # caller reads the name first (cheaper than walking the attributes); else gen_ai.tool.name, as in
    # mesh.tracing.stitch.tool_of.
    for attribute in span.attributes:
        if attribute.key == "gen_ai.tool.name":
            value = _value(attribute.value)
            return str(value) if value else ""
    return ""


def _policy_verdicts(span: Span, agent: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for index, event in enumerate(span.events):
        if event.name != _DECISION_EVENT:
            continue
        kind = choice = ""
        for attribute in event.attributes:  # the two that select it first: most decisions are not recorded
            if attribute.key == "mesh.decision.kind":
                kind = attribute.value.string_value
            elif attribute.key == "mesh.decision.choice":
                choice = attribute.value.string_value
        if kind != "policy" or choice not in _RECORDED_VERDICTS:
            continue
        decision = _attributes(event.attributes)
        trace_id, span_id = span.trace_id.hex(), span.span_id.hex()
        attributes = _attributes(span.attributes)
        policies = decision.get("mesh.policy.ids")
        name = span.name
        at = name.find(_TOOL_CALL)
        tool = attributes.get("gen_ai.tool.name") or (name[at + _TOOL_CALL_LEN :] if at >= 0 else None)
        found.append(
            {
                "key": f"{trace_id}/{span_id}/{index}",
                "event": f"policy {choice}",
                "at": event.time_unix_nano / 1e9,
                "trace_id": trace_id,
                "span_id": span_id,
                "agent": agent,
                "side": _text_or_none(decision.get("mesh.policy.side")),
                "policies": [str(p) for p in policies] if isinstance(policies, list) else _listed(policies),
                "reason": _text_or_none(decision.get("mesh.decision.reason")),
                "caller": _text_or_none(attributes.get("mesh.caller")),
                "tool": _text_or_none(tool),
                "person": _text_or_none(attributes.get("mesh.person")),
            }
        )
    return found


def _text_or_none(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def _listed(value: object) -> list[str]:
    return [] if value is None or value == "" else [str(value)]


def _refuse(span: Span) -> NoReturn:
    name = span.name
    if len(span.trace_id) != 16 or span.trace_id == _ZERO_TRACE:
        raise OtlpError(f"span {name!r}: trace id must be 16 non-zero bytes")
    if len(span.span_id) != 8 or span.span_id == _ZERO_SPAN:
        raise OtlpError(f"span {name!r}: span id must be 8 non-zero bytes")
    if len(span.parent_span_id) not in (0, 8):
        raise OtlpError(f"span {name!r}: parent span id must be 8 bytes or empty")
    raise OtlpError(f"span {name!r}: times must be below 2**63 ns")


def _ids_hex_to_base64(document: dict[str, Any]) -> None:
    # OTLP JSON carries ids as hex (not proto3 JSON's base64): rewrite them so ParseDict reads them.
    for resource_spans in _list(document.get("resourceSpans")):
        if not isinstance(resource_spans, dict):
            continue
        for scope_spans in _list(resource_spans.get("scopeSpans")):
            if not isinstance(scope_spans, dict):
                continue
            for span in _list(scope_spans.get("spans")):
                if not isinstance(span, dict):
                    continue
                _rewrite_ids(span)
                _check_enum(span.get("kind"), _KIND_NAMES, "kind")
                status = span.get("status")
                if isinstance(status, dict):
                    _check_enum(status.get("code"), _STATUS_NAMES, "status.code")
                for link in _list(span.get("links")):
                    if isinstance(link, dict):
                        _rewrite_ids(link)


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _rewrite_ids(holder: dict[str, Any]) -> None:
    for field in _ID_FIELDS:
        value = holder.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            raise OtlpError(f"malformed OTLP JSON: {field} must be a hex string")
        if value and (len(value) != _HEX_LENGTHS[field] or not _HEX.fullmatch(value)):
            raise OtlpError(f"malformed OTLP JSON: {field} must be {_HEX_LENGTHS[field]} hex digits")
        holder[field] = base64.b64encode(bytes.fromhex(value)).decode()


def _check_enum(value: object, names: frozenset[str], field: str) -> None:
    # ParseDict skips an unknown enum name when told to ignore unknown fields: refuse it here.
    if isinstance(value, str) and value not in names:
        raise OtlpError(f"malformed OTLP JSON: {field} {value!r} is not a known value")


def _attributes(key_values: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in key_values}


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, which)


def _resource(agent: str, instance: str | None) -> dict[str, Any]:
    return {"service.name": agent} if instance is None else {"service.name": agent, "service.instance.id": instance}


def _key_values(attributes: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=key, value=_any_value(value)) for key, value in attributes.items()]


def _any_value(value: object) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, Mapping):
        encoded = AnyValue()
        encoded.kvlist_value.values.extend(_key_values(value))
        return encoded
    if isinstance(value, list | tuple):
        encoded = AnyValue()
        encoded.array_value.values.extend(_any_value(item) for item in value)
        return encoded
    if value is None:
        return AnyValue()
    return AnyValue(string_value=str(value))
