"""The launcher of `mesh up`: one process that imports the runtime and the plan's agents once, then forks each agent.

Owns the preload (imports, `gc.freeze()` so the forks' collector leaves the shared pages alone, and
the check that no thread runs: a fork copies only the thread that calls it), the fork loop (a
blocking `selectors` loop, so no event loop exists here when it forks) and the control protocol
with `mesh up` (`mesh.runtime.preloaded`): one JSON message per datagram on a SOCK_SEQPACKET pair,
file descriptors passed alongside. A fork becomes what `mesh run` would be (`mesh.runtime.forked`);
the launcher reaps it and reports its exit status. When `mesh up` goes away (its end of the control
socket closes) it stops every agent it forked, then exits: a killed `mesh up` leaves none behind.

    python -m mesh.runtime.launcher --control-fd FD [--preload TARGET ...]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Annotated, Final, Literal, final

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

__all__ = [
    "MAX_MESSAGE",
    "Exited",
    "ForkSpec",
    "Message",
    "Ready",
    "Refused",
    "Spawn",
    "SpawnFailed",
    "Spawned",
    "decode",
    "encode",
    "launcher_argv",
    "main",
]

MAX_MESSAGE: Final = 64 * 1024
"""The largest control message, in bytes (one datagram)."""

STOP_GRACE: Final = 10.0
"""Seconds the agents get to stop after SIGTERM once `mesh up` is gone, before SIGKILL."""

_RUNTIME: Final = (
    # What a served agent imports, so that no fork imports anything on its own. The first line is
    # the import graph of `mesh run`; the rest is what uvicorn, httpx2 and anyio import lazily
    # on the first request or connection. A missing optional one (uvloop, httptools) is skipped.
    "mesh.runtime.process",
    "mesh.runtime.loader",
    "mesh.runtime.forked",
    "anyio._backends._asyncio",
    "anyio.streams.stapled",
    "anyio.streams.tls",
    "concurrent.futures.thread",
    "h11",
    "httpcore2",
    "httptools",
    "truststore",
    "uvicorn.lifespan.on",
    "uvicorn.protocols.http.h11_impl",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.protocols.websockets.auto",
    "uvloop",
    "rich.console",
    "rich.logging",
    "ctypes",
)

log = logging.getLogger(__name__)


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ForkSpec(_Message):
    """One agent to fork, as `mesh run TARGET --name N --meta K=V ... --registry URL --policy FILE` would serve it."""

    label: str
    target: str
    mesh: str
    name: str | None = None
    meta: tuple[tuple[str, str], ...] = ()
    registry: str | None = None
    policy: str | None = None
    mdns: bool = True


class Spawn(_Message):
    """`mesh up` → launcher: fork `spec`; the child's stdout and stderr (pipe write ends) ride along."""

    op: Literal["spawn"] = "spawn"
    id: int
    spec: ForkSpec


class Ready(_Message):
    """Launcher → `mesh up`: preloaded, ready to fork; `failed` maps a target to why it did not import here."""

    op: Literal["ready"] = "ready"
    preloaded: tuple[str, ...] = ()
    failed: dict[str, str] = Field(default_factory=dict[str, str])


class Refused(_Message):
    """Launcher → `mesh up`: forking is not safe here (a thread runs); start agents the usual way."""

    op: Literal["refused"] = "refused"
    reason: str


class Spawned(_Message):
    """Launcher → `mesh up`: spawn `id` runs as `pid`; a pidfd of it rides along (signals never hit a recycled pid)."""

    op: Literal["spawned"] = "spawned"
    id: int
    pid: int


class SpawnFailed(_Message):
    """Launcher → `mesh up`: spawn `id` could not fork."""

    op: Literal["spawn-failed"] = "spawn-failed"
    id: int
    error: str


class Exited(_Message):
    """Launcher → `mesh up`: `pid` ended; `code` as `Popen.returncode` has it (negative: the signal)."""

    op: Literal["exited"] = "exited"
    pid: int
    code: int


Message = Annotated[Spawn | Ready | Refused | Spawned | SpawnFailed | Exited, Field(discriminator="op")]
"""Every control message, either way."""

_messages: Final = TypeAdapter[Spawn | Ready | Refused | Spawned | SpawnFailed | Exited](Message)


def encode(message: Spawn | Ready | Refused | Spawned | SpawnFailed | Exited) -> bytes:
    """One datagram's bytes."""
    data = message.model_dump_json().encode()
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"a control message of {len(data)} bytes is over {MAX_MESSAGE}")
    return data


def decode(data: bytes) -> Spawn | Ready | Refused | Spawned | SpawnFailed | Exited:
    """The message in one datagram; ValueError if it is none."""
    try:
        return _messages.validate_json(data)
    except ValidationError as exc:
        raise ValueError(f"not a launcher message: {exc.error_count()} bad fields") from None


def launcher_argv(control_fd: int, preload: Sequence[str]) -> list[str]:
    """The launcher's command line."""
    args = [sys.executable, "-m", "mesh.runtime.launcher", "--control-fd", str(control_fd)]
    for target in preload:
        args += ["--preload", target]
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Preload, say so on the control socket, then fork agents on request until `mesh up` closes it."""
    parser = argparse.ArgumentParser(prog="mesh.runtime.launcher")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--preload", action="append", default=[])
    args = parser.parse_args(argv)
    gc.disable()  # nothing to collect yet; collections would only dirty pages the forks are to share
    control = socket.socket(fileno=args.control_fd)
    logging.basicConfig(  # as `mesh run` does (mesh.cli.main): the forks inherit it
        level=os.environ.get("MESH_LOG_LEVEL", "WARNING").upper(),
        format="mesh: %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    preloaded, failed = _preload(args.preload)
    threads = _threads()
    if threads > 1:
        names = ", ".join(t.name for t in threading.enumerate())
        _send(control, Refused(reason=f"{threads} threads run after the preload ({names}): forking is not safe"))
        return
    gc.collect()
    gc.freeze()
    _send(control, Ready(preloaded=tuple(preloaded), failed=failed))
    _ForkLoop(control).serve()


def _preload(targets: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Import the runtime and every target; a target that fails is left for its fork to report."""
    for module in _RUNTIME:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    from mesh.runtime.loader import preload_agent
    from mesh.tls import client_context

    client_context()  # the trust store, parsed once for every fork
    preloaded: list[str] = []
    failed: dict[str, str] = {}
    for target in targets:
        try:
            preload_agent(target)
        except (Exception, SystemExit) as exc:  # the fork loads it again and fails as `mesh run` would
            failed[target] = str(exc) or type(exc).__name__
        else:
            preloaded.append(target)
    return preloaded, failed


def _threads() -> int:
    """Threads in this process: Python's, and the kernel's count where there is one (native threads too)."""
    count = threading.active_count()
    with contextlib.suppress(OSError):
        count = max(count, len(os.listdir("/proc/self/task")))
    return count


def _send(
    control: socket.socket, message: Spawned | SpawnFailed | Exited | Ready | Refused, fds: Sequence[int] = ()
) -> bool:
    """Send `message` (and `fds`); False once `mesh up` is gone."""
    try:
        socket.send_fds(control, [encode(message)], list(fds))
    except OSError:  # BrokenPipeError, ConnectionResetError: the supervisor went away
        return False
    return True


@final
class _ForkLoop:
    """Forks on request, reaps what ends, reports both; stops every child when the control socket closes."""

    def __init__(self, control: socket.socket) -> None:
        self._control = control
        self._selector = selectors.DefaultSelector()
        self._children: dict[int, int] = {}
        """pidfd → pid of every child not yet reaped."""

    def serve(self) -> None:
        """Run until `mesh up` closes its end, then stop the children."""
        self._selector.register(self._control, selectors.EVENT_READ, None)
        try:
            while self._step():
                pass
        finally:
            self._stop_children()

    def _step(self) -> bool:
        for key, _ in self._selector.select():
            if key.data is None:
                if not self._command():
                    return False
            else:
                self._reap(key.fd, key.data)
        return True

    def _command(self) -> bool:
        """Handle one message from `mesh up`; False at the end of the conversation."""
        try:
            data, fds, _, _ = socket.recv_fds(self._control, MAX_MESSAGE, 2)
        except OSError:
            return False
        if not data:
            return False
        try:
            message = decode(data)
        except ValueError as exc:
            log.error("launcher: %s", exc)
            _close(fds)
            return True
        if not isinstance(message, Spawn) or len(fds) != 2:
            log.error("launcher: unexpected %s message with %d descriptors", message.op, len(fds))
            _close(fds)
            return True
        return self._spawn(message, fds[0], fds[1])

    def _spawn(self, message: Spawn, stdout: int, stderr: int) -> bool:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # or the child would print what the launcher had buffered
        try:
            pid = os.fork()
        except OSError as exc:
            _close([stdout, stderr])
            return _send(self._control, SpawnFailed(id=message.id, error=str(exc)))
        if pid == 0:
            from mesh.runtime.forked import become

            inherited = [self._control.fileno(), self._selector_fd(), *self._children]
            become(message.spec, stdout=stdout, stderr=stderr, inherited=inherited)
        _close([stdout, stderr])
        pidfd = os.pidfd_open(pid)
        self._children[pidfd] = pid
        self._selector.register(pidfd, selectors.EVENT_READ, pid)
        return _send(self._control, Spawned(id=message.id, pid=pid), [pidfd])

    def _selector_fd(self) -> int:
        fileno = getattr(self._selector, "fileno", None)
        value: object = fileno() if callable(fileno) else -1
        return value if isinstance(value, int) else -1

    def _reap(self, pidfd: int, pid: object) -> None:
        assert isinstance(pid, int)
        self._forget(pidfd)
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return
        _send(self._control, Exited(pid=pid, code=os.waitstatus_to_exitcode(status)))

    def _forget(self, pidfd: int) -> None:
        self._selector.unregister(pidfd)
        os.close(pidfd)
        del self._children[pidfd]

    def _stop_children(self) -> None:
        """SIGTERM every child, SIGKILL what is left after `STOP_GRACE`, reap them all."""
        for sig, wait in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, STOP_GRACE)):
            for pidfd in list(self._children):
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, sig)
            deadline = time.monotonic() + wait
            while self._children and (left := deadline - time.monotonic()) > 0:
                for key, _ in self._selector.select(left):
                    if key.data is not None:
                        self._reap(key.fd, key.data)
            if not self._children:
                return


def _close(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


if __name__ == "__main__":
    from mesh.runtime import launcher  # the module by its name, not as __main__: the forks import it so

    launcher.main()
