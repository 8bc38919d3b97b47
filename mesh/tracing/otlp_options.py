"""How to send OTLP/HTTP to an endpoint of the user's choosing, as the OTEL_EXPORTER_OTLP_* variables say.

One reading of `OTEL_EXPORTER_OTLP_(TRACES_)HEADERS`, `_COMPRESSION`, `_TIMEOUT` and `_PROTOCOL`
for every sender: an agent's exporter when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT names the
backend, and `mesh tracer --forward URL`. The `TRACES_` variable wins over the general one, key by
key, as the OpenTelemetry specification says. Headers are the W3C-baggage-like `k=v,k2=v2` with
percent-decoding (read by OpenTelemetry's own parser); the timeout is in milliseconds, as the
specification says (the Python SDK's exporter reads seconds, opentelemetry-python#4044). A bad
value is one warning and the default, never a crash. The mesh's own tokens are never among these
headers: those go only to the mesh's own tracer (docs/security.md).
"""

from __future__ import annotations

import gzip
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from opentelemetry.util.re import parse_env_headers

from mesh.tracing.otlp_json import to_otlp_json

__all__ = ["JSON", "PROTOBUF", "OtlpOptions", "otlp_options"]

log = logging.getLogger(__name__)

PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"
DEFAULT_TIMEOUT_MS: Final = 10_000
"""The specification's default: ten seconds."""

Protocol = Literal["http/protobuf", "http/json"]
Compression = Literal["gzip", "none"]


@dataclass(frozen=True)
class OtlpOptions:
    """Headers, compression, timeout and body encoding for one OTLP/HTTP endpoint."""

    headers: Mapping[str, str] = field(default_factory=dict[str, str])
    """Sent with every request (lower-case names), after the content headers."""
    compression: Compression = "none"
    """`gzip`: bodies are gzip-compressed (`content-encoding: gzip`)."""
    timeout: float = DEFAULT_TIMEOUT_MS / 1000
    """Seconds to wait for one request."""
    protocol: Protocol = "http/protobuf"
    """`http/json`: bodies are converted to OTLP JSON before they are sent."""

    @property
    def rewrites(self) -> bool:
        """True when a body is converted or compressed before it is sent (work worth a thread)."""
        return self.protocol != "http/protobuf" or self.compression != "none"

    def request(self, batch: bytes) -> tuple[bytes, dict[str, str]]:
        """The body and headers of one request carrying `batch` (an OTLP protobuf request)."""
        if self.protocol == "http/json":
            body, headers = to_otlp_json(batch), {"content-type": JSON}
        else:
            body, headers = batch, {"content-type": PROTOBUF}
        if self.compression == "gzip":
            body = gzip.compress(body, compresslevel=6, mtime=0)
            headers["content-encoding"] = "gzip"
        return body, {**headers, **self.headers}


def otlp_options(environ: Mapping[str, str] | None = None) -> OtlpOptions:
    """The options the environment (default: `os.environ`) gives, warning once about each bad value."""
    env = os.environ if environ is None else environ
    return OtlpOptions(
        headers=_headers(_get(env, "HEADERS")),
        compression=_compression(_get(env, "COMPRESSION")),
        timeout=_timeout(_get(env, "TIMEOUT")),
        protocol=_protocol(_get(env, "PROTOCOL")),
    )


# -- private helpers ---------------------------------------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""An HTTP field name (RFC 9110 §5.1)."""
_BAD_VALUE = re.compile(r"[\x00\r\n]")


def _get(env: Mapping[str, str], option: str) -> tuple[str, str] | None:
    """(variable, value) of the traces variable if set, else of the general one."""
    for name in (f"OTEL_EXPORTER_OTLP_TRACES_{option}", f"OTEL_EXPORTER_OTLP_{option}"):
        value = env.get(name, "").strip()
        if value:
            return name, value
    return None


def _headers(found: tuple[str, str] | None) -> dict[str, str]:
    if found is None:
        return {}
    name, raw = found
    headers: dict[str, str] = {}
    for key, value in parse_env_headers(raw, liberal=True).items():
        if not _TOKEN.fullmatch(key) or _BAD_VALUE.search(value):
            log.warning("%s: header %r is not a valid HTTP header; it is not sent", name, key[:40])
            continue
        headers[key] = value
    return headers


def _compression(found: tuple[str, str] | None) -> Compression:
    if found is None:
        return "none"
    name, raw = found
    value = raw.lower()
    if value in ("gzip", "none"):
        return value
    log.warning("%s=%r is not supported (gzip or none); sending uncompressed", name, raw)
    return "none"


def _timeout(found: tuple[str, str] | None) -> float:
    if found is None:
        return DEFAULT_TIMEOUT_MS / 1000
    name, raw = found
    try:
        milliseconds = float(raw)
    except ValueError:
        milliseconds = -1.0
    if not 0 < milliseconds < float("inf"):
        log.warning("%s=%r is not a positive number of milliseconds; using %d", name, raw, DEFAULT_TIMEOUT_MS)
        return DEFAULT_TIMEOUT_MS / 1000
    return milliseconds / 1000


def _protocol(found: tuple[str, str] | None) -> Protocol:
    if found is None:
        return "http/protobuf"
    name, raw = found
    value = raw.lower()
    if value == "http/protobuf" or value == "http/json":
        return value
    log.warning("%s=%r is not supported (http/protobuf or http/json); sending http/protobuf", name, raw)
    return "http/protobuf"
