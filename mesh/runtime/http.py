"""Serving an ASGI app with uvicorn on a socket we bind ourselves.

Binding first gives a clear error for a port in use and the real port for `--port 0`
before anything is announced. Owns uvicorn's lifecycle: signals are the caller's
(uvicorn's own handlers would re-raise SIGTERM after shutdown and skip our exit work). A
request still running when the graceful shutdown runs out (a call waiting on a person's
approval, say) is answered 503 and ended quietly, where uvicorn would log its cancellation
as a crash: a 60-line traceback per process on every Ctrl-C of a busy mesh.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from collections.abc import Generator
from typing import final

import anyio
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from mesh.errors import ConfigError

__all__ = ["QuietShutdown", "bind", "serve"]


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0 picks a free one); ConfigError if taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def serve(app: ASGIApp, sock: socket.socket, *, graceful_seconds: float = 3.0) -> None:
    """Serve `app` on `sock` until cancelled, then shut down gracefully (bounded) and return."""
    quiet = QuietShutdown(app)
    uvicorn_log = logging.getLogger("uvicorn.error")
    if _say_cut_off not in uvicorn_log.filters:
        uvicorn_log.addFilter(_say_cut_off)
    config = uvicorn.Config(
        quiet,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(graceful_seconds) or 1,
        http="httptools" if _has("httptools") else "h11",
    )
    server = _Server(config)
    async with anyio.create_task_group() as tg:

        async def stop_on_cancel() -> None:
            try:
                await anyio.sleep_forever()
            finally:
                quiet.stopping = True
                server.should_exit = True
                server.exit_now.set()

        tg.start_soon(stop_on_cancel)
        # Shielded so a cancellation becomes a graceful shutdown instead of an abandoned server.
        with anyio.CancelScope(shield=True):
            await server.serve(sockets=[sock])
        tg.cancel_scope.cancel()


@final
class QuietShutdown:
    """ASGI wrapper: once `stopping`, a cancelled HTTP request is answered 503 (unless its answer
    had begun) and ends without raising, so that uvicorn's cancellation of what outlives its
    graceful shutdown is not logged as an application crash. Before that, cancellation propagates."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.stopping = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except anyio.get_cancelled_exc_class():
            if not self.stopping or scope["type"] != "http":
                raise
            # uvicorn refuses a second response start (RuntimeError); the connection may be gone.
            with contextlib.suppress(Exception):
                await send({"type": "http.response.start", "status": 503, "headers": _RETRY_LATER})
                await send({"type": "http.response.body", "body": b"the server is shutting down\n"})


_RETRY_LATER = [(b"content-type", b"text/plain; charset=utf-8"), (b"retry-after", b"1")]


def _say_cut_off(record: logging.LogRecord) -> bool:
    # uvicorn logs the end of its graceful shutdown as an ERROR; with `QuietShutdown` it is
    # expected (a call waiting on a person, say), and each such request has been ended.
    if record.msg == "Cancel %s running task(s), timeout graceful shutdown exceeded":
        record.msg = "%s request(s) still running at shutdown were ended (answered 503 if no answer had begun)"
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.exit_now = anyio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None]:
        yield

    async def main_loop(self) -> None:
        # uvicorn looks at `should_exit` ten times a second; an idle mesh of many agents spent its
        # CPU on those wake-ups. Once a second (the Date header's resolution) is enough, with a stop
        # waking it at once.
        while not await self.on_tick(0):
            with anyio.move_on_after(1.0):
                await self.exit_now.wait()


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True
