"""`Gate`: holds the blocking calls a test sends through it until the test opens it again.

For tests that show the rest keeps working while one call is stuck (a database that does not
answer, a lock held elsewhere): the test closes the gate, starts the call, waits until the call is
held, asserts on everything else, then opens the gate. Nothing here is used in production paths.
"""

from __future__ import annotations

import threading
from typing import final

import anyio
import anyio.to_thread

__all__ = ["Gate"]


@final
class Gate:
    """Open until `close()`; then a thread calling `through()` waits there until `open()` (or its timeout).

    ```python
    gate = Gate()
    gate.close()
    tg.start_soon(call_that_ends_in, gate.through)  # e.g. a store wrapper's method
    await gate.held()  # the call is stuck in its thread now
    ...  # what must not wait for it
    gate.open()
    ```
    """

    def __init__(self, *, timeout: float = 10.0) -> None:
        self.timeout = timeout
        """Longest a call is held; then `through()` raises TimeoutError, so a test that would hang fails."""
        self._open = threading.Event()
        self._open.set()
        self._held = threading.Event()

    def close(self) -> None:
        """Hold every call that comes through from now on."""
        self._held.clear()
        self._open.clear()

    def open(self) -> None:
        """Let the held calls, and every later one, through."""
        self._open.set()

    def through(self) -> None:
        """Pass, or wait (in the calling thread) while the gate is closed; TimeoutError after `timeout` seconds."""
        if self._open.is_set():
            return
        self._held.set()
        if not self._open.wait(self.timeout):
            raise TimeoutError(f"the gate stayed closed for {self.timeout:g} s")

    async def held(self, timeout: float = 10.0) -> None:
        """Return once a call waits at the closed gate; TimeoutError if none does within `timeout` seconds."""
        if not await anyio.to_thread.run_sync(self._held.wait, timeout):
            raise TimeoutError(f"no call came to the gate within {timeout:g} s")
