"""A request cut off by the server's shutdown is answered 503 and ends quietly; before that, cancellation propagates."""

from __future__ import annotations

import anyio
import pytest
from starlette.types import Message, Receive, Scope, Send

from mesh.runtime.http import QuietShutdown

pytestmark = pytest.mark.anyio


async def _cut_off(stopping: bool) -> tuple[list[Message], str]:
    """Run a request that never finishes, cancel it, and return what was sent and how it ended."""
    begun = anyio.Event()

    async def forever(scope: Scope, receive: Receive, send: Send) -> None:
        begun.set()
        await anyio.sleep_forever()

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    quiet = QuietShutdown(forever)
    ended: list[str] = []

    async def request() -> None:
        try:
            await quiet({"type": "http"}, receive, send)
        except anyio.get_cancelled_exc_class():
            ended.append("cancelled")
            raise
        ended.append("returned")

    async with anyio.create_task_group() as tg:
        tg.start_soon(request)
        await begun.wait()
        quiet.stopping = stopping
        tg.cancel_scope.cancel()
    return sent, ended[0]


async def test_a_request_cut_off_by_shutdown_gets_503_and_ends_quietly() -> None:
    sent, ended = await _cut_off(stopping=True)
    assert ended == "returned"
    assert [message["type"] for message in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 503
    assert (b"retry-after", b"1") in sent[0]["headers"]


async def test_before_shutdown_a_cancelled_request_is_cancelled() -> None:
    sent, ended = await _cut_off(stopping=False)
    assert ended == "cancelled"
    assert sent == []
