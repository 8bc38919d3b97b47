"""The tracer service: an OTLP/HTTP receiver, a query API and trace tools, installed on an MCPServer.

`install_tracer` adds `POST /v1/traces`, `GET /api/traces`, `GET /api/traces/{id}` and
`GET /api/tracer/stats`, and the MCP tools `search_traces`, `get_trace` and `explain_decision`;
`mesh tracer` and `mesh registry` both use it. One writer task decodes and stores batches in a
worker thread, queued batches sharing a transaction, and each POST is answered once its batch is
committed; past `max_pending` batches in flight the answer is 429 with Retry-After. Background
tasks checkpoint the WAL and forward stored batches. The returned `Tracer` owns these tasks, so
enter it in the server's lifespan (until then POST answers 503; on exit it finishes what is queued):

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncGenerator[None]:
        async with tracer:
            yield

    server = MCPServer("mesh-tracer", lifespan=lifespan)
    tracer = install_tracer(server, TraceStore(path), forward_url=url)

Owns HTTP and task plumbing only: decoding is `registry.otlp`, storage `registry.tracestore`,
stitching and rendering `mesh.tracing`.
"""

from __future__ import annotations

import logging
import math
import re
import time
import zlib
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Final, Literal, final

import anyio
import httpx2
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from google.rpc.status_pb2 import Status
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mesh.tracing.render import explain
from mesh.tracing.stitch import stitch
from mesh.wire import TraceSummary, TraceTree
from registry.otlp import OtlpError, SpanRow, parse_json, parse_protobuf, span_rows
from registry.tracestore import TraceStore

__all__ = ["Tracer", "TracerStats", "install_tracer", "parse_since"]

logger = logging.getLogger(__name__)

PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"
MAX_BODY_BYTES: Final = 8 * 1024 * 1024


@dataclass
class TracerStats:
    """Counters since start (GET /api/tracer/stats; `dataclasses.asdict` gives the JSON)."""

    received: int = 0
    """Spans in well-formed requests, new or not."""
    stored: int = 0
    """Spans committed for the first time."""
    duplicates: int = 0
    """Spans already stored (a redelivered batch)."""
    rejected: int = 0
    """Requests refused as malformed, oversized or of an unknown content type."""
    throttled: int = 0
    """Requests refused with 429 because too many were in flight."""
    forwarded: int = 0
    """Spans delivered to the forward endpoint."""
    forward_failures: int = 0
    """Batches not forwarded: retries exhausted, or the backlog was full."""


@final
class Tracer(anyio.AsyncContextManagerMixin):
    """The receiver's state: store, counters, backpressure, and the writer and forwarding tasks."""

    def __init__(
        self,
        store: TraceStore,
        *,
        forward_url: str | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_pending: int = 16,
        forward_backlog: int = 256,
        forward_attempts: int = 5,
        forward_transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.store = store
        self.stats = TracerStats()
        self.forward_url = forward_url
        self.max_body_bytes = max_body_bytes
        self.max_pending = max_pending
        self._pending = 0
        self._entered = False
        self._forward_attempts = forward_attempts
        self._forward_transport = forward_transport
        self._forward_backlog = forward_backlog
        self._groups = 0
        self._checkpoint_due = anyio.Event()
        self._batches: MemoryObjectSendStream[_Batch] | None = None
        self._forwards: MemoryObjectSendStream[tuple[bytes, int]] | None = None

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Tracer]:
        """Run the writer (and forwarder) until exit; then finish queued batches and drain forwarding (≤ 15 s)."""
        if self._entered:
            raise RuntimeError("a Tracer runs once: make a new one (and a new server) to run again")
        self._entered = True
        written, forwarded = anyio.Event(), anyio.Event()
        # Unbounded because `max_pending` bounds it: a full tracer answers 429 before queueing.
        batches_in, batches_out = anyio.create_memory_object_stream[_Batch](math.inf)
        forwards_in, forwards_out = anyio.create_memory_object_stream[tuple[bytes, int]](self._forward_backlog)
        with batches_in, batches_out, forwards_in, forwards_out:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._write_all, batches_out, written)
                tg.start_soon(self._checkpoint_all)
                if self.forward_url is not None:
                    tg.start_soon(self._forward_all, self.forward_url, forwards_out, forwarded)
                else:
                    forwarded.set()
                self._batches, self._forwards = batches_in, forwards_in
                try:
                    yield self
                finally:
                    self._batches = None
                    batches_in.close()
                    with anyio.move_on_after(10, shield=True):
                        await written.wait()
                    self._forwards = None
                    forwards_in.close()
                    with anyio.move_on_after(5, shield=True):
                        await forwarded.wait()
                    tg.cancel_scope.cancel()

    async def receive(self, request: Request) -> Response:
        """POST /v1/traces: store an OTLP batch, answering only once it is durable."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in (PROTOBUF, JSON):
            self.stats.rejected += 1
            return Response(f"unsupported content type {content_type!r}: use {PROTOBUF} or {JSON}\n", 415)
        if self._batches is None:
            return _status(content_type, 503, "the tracer is not running", {"Retry-After": "1"})
        if self._pending >= self.max_pending:
            self.stats.throttled += 1
            return _status(content_type, 429, "too many batches in flight; retry later", {"Retry-After": "1"})
        self._pending += 1
        try:
            return await self._receive(request, content_type, self._batches)
        finally:
            self._pending -= 1

    async def _receive(self, request: Request, content_type: str, batches: MemoryObjectSendStream[_Batch]) -> Response:
        try:
            body = await _read_body(request, self.max_body_bytes)
        except _Refused as refused:
            self.stats.rejected += 1
            return _status(content_type, refused.status, str(refused))
        batch = _Batch(content_type, body)
        try:
            batches.send_nowait(batch)
            with anyio.fail_after(60):
                await batch.done.wait()
        except (anyio.ClosedResourceError, TimeoutError):
            batch.failed = True
        if batch.error is not None:
            return _status(content_type, 400, batch.error)
        if batch.failed:
            return _status(content_type, 503, "the trace store failed; retry later", {"Retry-After": "1"})
        if content_type == PROTOBUF:
            return Response(ExportTraceServiceResponse().SerializeToString(), media_type=PROTOBUF)
        return Response(b"{}", media_type=JSON)

    async def _write_all(self, batches: MemoryObjectReceiveStream[_Batch], written: anyio.Event) -> None:
        # One writer: decoding and storing share a thread, because a second busy Python thread
        # would stall SQLite's per-row GIL handoffs. Queued batches share one transaction.
        try:
            async for first in batches:
                group = [first]
                while len(group) < _GROUP_BATCHES:
                    try:
                        group.append(batches.receive_nowait())
                    except anyio.WouldBlock:
                        break
                await self._write(group)
        finally:
            written.set()

    async def _write(self, group: list[_Batch]) -> None:
        try:
            fresh = await anyio.to_thread.run_sync(self._decode_and_store, group)
        except Exception:  # task root: a failing store answers 503 and the writer carries on
            logger.exception("cannot store a group of %d batches", len(group))
            for batch in group:
                batch.failed = True
        else:
            received = sum(batch.spans for batch in group)
            self.stats.received += received
            self.stats.stored += fresh
            self.stats.duplicates += received - fresh
            for batch in group:
                if batch.error is not None:
                    self.stats.rejected += 1
                elif batch.forward is not None and batch.spans:
                    self._enqueue_forward(batch.forward, batch.spans)
            self._groups += 1
            if self._groups % _CHECKPOINT_EVERY == 0:
                self._checkpoint_due.set()
        finally:
            for batch in group:
                batch.done.set()

    async def _checkpoint_all(self) -> None:
        while True:
            await self._checkpoint_due.wait()
            self._checkpoint_due = anyio.Event()
            try:
                await anyio.to_thread.run_sync(self.store.checkpoint)
            except Exception:  # task root: a failed checkpoint is retried next time; ingest goes on
                logger.exception("WAL checkpoint failed")

    def _decode_and_store(self, group: list[_Batch]) -> int:
        rows: list[SpanRow] = []
        for batch in group:
            try:
                if batch.content_type == PROTOBUF:
                    decoded = span_rows(parse_protobuf(batch.body))
                    batch.forward = batch.body if self.forward_url else None
                else:
                    request = parse_json(batch.body)
                    decoded = span_rows(request)
                    batch.forward = request.SerializeToString() if self.forward_url else None
            except OtlpError as exc:
                batch.error = str(exc)
                continue
            batch.spans = len(decoded)
            rows.extend(decoded)
        return self.store.ingest(rows)

    def _enqueue_forward(self, body: bytes, spans: int) -> None:
        try:
            if self._forwards is None:
                raise anyio.ClosedResourceError
            self._forwards.send_nowait((body, spans))
        except (anyio.WouldBlock, anyio.ClosedResourceError):
            self.stats.forward_failures += 1

    async def _forward_all(
        self, url: str, forwards: MemoryObjectReceiveStream[tuple[bytes, int]], forwarded: anyio.Event
    ) -> None:
        try:
            async with httpx2.AsyncClient(timeout=10, transport=self._forward_transport) as client:
                async for body, spans in forwards:
                    try:
                        delivered = await self._forward(client, url, body)
                    except Exception:  # task root: one bad batch must not stop forwarding
                        logger.exception("forwarding a batch of %d spans failed", spans)
                        delivered = False
                    if delivered:
                        self.stats.forwarded += spans
                    else:
                        self.stats.forward_failures += 1
        finally:
            forwarded.set()

    async def _forward(self, client: httpx2.AsyncClient, url: str, body: bytes) -> bool:
        delay = 0.2
        for attempt in range(1, self._forward_attempts + 1):
            try:
                with anyio.fail_after(15):
                    response = await client.post(url, content=body, headers={"content-type": PROTOBUF})
            except (httpx2.HTTPError, TimeoutError) as exc:
                logger.debug("forward attempt %d to %s failed: %s", attempt, url, exc)
            else:
                if response.status_code < 300:
                    return True
                if response.status_code not in (429, 502, 503, 504):
                    logger.warning("forward endpoint %s refused a batch: HTTP %d", url, response.status_code)
                    return False
                delay = max(delay, _retry_after(response.headers.get("retry-after")))
            if attempt < self._forward_attempts:
                await anyio.sleep(min(delay, 5.0))
                delay = min(delay * 2, 5.0)
        logger.warning("giving up forwarding a batch to %s after %d attempts", url, self._forward_attempts)
        return False

    async def list_traces(self, request: Request) -> Response:
        """GET /api/traces?agent=&tool=&status=&since=&min_duration_ms=&limit= (JSON list of summaries)."""
        query = request.query_params
        try:
            found = await self.search(
                agent=query.get("agent"),
                tool=query.get("tool"),
                status=query.get("status"),
                since=query.get("since"),
                min_duration_ms=_number(query.get("min_duration_ms"), "min_duration_ms"),
                limit=_integer(query.get("limit") or "50", "limit"),
            )
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return Response("[" + ",".join(summary.model_dump_json() for summary in found) + "]", media_type=JSON)

    async def show_trace(self, request: Request) -> Response:
        """GET /api/traces/{trace_id}: the stitched tree, 404 if unknown."""
        trace_id = str(request.path_params["trace_id"])
        tree = await self.tree(trace_id)
        if tree is None:
            return JSONResponse({"error": f"no trace {trace_id}"}, 404)
        return Response(tree.model_dump_json(), media_type=JSON)

    async def show_stats(self, _: Request) -> Response:
        """GET /api/tracer/stats: the counters, plus what is in flight and waiting to be forwarded."""
        backlog = self._forwards.statistics().current_buffer_used if self._forwards is not None else 0
        return JSONResponse({**asdict(self.stats), "pending": self._pending, "forward_backlog": backlog})

    async def search(
        self,
        *,
        agent: str | None = None,
        tool: str | None = None,
        status: str | None = None,
        since: str | None = None,
        min_duration_ms: float | None = None,
        limit: int = 50,
    ) -> list[TraceSummary]:
        """Trace summaries, latest first; raises ValueError for a bad filter."""
        if status is not None and status not in ("ok", "error"):
            raise ValueError(f"status must be ok or error, not {status!r}")
        if not 1 <= limit <= 1000:
            raise ValueError("limit must be between 1 and 1000")
        start = parse_since(since, time.time()) if since else None
        return await anyio.to_thread.run_sync(
            lambda: self.store.list_traces(agent, tool, status, start, min_duration_ms, limit)
        )

    async def tree(self, trace_id: str) -> TraceTree | None:
        """The stitched tree of one trace, or None if no span of it is stored."""
        return await anyio.to_thread.run_sync(self._tree, trace_id.lower())

    def _tree(self, trace_id: str) -> TraceTree | None:
        spans = self.store.get_trace(trace_id)
        return stitch(trace_id, spans) if spans else None


def install_tracer(
    server: MCPServer,
    store: TraceStore,
    *,
    forward_url: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_pending: int = 16,
    forward_transport: httpx2.AsyncBaseTransport | None = None,
) -> Tracer:
    """Add the tracer's routes and MCP tools to `server`; enter the returned Tracer in its lifespan.

    `max_pending` bounds the batches in flight (more get 429); `forward_transport` is for tests.
    """
    tracer = Tracer(
        store,
        forward_url=forward_url,
        max_body_bytes=max_body_bytes,
        max_pending=max_pending,
        forward_transport=forward_transport,
    )
    server.custom_route("/v1/traces", methods=["POST"])(tracer.receive)
    server.custom_route("/api/traces", methods=["GET"])(tracer.list_traces)
    server.custom_route("/api/traces/{trace_id}", methods=["GET"])(tracer.show_trace)
    server.custom_route("/api/tracer/stats", methods=["GET"])(tracer.show_stats)
    read_only = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)

    async def search_traces(
        agent: str | None = None,
        tool: str | None = None,
        status: Literal["ok", "error"] | None = None,
        since: str | None = None,
        limit: int = 20,
    ) -> list[TraceSummary]:
        """Find recent decision traces: by agent or tool involved, status, and age (since: "10m", "2h")."""
        try:
            return await tracer.search(agent=agent, tool=tool, status=status, since=since, limit=limit)
        except ValueError as exc:
            raise ToolError(str(exc)) from None

    async def get_trace(trace_id: str) -> TraceTree:
        """The stitched decision trace: who called which tool, when, with what outcome and decisions."""
        tree = await tracer.tree(trace_id)
        if tree is None:
            raise ToolError(f"no trace {trace_id}")
        return tree

    async def explain_decision(trace_id: str, span_id: str | None = None) -> str:
        """Why agents did what they did in a trace: each decision, who made it, why, alternatives, confidence."""
        tree = await tracer.tree(trace_id)
        if tree is None:
            raise ToolError(f"no trace {trace_id}")
        return explain(tree, span_id)

    for tool in (search_traces, get_trace, explain_decision):
        server.add_tool(tool, name=tool.__name__, annotations=read_only)
    return tracer


def parse_since(text: str, now: float) -> float:
    """Epoch seconds from "90s", "10m", "2h", "1d", "1w", epoch seconds or an ISO 8601 time."""
    text = text.strip()
    match = _AGO.fullmatch(text)
    if match:
        return now - float(match[1]) * _UNITS[match[2]]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(f"since must look like 10m, 2h, 1d, epoch seconds or an ISO time, not {text!r}") from None


# -- private helpers ---------------------------------------------------------------------------

_AGO: Final = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_GROUP_BATCHES: Final = 8  # batches per transaction at most
_CHECKPOINT_EVERY: Final = 4  # transactions between background WAL checkpoints (~2-10 MB of WAL)


@dataclass(slots=True, eq=False)
class _Batch:
    """One POSTed batch on its way through the writer; the handler waits on `done`."""

    content_type: str
    body: bytes
    done: anyio.Event = field(default_factory=anyio.Event)
    spans: int = 0
    forward: bytes | None = None
    error: str | None = None
    failed: bool = False


class _Refused(Exception):
    """A request body refused before decoding."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _Refused(413, f"body of {declared} bytes exceeds the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _Refused(413, f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding != "gzip":
        raise _Refused(415, f"unsupported content encoding {encoding!r}: use gzip or none")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise _Refused(400, f"malformed gzip body: {exc}") from None
    if len(plain) > limit or inflater.unconsumed_tail:
        raise _Refused(413, f"decompressed body exceeds the limit of {limit} bytes")
    if not inflater.eof:
        raise _Refused(400, "malformed gzip body: truncated")
    return plain


def _status(content_type: str, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    # OTLP/HTTP: failures carry a google.rpc.Status in the request's own encoding.
    code = {400: 3, 413: 8, 429: 8, 503: 14}.get(status, 2)
    if content_type == PROTOBUF:
        body = Status(code=code, message=message).SerializeToString()
        return Response(body, status, headers=headers, media_type=PROTOBUF)
    return JSONResponse({"code": code, "message": message}, status, headers=headers)


def _number(value: str | None, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a number, not {value!r}")
    return number


def _integer(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, not {value!r}") from None


def _retry_after(value: str | None) -> float:
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0
