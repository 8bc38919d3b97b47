"""OTLP protobuf for a batch of finished spans, written straight to wire bytes.

The OpenTelemetry encoder builds a protobuf object per span, attribute and event, on the export
thread that competes with the event loop for the GIL; writing the few fields a span has directly
costs a fraction of that. Attributes and events that repeat call
after call (a peer call's, a decision's) are encoded once and then taken from bounded caches,
whose keys hold the values' types so that 1, 1.0 and True never share an encoding. A mesh span's
deferred decisions are looked up by the arguments they were recorded with, so a repeated one is
never made at all, and fixed fields are packed with `struct` (docs/performance-log.md has the
timings). The output decodes to the same
`ExportTraceServiceRequest` as the reference encoder (a property test holds it to that).
Pure: bytes in, bytes out; no I/O.
"""

from __future__ import annotations

import marshal
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar, cast

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status

from mesh.tracing.otel_private import SPAN_KIND_SUNDER_VALUE
from mesh.tracing.span_data import UNSET_STATUS, DeferredEvent, MeshSpan

__all__ = ["BatchBuilder", "FinishedSpan", "encode_batch"]


class FinishedEvent(Protocol):
    """A span event as the encoder reads it (the SDK's `Event`, or `SpanEvent`)."""

    @property
    def name(self) -> str: ...
    @property
    def attributes(self) -> Mapping[str, Any] | None: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def dropped_attributes(self) -> int: ...


class FinishedSpan(Protocol):
    """A finished span as the encoder reads it: the SDK's `ReadableSpan`, or the mesh's `MeshSpan`."""

    @property
    def name(self) -> str: ...
    @property
    def parent(self) -> SpanContext | None: ...
    @property
    def kind(self) -> SpanKind: ...
    @property
    def start_time(self) -> int | None: ...
    @property
    def end_time(self) -> int | None: ...
    @property
    def attributes(self) -> Mapping[str, Any] | None: ...
    @property
    def dropped_attributes(self) -> int: ...
    @property
    def events(self) -> Sequence[FinishedEvent]: ...
    @property
    def dropped_events(self) -> int: ...
    @property
    def links(self) -> Sequence[Link]: ...
    @property
    def dropped_links(self) -> int: ...
    @property
    def status(self) -> Status: ...
    @property
    def resource(self) -> Resource: ...
    @property
    def instrumentation_scope(self) -> InstrumentationScope | None: ...
    def get_span_context(self) -> SpanContext | None: ...


_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack
_NAMES: dict[str, bytes] = {}  # span name -> its encoded field 5
_PAIR_CACHE: dict[tuple[Any, ...], bytes] = {}  # (field, key, type, value[, item types]) -> one encoded pair
_EVENT_CACHE: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}  # (name, marshalled attributes, dropped) -> parts
_RECORD_CACHE: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}  # (name, maker, limits, args) -> parts
_CACHE_SIZE = 4096  # entries in each cache
_CACHED_MAX_BYTES = 1024
_T = TypeVar("_T")
_K = TypeVar("_K")
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200


def encode_batch(spans: Sequence[FinishedSpan]) -> bytes:
    """An OTLP/HTTP `ExportTraceServiceRequest`, grouped by resource then instrumentation scope."""
    builder = BatchBuilder()
    for span in spans:
        builder.add(span)
    return builder.build()


class BatchBuilder:
    """A request built one span at a time, so an export thread can encode between other work.

    Each span is kept as its field's tag, length and body, and `build` joins them once: growing
    one buffer per level (span, scope, resource, request) copied the batch four times over.
    """

    def __init__(self) -> None:
        # Grouped by identity: hashing a Resource or InstrumentationScope serialises its attributes.
        self._groups: dict[int, tuple[Resource, dict[int, _ScopeSpans]]] = {}
        self.spans = 0

    def add(self, span: FinishedSpan) -> None:
        """Encode one span into the request, under its resource and scope."""
        resource, scope = span.resource, span.instrumentation_scope
        scopes = self._groups.get(id(resource))
        if scopes is None:
            scopes = self._groups[id(resource)] = (resource, {})
        entry = scopes[1].get(id(scope))
        if entry is None:
            entry = scopes[1][id(scope)] = _ScopeSpans(scope)
        body = _span(span)
        head = _LEN_TAGS[2] + _varint(len(body))  # ScopeSpans field 2: a Span
        entry.parts += (head, body)
        entry.size += len(head) + len(body)
        self.spans += 1

    def build(self) -> bytes:
        """The request's bytes; the builder starts empty again."""
        parts: list[bytes | bytearray] = []
        for resource, scopes in self._groups.values():
            resource_parts: list[bytes | bytearray] = [_field_bytes(1, _attributes_field(1, resource.attributes))]
            for entry in scopes.values():
                scope = entry.scope
                head = _field_bytes(1, _scope(scope))
                tail = _field_str(3, scope.schema_url) if scope is not None and scope.schema_url else b""
                size = len(head) + entry.size + len(tail)
                resource_parts += (_LEN_TAGS[2], _varint(size), head, *entry.parts, tail)
            if resource.schema_url:
                resource_parts.append(_field_str(3, resource.schema_url))
            parts += (_LEN_TAGS[1], _varint(sum(map(len, resource_parts))), *resource_parts)
        self._groups = {}
        self.spans = 0
        return b"".join(parts)


class _ScopeSpans:
    """One scope's spans in the request being built: their encoded fields, and their length."""

    __slots__ = ("parts", "scope", "size")

    def __init__(self, scope: InstrumentationScope | None) -> None:
        self.scope = scope
        self.parts: list[bytes | bytearray] = []
        self.size = 0


# Span field tags (field number << 3 | wire type), written out: this loop runs for every span.
# Fields 1 and 2 (the trace id, 16 bytes, and the span id, 8) in one pack, the id big-endian in two halves.
_IDS = struct.Struct(">2sQQ2sQ").pack
_TRACE_ID = b"\x0a\x10"  # 1: bytes, always 16 long
_SPAN_ID = b"\x12\x08"  # 2: bytes, always 8 long
_PARENT = struct.Struct(">2sQ").pack  # 4: the parent's span id
_PARENT_ID = b"\x22\x08"
_TIMES = struct.Struct("<cQcQ").pack  # 7 and 8: start and end, fixed64
_LOW64 = (1 << 64) - 1
_KIND = (b"\x30\x01", b"\x30\x02", b"\x30\x03", b"\x30\x04", b"\x30\x05")  # 6: SpanKind.value + 1
_START = b"\x39"  # 7: fixed64
_END = b"\x41"  # 8: fixed64
_EVENT_TIME = b"\x09"  # event 1: fixed64
_NO_STATUS = b"\x7a\x00"  # 15: empty Status
_FLAGS_LOCAL = b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE)  # 16: fixed32
_FLAGS_REMOTE = b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE | _IS_REMOTE)


def _span(span: FinishedSpan) -> bytearray:
    """One OTLP `Span` message (without resource or scope: `BatchBuilder` groups them)."""
    context = span.get_span_context()
    assert context is not None
    trace_id, span_id = context.trace_id, context.span_id
    out = bytearray(_IDS(_TRACE_ID, trace_id >> 64, trace_id & _LOW64, _SPAN_ID, span_id))
    if context.trace_state:
        out += _field_str(3, ",".join(f"{k}={v}" for k, v in context.trace_state.items()))
    parent = span.parent
    if parent is not None:
        out += _PARENT(_PARENT_ID, parent.span_id)
    name = span.name
    encoded_name = _NAMES.get(name)
    if encoded_name is None:
        encoded_name = _field_str(5, name)
        _cached(_NAMES, name, encoded_name)
    out += encoded_name
    kind = span.kind
    out += _KIND[kind._value_ if SPAN_KIND_SUNDER_VALUE else kind.value]
    out += _TIMES(_START, span.start_time or 0, _END, span.end_time or 0)
    if span.attributes:
        out += _attributes_field(9, span.attributes)
    if span.dropped_attributes:
        out += _tag(10, 0) + _varint(span.dropped_attributes)
    if type(span) is MeshSpan:
        for record in span.event_records:
            if type(record) is tuple:  # deferred: (name, maker, arguments, time)
                head, tail = _record_parts(span, record)
                timestamp = record[3]
            else:
                head, tail = _event_parts(record)
                timestamp = record.timestamp
            out += head
            out += _pack_fixed64(timestamp)
            out += tail
    else:
        for event in span.events:
            head, tail = _event_parts(event)
            out += head
            out += _pack_fixed64(event.timestamp)
            out += tail
    if span.dropped_events:
        out += _tag(12, 0) + _varint(span.dropped_events)
    for link in span.links:
        link_body = bytearray(_field_bytes(1, link.context.trace_id.to_bytes(16, "big")))
        link_body += _field_bytes(2, link.context.span_id.to_bytes(8, "big"))
        link_body += _attributes_field(4, link.attributes)
        link_body += _tag(6, 5) + _pack_fixed32(_flags(link.context.is_remote))
        out += _field_bytes(13, link_body)
    if span.dropped_links:
        out += _tag(14, 0) + _varint(span.dropped_links)
    status = span.status
    if status is UNSET_STATUS:
        out += _NO_STATUS
    elif status.description or status.status_code.value:
        status_body = bytearray()
        if status.description:
            status_body += _field_str(2, status.description)
        if status.status_code.value:
            status_body += _tag(3, 0) + _varint(status.status_code.value)
        out += _field_bytes(15, status_body)
    else:
        out += _NO_STATUS
    out += _FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL
    return out


def _record_parts(span: MeshSpan, record: DeferredEvent) -> tuple[bytes, bytes]:
    # A deferred event (a decision) is encoded from the arguments it was recorded with, so one
    # seen before costs a marshal and a lookup, not its attributes made, cleaned and marshalled.
    # The key holds what the encoding depends on: the name, the maker, the limits that clean
    # its attributes, and the arguments with their types (marshal writes 1, 1.0 and True apart).
    name, make, args, _ = record
    limits = span.limits
    try:
        exact = marshal.dumps(args)
    except ValueError:  # an argument marshal cannot write: made and encoded as any event
        return _event_parts(span.make_event(record))
    key = (name, make, limits.max_event_attributes, limits.max_attribute_length, exact)
    parts = _RECORD_CACHE.get(key)
    if parts is None:
        parts = _event_parts(span.make_event(record))
        if len(exact) <= _CACHED_MAX_BYTES:
            _cached(_RECORD_CACHE, key, parts)
    return parts


def _event_parts(event: FinishedEvent) -> tuple[bytes, bytes]:
    # An event is its time (a fixed 9 bytes) between parts that repeat with its name and
    # attributes (a decision's, call after call): the field's tag, length and time tag before,
    # the name and attributes after.
    cache_key = _event_key(event)
    parts = _EVENT_CACHE.get(cache_key) if cache_key is not None else None
    if parts is None:
        tail = _field_str(2, event.name) + _attributes_field(3, event.attributes)
        if event.dropped_attributes:
            tail += _tag(4, 0) + _varint(event.dropped_attributes)
        parts = (_LEN_TAGS[11] + _varint(len(_EVENT_TIME) + 8 + len(tail)) + _EVENT_TIME, tail)
        if cache_key is not None:
            _cached(_EVENT_CACHE, cache_key, parts)
    return parts


def _scope(scope: Any) -> bytes:
    if scope is None:
        return b""
    out = bytearray(_field_str(1, scope.name))
    if scope.version:
        out += _field_str(2, scope.version)
    out += _attributes_field(3, scope.attributes)
    return bytes(out)


def _flags(remote: bool) -> int:
    return _HAS_IS_REMOTE | (_IS_REMOTE if remote else 0)


def _attributes_field(number: int, attributes: Mapping[str, Any] | None) -> bytes:
    # Each key-value pair from the cache when it was encoded before: most repeat call after call.
    if not attributes:
        return b""
    parts: list[bytes] = []
    for key, value in attributes.items():
        kind = type(value)
        # The types are part of the key: 1 == 1.0 == True, and each encodes differently.
        if kind is tuple or kind is list:
            cache_key = (number, key, kind, tuple(value), tuple(map(type, value)))  # pyright: ignore[reportUnknownArgumentType]
        else:
            cache_key = (number, key, kind, value)
        try:
            encoded = _PAIR_CACHE.get(cache_key)
        except TypeError:  # an unhashable value: encoded every time
            encoded, cache_key = None, None
        if encoded is None:
            encoded = _pair(number, key, value)
            if cache_key is not None:
                _cached(_PAIR_CACHE, cache_key, encoded)
        parts.append(encoded)
    return b"".join(parts)


def _event_key(event: FinishedEvent) -> tuple[Any, ...] | None:
    """The event's cache key, equal only for events alike in name, attributes and their types
    (marshal writes 1, 1.0 and True apart); None for one not to cache: attributes marshal cannot
    write (the SDK's BoundedAttributes), or too long to be worth keeping (a stack trace)."""
    try:
        exact = marshal.dumps(cast("Any", event.attributes))
    except ValueError:
        return None
    return (event.name, exact, event.dropped_attributes) if len(exact) <= _CACHED_MAX_BYTES else None


def _pair(number: int, key: str, value: Any) -> bytes:
    return _field_bytes(number, _field_str(1, key) + _field_bytes(2, _any_value(value)))


def _cached(cache: dict[_K, _T], key: _K, encoded: _T) -> None:
    if len(cache) >= _CACHE_SIZE:
        cache.clear()  # values repeat a lot; a rare reset keeps memory bounded
    cache[key] = encoded


def _any_value(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bool):
        return _tag(2, 0) + (b"\x01" if value else b"\x00")
    if isinstance(value, str):
        return _field_str(1, value)
    if isinstance(value, int):
        return _tag(3, 0) + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return _tag(4, 1) + _pack_double(value)
    if isinstance(value, bytes):
        return _field_bytes(7, value)
    if isinstance(value, Mapping):
        items = b"".join(
            _field_bytes(1, _field_str(1, str(k)) + _field_bytes(2, _any_value(v))) for k, v in value.items()
        )  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
        return _field_bytes(6, items)
    if isinstance(value, Sequence):
        return _field_bytes(5, b"".join(_field_bytes(1, _any_value(v)) for v in value))  # pyright: ignore[reportUnknownVariableType]
    return _field_str(1, str(value))


def _field_str(number: int, text: str) -> bytes:
    data = text.encode()
    return _LEN_TAGS[number] + _varint(len(data)) + data


def _field_bytes(number: int, data: bytes | bytearray) -> bytes:
    return _LEN_TAGS[number] + _varint(len(data)) + data


def _tag(number: int, wire_type: int) -> bytes:
    return _varint((number << 3) | wire_type)


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _ONE_BYTE[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_ONE_BYTE = tuple(bytes((i,)) for i in range(0x80))
_LEN_TAGS = tuple(_tag(number, 2) for number in range(17))  # length-delimited tags of fields 0-16
