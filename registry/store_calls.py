"""Blocking store calls made off the event loop: `StoreCalls`, worker threads in two bounded lanes.

Owns how the registry's HTTP handlers and MCP tools wait on a store: a SQLite fsync or a
PostgreSQL round trip (or a lock wait, up to its statement timeout) then holds up that request
only, never the other requests the loop serves; and reads never queue behind writes. It does not
know what a store is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeVar, TypeVarTuple, final

import anyio
import anyio.to_thread

__all__ = ["STORE_READERS", "STORE_WRITERS", "StoreCalls"]

STORE_WRITERS: Final = 4
"""Writing store calls running at once by default (heartbeats, registrations, decisions)."""
STORE_READERS: Final = 2
"""Reading store calls running at once by default (listings, counts), beside the writers."""

_T = TypeVar("_T")
_Args = TypeVarTuple("_Args")


@final
class StoreCalls:
    """Runs a blocking store call in a worker thread, in its lane: at most `writers` writes and `readers` reads at once.

    One per database. Two lanes, because writes queue up when the database is slow to make them
    durable (an fsync each) and a listing must not wait behind them. Bounding the threads by the
    connection pool means a call never waits for a pooled connection, whose timeout reads as a lost
    database. A call whose request is cancelled runs to its end (a write the database made is not
    left half-known).
    """

    def __init__(self, *, writers: int = STORE_WRITERS, readers: int = STORE_READERS) -> None:
        self.threads = writers + readers
        """How many calls may run at once, both lanes together."""
        self._writers = anyio.CapacityLimiter(writers)
        self._readers = anyio.CapacityLimiter(readers)

    async def write(self, call: Callable[[*_Args], _T], *args: *_Args) -> _T:
        """`call(*args)`'s result (or its exception), computed in a worker thread of the writers' lane."""
        return await anyio.to_thread.run_sync(call, *args, limiter=self._writers)

    async def read(self, call: Callable[[*_Args], _T], *args: *_Args) -> _T:
        """`call(*args)`'s result (or its exception), computed in a worker thread of the readers' lane.

        For calls that change nothing: they never wait for a write to end before they start.
        """
        return await anyio.to_thread.run_sync(call, *args, limiter=self._readers)
