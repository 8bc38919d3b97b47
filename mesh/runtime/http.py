"""Serving an ASGI app with uvicorn on a socket we bind ourselves.

Binding first gives a clear error for a port in use and the real port for `--port 0`
before anything is announced. Owns uvicorn's lifecycle: signals are the caller's
(uvicorn's own handlers would re-raise SIGTERM after shutdown and skip our exit work).
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Generator

import anyio
import uvicorn
from starlette.types import ASGIApp

from mesh.errors import ConfigError

__all__ = ["bind", "serve"]


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
    config = uvicorn.Config(
        app,
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
                server.should_exit = True

        tg.start_soon(stop_on_cancel)
        # Shielded so a cancellation becomes a graceful shutdown instead of an abandoned server.
        with anyio.CancelScope(shield=True):
            await server.serve(sockets=[sock])
        tg.cancel_scope.cancel()


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None]:
        yield


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True
