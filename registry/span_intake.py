"""The span intake: an OTLP/HTTP receiver, installed on an MCPServer with the trace queries and tools.

`install_span_intake` adds `POST /v1/traces`, plus the query routes and MCP tools of `registry.trace_api`;
`mesh tracer` and `mesh registry` both use it. A POST carries a mesh token for `SPANS_AUDIENCE`
(401 without one): an agent's token sends only spans of its own service (403 for a batch holding
any other's), an admin's (the operator, a sidecar tracer forwarding) any; other roles get 403.
Writer lanes take the POSTed batches, queued ones grouped into one transaction, and each POST is
answered once its batch is committed; past `max_pending` batches in flight the answer is 429
with Retry-After. On a machine with cores to spare each lane is an ingest worker process
(`registry.ingest`), so decoding and SQLite run beside the HTTP server instead of under its GIL;
otherwise one lane works in a thread here. Background tasks checkpoint the WAL, drop traces past
the store's retention and, given a forward URL, forward stored batches (`registry.forward`).
The returned `SpanIntake` owns these tasks, so enter it in the server's lifespan (until then POST
answers 503; on exit it finishes what is queued):

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncGenerator[None]:
        async with intake:
            yield

    server = MCPServer("mesh-tracer", lifespan=lifespan)
    intake = install_span_intake(server, open_trace_store(db, path), keys=keys, forward_url=url)

Given `on_governance`, the policy verdicts that deny or ask for approval in the stored spans
(`registry.otlp.governance_records`) are handed to it once their batch is durable.

Owns the receiving side only: decoding is `registry.otlp`, storage `registry.trace_stores`, queries
`registry.trace_api`, forwarding `registry.forward`, stitching and rendering `mesh.tracing`.
"""

from __future__ import annotations

import logging
import math
import os
import time
import zlib
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Final, final

import anyio
import httpx2
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from google.rpc.status_pb2 import Status
from mcp.server.mcpserver import MCPServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mesh.errors import IdentityError
from mesh.identity import MeshKeys
from mesh.tracing.export import SPANS_AUDIENCE
from registry.forward import Forwarder
from registry.ingest import IngestWorker, Outcome, Posted, WorkerLost, store_group
from registry.otlp import JSON, PROTOBUF
from registry.trace_api import install_trace_api
from registry.trace_stores import TraceStore

__all__ = ["GovernanceSink", "IntakeStats", "SpanIntake", "install_span_intake"]

logger = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 8 * 1024 * 1024

GovernanceSink = Callable[[Sequence[Mapping[str, Any]]], None]
"""Takes the governance record's entries found in stored spans (called on the event loop)."""


@dataclass
class IntakeStats:
    """Counters since start (GET /api/tracer/stats; `dataclasses.asdict` gives the JSON)."""

    received: int = 0
    """Spans in well-formed requests, new or not."""
    stored: int = 0
    """Spans committed for the first time."""
    duplicates: int = 0
    """Spans already stored (a redelivered batch)."""
    rejected: int = 0
    """Requests refused as malformed, oversized or of an unknown content type."""
    unauthorized: int = 0
    """Requests refused for their token (401, 403), or for spans of a service their token does not speak for."""
    throttled: int = 0
    """Requests refused with 429 because too many were in flight."""
    forwarded: int = 0
    """Spans delivered to the forward endpoint."""
    forward_failures: int = 0
    """Batches not forwarded: retries exhausted, or the backlog was full."""


@final
class SpanIntake(anyio.AsyncContextManagerMixin):
    """The receiver's state: store, counters, backpressure, the writer lanes and (given a URL) a `Forwarder`.

    `keys` verify senders' tokens (and sign the forwarder's); `writers` is the number of ingest
    worker processes; 0 stores in a thread of this process; None picks 2 for a store file on a
    machine with two cores or more, else 0.
    """

    def __init__(
        self,
        store: TraceStore,
        *,
        keys: MeshKeys,
        forward_url: str | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_pending: int = 16,
        writers: int | None = None,
        forward_backlog: int = 256,
        forward_attempts: int = 5,
        forward_transport: httpx2.AsyncBaseTransport | None = None,
        on_governance: GovernanceSink | None = None,
    ) -> None:
        self.store = store
        self.keys = keys
        self.on_governance = on_governance
        self.writers = _default_writers(store) if writers is None else max(0, writers)
        self.stats = IntakeStats()
        self.forward_url = forward_url
        self.max_body_bytes = max_body_bytes
        self.max_pending = max_pending
        self._pending = 0
        self._entered = False
        self._unchecked = 0  # spans stored since the last WAL checkpoint
        self._checkpoint_due = anyio.Event()
        self._batches: MemoryObjectSendStream[_Batch] | None = None
        self._forwarder: Forwarder | None = None
        if forward_url is not None:
            self._forwarder = Forwarder(
                forward_url,
                self.stats,
                keys=keys,
                backlog=forward_backlog,
                attempts=forward_attempts,
                transport=forward_transport,
            )

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[SpanIntake]:
        """Run the writer (and forwarder) until exit; then finish queued batches and drain forwarding (≤ 15 s)."""
        if self._entered:
            raise RuntimeError("a SpanIntake runs once: make a new one (and a new server) to run again")
        self._entered = True
        written = anyio.Event()
        # Unbounded because `max_pending` bounds it: a full intake answers 429 before queueing.
        batches_in, batches_out = anyio.create_memory_object_stream[_Batch](math.inf)
        with batches_in, batches_out:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._write_all, batches_out, written)
                tg.start_soon(self._checkpoint_all)
                tg.start_soon(self._prune_all)
                if self._forwarder is not None:
                    self._forwarder.start(tg)
                self._batches = batches_in
                try:
                    yield self
                finally:
                    self._batches = None
                    batches_in.close()
                    with anyio.move_on_after(10, shield=True):
                        await written.wait()
                    if self._forwarder is not None:
                        await self._forwarder.stop()
                    tg.cancel_scope.cancel()

    def counters(self) -> dict[str, int]:
        """`stats`, plus the batches in flight and those waiting to be forwarded (GET /api/tracer/stats)."""
        backlog = self._forwarder.backlog if self._forwarder is not None else 0
        return {**asdict(self.stats), "pending": self._pending, "forward_backlog": backlog}

    async def receive(self, request: Request) -> Response:
        """POST /v1/traces: store an OTLP batch of an authenticated sender, answering only once it is durable."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            sender = self._sender(request)
        except _Refused as refused:
            self.stats.unauthorized += 1
            headers = _CHALLENGE if refused.status == 401 else None
            return _status(content_type, refused.status, str(refused), headers)
        if content_type not in (PROTOBUF, JSON):
            self.stats.rejected += 1
            return Response(f"unsupported content type {content_type!r}: use {PROTOBUF} or {JSON}\n", 415)
        if self._batches is None:
            return _status(content_type, 503, "the span intake is not running", {"Retry-After": "1"})
        if self._pending >= self.max_pending:
            self.stats.throttled += 1
            return _status(content_type, 429, "too many batches in flight; retry later", {"Retry-After": "1"})
        self._pending += 1
        try:
            return await self._receive(request, content_type, sender, self._batches)
        finally:
            self._pending -= 1

    def _sender(self, request: Request) -> str | None:
        """The service a request's spans must be of (None: any), from its token; _Refused (401, 403) otherwise."""
        header = request.headers.get("authorization")
        if header is None:
            raise _Refused(401, f"no mesh token: send 'Authorization: Bearer <token>' for audience '{SPANS_AUDIENCE}'")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Refused(401, "the Authorization header is not a Bearer token")
        try:
            claims = self.keys.verify(token.strip(), audience=SPANS_AUDIENCE)
        except IdentityError as exc:
            raise _Refused(401, str(exc)) from None
        if claims.role == "admin":
            return None
        if claims.role == "agent":
            return claims.caller
        raise _Refused(403, f"a token of role {claims.role} may not send spans: an agent sends its own, an admin any")

    async def _receive(
        self, request: Request, content_type: str, sender: str | None, batches: MemoryObjectSendStream[_Batch]
    ) -> Response:
        try:
            body = await _read_body(request, self.max_body_bytes)
        except _Refused as refused:
            self.stats.rejected += 1
            return _status(content_type, refused.status, str(refused))
        batch = _Batch(content_type, body, sender)
        try:
            batches.send_nowait(batch)
            with anyio.fail_after(60):
                await batch.done.wait()
        except (anyio.ClosedResourceError, TimeoutError):
            batch.failed = True
        if batch.error is not None:
            return _status(content_type, 403 if batch.forbidden else 400, batch.error)
        if batch.failed:
            return _status(content_type, 503, "the trace store failed; retry later", {"Retry-After": "1"})
        if content_type == PROTOBUF:
            return Response(ExportTraceServiceResponse().SerializeToString(), media_type=PROTOBUF)
        return Response(b"{}", media_type=JSON)

    async def _write_all(self, batches: MemoryObjectReceiveStream[_Batch], written: anyio.Event) -> None:
        try:
            async with anyio.create_task_group() as lanes:
                for _ in range(max(1, self.writers)):
                    lanes.start_soon(self._lane, batches, self.writers > 0)
        finally:
            written.set()

    async def _lane(self, batches: MemoryObjectReceiveStream[_Batch], in_worker: bool) -> None:
        # A worker that cannot start, or dies before storing anything, a few times in a row hands
        # its lane to a thread of this process.
        losses = 0
        while in_worker and self.store.location is not None:
            worker = IngestWorker(self.store.location)
            try:
                async with worker:
                    await self._take(batches, worker)
                return
            except WorkerLost as lost:
                losses = losses + 1 if not worker.groups else 1
                in_worker = losses < _WORKER_LOSSES
                logger.warning("%s; %s", lost, "starting another" if in_worker else "storing in this process instead")
        await self._take(batches, None)

    async def _take(self, batches: MemoryObjectReceiveStream[_Batch], worker: IngestWorker | None) -> None:
        async for first in batches:
            group = [first]
            while len(group) < _GROUP_BATCHES:
                try:
                    group.append(batches.receive_nowait())
                except anyio.WouldBlock:
                    break
            await self._write(group, worker)

    async def _write(self, group: list[_Batch], worker: IngestWorker | None) -> None:
        posted = [Posted(batch.content_type, batch.body, batch.sender) for batch in group]
        reencode = self._forwarder is not None
        governance = self.on_governance is not None
        try:
            if worker is None:
                store = partial(store_group, self.store, posted, reencode=reencode, governance=governance)
                outcomes, fresh = await anyio.to_thread.run_sync(store)
            else:
                outcomes, fresh = await worker.store(posted, reencode=reencode, governance=governance)
        except Exception as exc:  # task root: a failing store answers 503 and the writer carries on
            for batch in group:
                batch.failed = True
            if isinstance(exc, WorkerLost):
                raise
            logger.exception("cannot store a group of %d batches", len(group))
        else:
            self._count(group, outcomes, fresh)
            self._hand_governance(group, outcomes)
        finally:
            for batch in group:
                batch.done.set()

    def _count(self, group: list[_Batch], outcomes: list[Outcome], fresh: int) -> None:
        received = 0
        for batch, outcome in zip(group, outcomes, strict=True):
            if outcome.error is not None:
                batch.error, batch.forbidden = outcome.error, outcome.forbidden
                if outcome.forbidden:
                    self.stats.unauthorized += 1
                else:
                    self.stats.rejected += 1
                continue
            received += outcome.spans
            if self._forwarder is not None and outcome.spans:
                forward = batch.body if batch.content_type == PROTOBUF else outcome.protobuf
                if forward is not None:
                    self._forwarder.enqueue(forward, outcome.spans)
        self.stats.received += received
        self.stats.stored += fresh
        self.stats.duplicates += received - fresh
        self._unchecked += fresh
        if self._unchecked >= _CHECKPOINT_SPANS:
            self._unchecked = 0
            self._checkpoint_due.set()

    def _hand_governance(self, group: list[_Batch], outcomes: list[Outcome]) -> None:
        records = [record for outcome in outcomes for record in outcome.governance]
        if not records or self.on_governance is None:
            return
        try:
            self.on_governance(records)
        except Exception:  # the spans are stored, their record is not: 503, so the sender delivers them again
            logger.exception("cannot record %d governance entries; their batches are to be sent again", len(records))
            for batch, outcome in zip(group, outcomes, strict=True):
                if outcome.governance:
                    batch.failed = True

    async def _checkpoint_all(self) -> None:
        while True:
            await self._checkpoint_due.wait()
            self._checkpoint_due = anyio.Event()
            try:
                await anyio.to_thread.run_sync(self.store.checkpoint)
            except Exception:  # task root: a failed checkpoint is retried next time; ingest goes on
                logger.exception("WAL checkpoint failed")

    async def _prune_all(self) -> None:
        # Drops traces past the store's retention (a no-op without one), now and every few minutes.
        while True:
            try:
                await anyio.to_thread.run_sync(self.store.prune, time.time())
            except Exception:  # task root: pruning is tried again next time; ingest goes on
                logger.exception("cannot drop the traces past their retention")
            await anyio.sleep(_PRUNE_EVERY)


def install_span_intake(
    server: MCPServer,
    store: TraceStore,
    *,
    keys: MeshKeys,
    forward_url: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_pending: int = 16,
    writers: int | None = None,
    forward_transport: httpx2.AsyncBaseTransport | None = None,
    on_governance: GovernanceSink | None = None,
) -> SpanIntake:
    """Add the span intake's route and the trace queries and tools to `server`; enter the returned `SpanIntake`
    in its lifespan.

    `keys` are the mesh's, whose tokens may send spans; `max_pending` bounds the batches in flight
    (more get 429); `writers` is as for `SpanIntake`; `forward_transport` is for tests; `on_governance`
    takes the governance record's entries of stored spans.
    """
    intake = SpanIntake(
        store,
        keys=keys,
        forward_url=forward_url,
        max_body_bytes=max_body_bytes,
        max_pending=max_pending,
        writers=writers,
        forward_transport=forward_transport,
        on_governance=on_governance,
    )
    server.custom_route("/v1/traces", methods=["POST"])(intake.receive)
    install_trace_api(server, store, intake.counters)
    return intake


# -- private helpers ---------------------------------------------------------------------------

_GROUP_BATCHES: Final = 8  # batches per transaction at most
_WORKER_LOSSES: Final = 3  # workers lost in a row, storing nothing, before a lane stores in this process
_CHECKPOINT_SPANS: Final = 16384
"""Spans stored between background WAL checkpoints (~6 MB of WAL). Counted in spans, not commits:
a checkpoint syncs the database file, and agents' small batches would otherwise pay for one every
few commits (bench/tracing_overhead.py)."""


_PRUNE_EVERY: Final = 300.0  # seconds between retention passes


_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="agentplex"'}


def _default_writers(store: TraceStore) -> int:
    # Two: one decodes while the other is in SQLite, whose transactions run one at a time.
    return 2 if store.location is not None and (os.cpu_count() or 1) >= 2 else 0


@dataclass(slots=True, eq=False)
class _Batch:
    """One POSTed batch on its way through the writer; the handler waits on `done`."""

    content_type: str
    body: bytes
    sender: str | None
    done: anyio.Event = field(default_factory=anyio.Event)
    error: str | None = None
    forbidden: bool = False
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
    code = {400: 3, 401: 16, 403: 7, 413: 8, 429: 8, 503: 14}.get(status, 2)
    if content_type == PROTOBUF:
        body = Status(code=code, message=message).SerializeToString()
        return Response(body, status, headers=headers, media_type=PROTOBUF)
    return JSONResponse({"code": code, "message": message}, status, headers=headers)
