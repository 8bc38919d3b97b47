"""An OTLP protobuf trace request rewritten as OTLP JSON, for a backend that asks for http/json.

OTLP JSON is the protobuf JSON mapping with three exceptions (OTLP specification, "JSON Protobuf
Encoding"): trace and span ids are hex, not base64; enums are integers; field names are
lowerCamelCase. Pure: bytes in, bytes out.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Final

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

__all__ = ["to_otlp_json"]

_SPAN_IDS: Final = ("traceId", "spanId", "parentSpanId")
_LINK_IDS: Final = ("traceId", "spanId")


def to_otlp_json(batch: bytes) -> bytes:
    """The OTLP JSON encoding of an `ExportTraceServiceRequest` given as protobuf bytes."""
    document: dict[str, Any] = json_format.MessageToDict(
        ExportTraceServiceRequest.FromString(batch), use_integers_for_enums=True
    )
    for resource_spans in document.get("resourceSpans", ()):
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                _hex_ids(span, _SPAN_IDS)
                for link in span.get("links", ()):
                    _hex_ids(link, _LINK_IDS)
    return json.dumps(document, separators=(",", ":")).encode()


def _hex_ids(item: dict[str, Any], fields: tuple[str, ...]) -> None:
    for name in fields:
        if name in item:
            item[name] = base64.b64decode(item[name]).hex()
