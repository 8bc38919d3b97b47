"""StoreCalls: blocking store calls in worker threads, reads in a lane of their own."""

from __future__ import annotations

import threading

import anyio
import pytest

from mesh.testing.gate import Gate
from registry.store_calls import StoreCalls

pytestmark = pytest.mark.anyio


async def test_a_call_runs_off_the_event_loop_and_gives_back_its_result_or_its_error() -> None:
    calls = StoreCalls()
    loop_thread = threading.get_ident()

    assert await calls.write(threading.get_ident) != loop_thread
    assert await calls.read(lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(ZeroDivisionError):
        await calls.write(lambda: 1 / 0)


async def test_a_read_does_not_wait_behind_writes_stuck_in_the_store() -> None:
    calls, gate = StoreCalls(writers=1, readers=1), Gate()
    gate.close()
    async with anyio.create_task_group() as tg:
        for _ in range(3):  # one stuck in the store, two queued behind it for the one writer's thread
            tg.start_soon(calls.write, gate.through)
        try:
            await gate.held()
            with anyio.fail_after(10):
                assert await calls.read(lambda: "listed") == "listed"
        finally:
            gate.open()
