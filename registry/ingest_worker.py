"""The ingest worker process: `python -m registry.ingest_worker` (`IngestWorker` calls `main`).

Reads the store's location, then `(group, reencode, governance)` frames from stdin, stores each
group with `store_group` and answers on stdout (the protocol is in `registry.ingest`); exits when
stdin closes. Owns the loop only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import sys
from pathlib import Path
from typing import BinaryIO, cast

from mesh.errors import ConfigError
from registry.ingest import READY, Posted, store_group
from registry.trace_stores import open_trace_store

logger = logging.getLogger("registry.ingest_worker")

NICENESS = 10
"""How much lower than the span intake's a worker's CPU priority is: agents on the same host serve
calls first (each agent's span batcher is lowered alike, `mesh.tracing.batch.NICENESS`); the p99 this
buys is in docs/performance-log.md, "The batcher's niceness"."""


def main() -> int:
    """Serve groups for the store named in the first frame until stdin closes; 0 on a clean end."""
    # Ctrl-C reaches the whole process group: the span intake stops, then closes our stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):  # storing spans goes after serving calls when the cores are busy
        os.nice(NICENESS)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    location = _receive(requests)
    if not isinstance(location, str):
        return 2
    try:
        store = open_trace_store(location, Path(location), connections=1)
    except ConfigError as exc:
        _send(replies, str(exc))
        return 1
    try:
        _send(replies, READY)
        while (frame := _receive(requests)) is not None:
            group, reencode, governance = cast("tuple[list[Posted], bool, bool]", frame)
            try:
                reply: object = store_group(store, group, reencode=reencode, governance=governance)
            except Exception as exc:  # process root: the span intake answers 503 and the client retries
                logger.exception("cannot store a group of %d batches", len(group))
                reply = f"the trace store failed: {type(exc).__name__}: {exc}"
            _send(replies, reply)
    except BrokenPipeError:  # the span intake is gone; what was committed stays committed
        pass
    finally:
        store.close()
    return 0


def _receive(stream: BinaryIO) -> object:
    """The next frame's value; None once stdin closes."""
    header = stream.read(4)
    if len(header) < 4:
        return None
    size = int.from_bytes(header, "big")
    body = stream.read(size)
    return pickle.loads(body) if len(body) == size else None


def _send(stream: BinaryIO, value: object) -> None:
    frame = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    stream.write(len(frame).to_bytes(4, "big") + frame)
    stream.flush()


if __name__ == "__main__":
    sys.exit(main())
