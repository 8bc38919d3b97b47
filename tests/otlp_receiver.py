"""A small real OTLP/HTTP receiver on 127.0.0.1, standing in for a user's own backend in tests.

It answers `POST /v1/traces` in a thread of its own, refuses (401) a request without the headers it
is told to require, as an authenticated Grafana Tempo or Honeycomb endpoint does, and keeps what
it accepted: each request's headers and the spans in it (gzip undone, protobuf or JSON decoded).
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self, final

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from registry.otlp import parse_json


@dataclass(frozen=True)
class Received:
    """One request the receiver took: its headers (lower-case names) and the request it carried."""

    headers: Mapping[str, str]
    request: ExportTraceServiceRequest

    @property
    def span_ids(self) -> list[bytes]:
        """The ids of the spans in the request."""
        return [s.span_id for rs in self.request.resource_spans for ss in rs.scope_spans for s in ss.spans]


@final
class OtlpReceiver:
    """`with OtlpReceiver(require={"x-api-key": "k"}) as receiver:` serves at `receiver.url` until the block ends."""

    def __init__(self, *, require: Mapping[str, str] | None = None) -> None:
        self.require = dict(require or {})
        self.received: list[Received] = []
        self.refused = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    @property
    def url(self) -> str:
        """The traces endpoint: `http://127.0.0.1:PORT/v1/traces`."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"

    def span_ids(self) -> list[bytes]:
        """The ids of every span accepted so far, in order."""
        with self._lock:
            return [span_id for received in self.received for span_id in received.span_ids]

    def requests(self) -> list[Received]:
        """Every request accepted so far."""
        with self._lock:
            return list(self.received)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                headers = {name.lower(): value for name, value in self.headers.items()}
                body = self.rfile.read(int(headers.get("content-length", "0")))
                if self.path != "/v1/traces":
                    self._answer(404)
                    return
                if any(headers.get(name) != value for name, value in receiver.require.items()):
                    with receiver._lock:  # pyright: ignore[reportPrivateUsage]
                        receiver.refused += 1
                    self._answer(401)
                    return
                if headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if headers.get("content-type", "").startswith("application/json"):
                    request = parse_json(body)
                else:
                    request = ExportTraceServiceRequest.FromString(body)
                with receiver._lock:  # pyright: ignore[reportPrivateUsage]
                    receiver.received.append(Received(headers, request))
                self._answer(200, ExportTraceServiceResponse().SerializeToString())

            def _answer(self, status: int, body: bytes = b"") -> None:
                self.send_response(status)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the test reads what was received, not an access log."""

        return Handler
