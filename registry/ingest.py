"""Storing POSTed OTLP batches: decode a group of them and store their spans in one transaction.

`store_group` does it in the calling thread. `IngestWorker` does it in a child process
(`registry.ingest_worker`, run by the same Python) so that the span intake decodes and stores on
other cores than its HTTP server's: decoding and the SQL are most of ingest's CPU, and in one
process they share the GIL with the event loop. Several workers write
one store (SQLite takes their transactions in turn, PostgreSQL side by side); each decodes while
another is in the database.
Each batch comes with the service its sender speaks for: a batch holding spans of any other
service is refused whole (the span intake answers 403). Asked to, decoding also collects the policy
verdicts that go into the governance record (`registry.otlp.governance_records`).

Between the span intake and a worker, over the worker's stdin and stdout: frames of a 4-byte
length and a pickle (both ends are this package, one parent and its child). The intake first
sends the store's location (on stdin, not the command line, where a database URL's password would
show); the worker opens the store and sends `READY`, or a one-line `str` saying why it cannot;
then each `(group, reencode, governance)` it receives is answered with `(outcomes, fresh)` or
with a one-line `str` saying why the store failed. Owns no HTTP and no SQL.
"""

from __future__ import annotations

import logging
import pickle
import sys
from collections.abc import AsyncGenerator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast, final

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from registry.otlp import (
    JSON,
    OtlpError,
    SpanRow,
    foreign_service,
    governance_records,
    parse_json,
    parse_protobuf,
    span_bodies,
    span_rows,
)
from registry.trace_stores import TraceStore

__all__ = ["Posted", "Outcome", "IngestWorker", "WorkerLost", "store_group", "READY"]

logger = logging.getLogger(__name__)

READY: Final = "ready"
"""The worker's first frame: its store is open."""
_START_TIMEOUT: Final = 30.0
_BOOT: Final = (
    # -P keeps the working directory off the path; the checkout this module came from goes last,
    # for runs from a source tree (a bench script) rather than an installed package.
    f"import sys; sys.path.append({str(Path(__file__).resolve().parents[1])!r}); "
    "from registry.ingest_worker import main; sys.exit(main())"
)


@dataclass(frozen=True, slots=True)
class Posted:
    """One POSTed batch: its content type (`registry.otlp.PROTOBUF` or `JSON`), its plain body, its sender."""

    content_type: str
    body: bytes
    sender: str | None
    """The service every span must be of (an agent's token names it); None: any (an admin's token)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one batch of a group."""

    spans: int = 0
    """Spans decoded, new or not."""
    error: str | None = None
    """Why the batch was refused (malformed OTLP, or spans its sender may not send); it stored nothing."""
    forbidden: bool = False
    """True when `error` is spans of a service other than the sender's (403), not malformed OTLP (400)."""
    protobuf: bytes | None = None
    """A JSON batch re-encoded as protobuf, when asked for (the forwarder sends protobuf)."""
    governance: tuple[dict[str, Any], ...] = ()
    """The batch's entries for the governance record (`registry.otlp.governance_records`), when asked for."""


def store_group(
    store: TraceStore, group: Sequence[Posted], *, reencode: bool, governance: bool = False
) -> tuple[list[Outcome], int]:
    """Decode every batch and store the spans of those well-formed and from their own service in one transaction.

    Returns one outcome per batch and how many spans were new; a refused batch is refused
    alone. Store failures (disk full, say) propagate and nothing of the group is stored.
    """
    rows: list[SpanRow] = []
    outcomes: list[Outcome] = []
    for posted in group:
        is_json = posted.content_type == JSON
        try:
            request = parse_json(posted.body) if is_json else parse_protobuf(posted.body)
            if posted.sender is not None and (foreign := foreign_service(request, posted.sender)) is not None:
                refusal = (
                    f"spans of service {foreign!r} came with a token of {posted.sender!r}: it may send only its own"
                )
                outcomes.append(Outcome(error=refusal, forbidden=True))
                continue
            decoded = span_rows(request, None if is_json else span_bodies(posted.body))
        except OtlpError as exc:
            outcomes.append(Outcome(error=str(exc)))
            continue
        protobuf = request.SerializeToString() if is_json and reencode else None
        records = tuple(governance_records(request, None if is_json else posted.body)) if governance else ()
        outcomes.append(Outcome(spans=len(decoded), protobuf=protobuf, governance=records))
        rows.extend(decoded)
    return outcomes, store.ingest(rows)


class WorkerLost(Exception):
    """The worker process failed to start, or exited; the message says how."""


@final
class IngestWorker(anyio.AsyncContextManagerMixin):
    """A child process storing groups into the store at `location` (a file or a URL), one group at a time.

    Entering starts it and waits until its store is open (WorkerLost if it cannot start);
    leaving closes its stdin, so it finishes the group in hand and exits, and kills it after
    `grace` seconds. The child exits on its own when this process dies (its stdin closes), and
    ignores SIGINT so that Ctrl-C at a terminal lets the span intake drain through it.
    """

    def __init__(self, location: str, *, grace: float = 10.0) -> None:
        self.location = location
        self.grace = grace
        self.groups = 0
        """Groups stored so far."""
        self._process: Process | None = None
        self._replies: BufferedByteReceiveStream | None = None

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[IngestWorker]:
        command = [sys.executable, "-P", "-c", _BOOT]
        try:
            process = await anyio.open_process(command, stderr=None)
        except OSError as exc:
            raise WorkerLost(f"cannot start an ingest worker: {exc}") from exc
        try:
            if process.stdout is None:  # never: open_process makes pipes
                raise WorkerLost("the ingest worker has no stdout")
            self._process = process
            self._replies = BufferedByteReceiveStream(process.stdout)
            await self._send(self.location)
            hello: object = None
            with anyio.move_on_after(_START_TIMEOUT):
                hello = await self._receive()
            if hello is None:
                raise WorkerLost(f"ingest worker {process.pid} did not start within {_START_TIMEOUT:g} s")
            if isinstance(hello, str) and hello != READY:
                raise WorkerLost(f"ingest worker {process.pid} cannot open the store: {hello}")
            if hello != READY:
                raise WorkerLost(f"ingest worker said {hello!r} instead of {READY!r}")
            yield self
        finally:
            self._process = None
            with anyio.CancelScope(shield=True):
                await _stop(process, self.grace)

    async def store(
        self, group: Sequence[Posted], *, reencode: bool, governance: bool = False
    ) -> tuple[list[Outcome], int]:
        """Like `store_group`, in the worker; WorkerLost if it dies first, RuntimeError if its store fails."""
        await self._send((list(group), reencode, governance))
        reply = await self._receive()
        if isinstance(reply, str):
            raise RuntimeError(reply)
        self.groups += 1
        return cast("tuple[list[Outcome], int]", reply)

    async def _send(self, value: object) -> None:
        process = self._process
        if process is None or process.stdin is None:
            raise WorkerLost("the ingest worker is not running")
        frame = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        try:
            await process.stdin.send(len(frame).to_bytes(4, "big") + frame)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise WorkerLost(f"ingest worker {process.pid} exited") from None

    async def _receive(self) -> object:
        replies = self._replies
        assert replies is not None
        try:
            size = int.from_bytes(await replies.receive_exactly(4), "big")
            return pickle.loads(await replies.receive_exactly(size))
        except (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError) as exc:
            pid = self._process.pid if self._process is not None else "?"
            raise WorkerLost(f"ingest worker {pid} exited") from exc


async def _stop(process: Process, grace: float) -> None:
    if process.stdin is not None:
        await process.stdin.aclose()
    with anyio.move_on_after(grace):
        await process.wait()
    if process.returncode is None:
        logger.warning("ingest worker %d did not exit within %g s; killing it", process.pid, grace)
        process.kill()
        await process.wait()
    if process.stdout is not None:
        await process.stdout.aclose()
