"""`mesh up`'s side of the launcher (`mesh.runtime.launcher`): start it, fork agents through it, follow them.

Owns the launcher process, the control socket's conversation and `ForkedProcess`, the handle of
one forked agent: its pid, its stdout and stderr (pipes this process made), its exit status (which
the launcher, its parent, reports) and signals (through a pidfd, so a recycled pid is never hit).
If the launcher dies, the agents it forked keep running; their ends are then seen through their
pidfds, without an exit code. Which agents to fork and when is the supervisor's business.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Final, final

import anyio
import anyio.abc

from mesh.errors import MeshError
from mesh.runtime.launcher import (
    MAX_MESSAGE,
    STOP_GRACE,
    Exited,
    ForkSpec,
    Ready,
    Refused,
    Spawn,
    Spawned,
    SpawnFailed,
    decode,
    encode,
    launcher_argv,
)

__all__ = ["ENV_SWITCH", "ForkedProcess", "Launcher", "LauncherFailed", "preload_wanted"]

ENV_SWITCH: Final = "MESH_UP_PRELOAD"
"""`MESH_UP_PRELOAD=0` makes `mesh up` start every agent as its own `python -m mesh run` again."""

UNKNOWN_EXIT: Final = -1
"""The exit code of a forked agent whose launcher died before reporting it."""

_CLOSE_WAIT: Final = 2 * STOP_GRACE + 5.0
"""Seconds the launcher gets to stop what it still runs (SIGTERM, then SIGKILL) and exit."""
_SPAWN_WAIT: Final = 30.0


def preload_wanted() -> bool:
    """Whether `mesh up` forks agents from a launcher: on Linux (pidfds), unless `MESH_UP_PRELOAD=0`."""
    return os.environ.get(ENV_SWITCH, "1") != "0" and sys.platform == "linux" and hasattr(os, "pidfd_open")


class LauncherFailed(MeshError):
    """The launcher could not start, or refused to fork; agents are started the usual way instead."""


@final
class ForkedProcess:
    """One forked agent: the part of `anyio.abc.Process` that the supervisor uses."""

    def __init__(self, pid: int, pidfd: int, stdout: int, stderr: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.stdout: anyio.abc.ByteReceiveStream | None = _PipeStream(stdout)
        self.stderr: anyio.abc.ByteReceiveStream | None = _PipeStream(stderr)
        self._pidfd = pidfd
        self._ended = anyio.Event()

    async def wait(self) -> int:
        """The exit code, once the process has ended."""
        await self._ended.wait()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: signal.Signals) -> None:
        """Send `sig`; ProcessLookupError once the process has ended."""
        if self._pidfd < 0:
            raise ProcessLookupError(self.pid)
        signal.pidfd_send_signal(self._pidfd, sig)

    def kill(self) -> None:
        """SIGKILL."""
        self.send_signal(signal.SIGKILL)

    async def aclose(self) -> None:
        """Close the pipes and the pidfd (the process is not waited for: its parent is the launcher)."""
        assert self.stdout is not None
        assert self.stderr is not None
        await self.stdout.aclose()
        await self.stderr.aclose()
        self._close_pidfd()

    def ended(self, code: int) -> None:
        """The launcher (or the pidfd) says the process has ended with `code`."""
        if self.returncode is None:
            self.returncode = code
            self._close_pidfd()
            self._ended.set()

    async def watch_pidfd(self) -> None:
        """Wait for the end through the pidfd alone (the launcher is gone, so no exit code will come)."""
        if self._pidfd >= 0 and self.returncode is None:
            with contextlib.suppress(OSError, anyio.ClosedResourceError):
                await anyio.wait_readable(self._pidfd)
        self.ended(UNKNOWN_EXIT)

    def _close_pidfd(self) -> None:
        if self._pidfd >= 0:
            fd, self._pidfd = self._pidfd, -1
            anyio.notify_closing(fd)
            os.close(fd)


@final
class Launcher:
    """The launcher process of one `mesh up`: `start`, `wait_ready`, then `spawn` agents; `close` at the end."""

    def __init__(
        self, *, preload: Sequence[str], env: Mapping[str, str], cwd: str, output: Callable[[str], None]
    ) -> None:
        self._preload = list(preload)
        self._env = dict(env)
        self._cwd = cwd
        self._output = output
        self._control: socket.socket | None = None
        self._process: anyio.abc.Process | None = None
        self._next_id = 0
        self._pending: dict[int, _Pending] = {}
        self._children: dict[int, ForkedProcess] = {}
        self._ready = anyio.Event()
        self._gone = anyio.Event()
        self._failure: str | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self.preloaded: frozenset[str] = frozenset()
        """The targets imported in the launcher (the others import in their fork)."""
        self.failed: dict[str, str] = {}
        """Targets whose import failed in the launcher, and why: their forks will fail the same way."""

    @property
    def alive(self) -> bool:
        """True while the launcher is ready and answering."""
        return self._ready.is_set() and not self._gone.is_set() and self._failure is None

    @property
    def pid(self) -> int | None:
        """The launcher's own pid, once started."""
        return self._process.pid if self._process is not None else None

    async def start(self, tg: anyio.abc.TaskGroup) -> None:
        """Start the launcher process; its messages and output are followed in `tg`."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._process = await anyio.open_process(
                launcher_argv(theirs.fileno(), self._preload),
                env=self._env,
                cwd=self._cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                pass_fds=[theirs.fileno()],
            )
        except OSError as exc:
            ours.close()
            raise LauncherFailed(f"cannot start the launcher: {exc}") from exc
        finally:
            theirs.close()
        ours.setblocking(False)
        self._control = ours
        self._tg = tg
        tg.start_soon(self._read)
        assert self._process.stdout is not None
        assert self._process.stderr is not None
        tg.start_soon(self._relay, self._process.stdout)
        tg.start_soon(self._relay, self._process.stderr)

    async def wait_ready(self, timeout: float) -> None:
        """Return once the launcher has preloaded; LauncherFailed if it refuses, dies or takes longer than `timeout`."""
        with anyio.move_on_after(timeout):
            await _first(self._ready, self._gone)
        if self._failure is not None:
            raise LauncherFailed(self._failure)
        if not self._ready.is_set():
            raise LauncherFailed(
                "the launcher exited before it was ready" if self._gone.is_set() else f"not ready within {timeout:g}s"
            )

    async def spawn(self, spec: ForkSpec) -> ForkedProcess:
        """Fork `spec` in the launcher; LauncherFailed if it cannot."""
        if not self.alive or self._control is None:
            raise LauncherFailed("the launcher is not running")
        out_read, out_write = os.pipe2(os.O_CLOEXEC)
        err_read, err_write = os.pipe2(os.O_CLOEXEC)
        self._next_id += 1
        spawn_id = self._next_id
        pending = self._pending[spawn_id] = _Pending(out_read, err_read)
        try:
            await _send(self._control, encode(Spawn(id=spawn_id, spec=spec)), [out_write, err_write])
        except OSError as exc:
            self._pending.pop(spawn_id, None)
            pending.close()
            raise LauncherFailed(f"the launcher is gone: {exc}") from exc
        finally:
            os.close(out_write)
            os.close(err_write)
        with anyio.CancelScope(shield=True), anyio.move_on_after(_SPAWN_WAIT):
            await _first(pending.answered, self._gone)  # the answer owns the pipes: wait for it even when cancelled
        self._pending.pop(spawn_id, None)
        if pending.process is None:
            pending.close()
            raise LauncherFailed(pending.error or ("the launcher is gone" if self._gone.is_set() else "no answer"))
        return pending.process

    async def close(self) -> None:
        """Close the control socket (the launcher then stops what it still runs) and wait for its exit, bounded."""
        if self._control is not None:
            anyio.notify_closing(self._control)
            self._control.close()
        process = self._process
        if process is None:
            return
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(_CLOSE_WAIT):
                await process.wait()
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
            await process.aclose()

    async def _read(self) -> None:
        control = self._control
        assert control is not None
        try:
            while True:
                try:
                    await anyio.wait_readable(control)
                    data, fds, _, _ = socket.recv_fds(control, MAX_MESSAGE, 1)
                except BlockingIOError:
                    continue
                except (OSError, anyio.ClosedResourceError):
                    return
                if not data:
                    return
                self._handle(data, fds)
        finally:
            self._lost()

    def _handle(self, data: bytes, fds: list[int]) -> None:
        try:
            message = decode(data)
        except ValueError as exc:
            self._output(f"launcher: {exc}")
            _close(fds)
            return
        if isinstance(message, Ready):
            self.preloaded = frozenset(message.preloaded)
            self.failed = dict(message.failed)
            self._ready.set()
        elif isinstance(message, Refused):
            self._failure = message.reason
            self._gone.set()
        elif isinstance(message, Spawned) and len(fds) == 1 and message.id in self._pending:
            pending = self._pending.pop(message.id)
            pending.process = ForkedProcess(message.pid, fds[0], pending.stdout, pending.stderr)
            self._children[message.pid] = pending.process
            pending.answered.set()
        elif isinstance(message, SpawnFailed) and message.id in self._pending:
            pending = self._pending.pop(message.id)
            pending.error = f"could not fork: {message.error}"
            pending.answered.set()
        elif isinstance(message, Exited) and message.pid in self._children:
            self._children.pop(message.pid).ended(message.code)
        else:
            self._output(f"launcher: unexpected {message.op} message")
            _close(fds)

    def _lost(self) -> None:
        """The control socket ended: no more exit codes; follow the forks through their pidfds."""
        self._gone.set()
        for pending in self._pending.values():
            pending.answered.set()
        self._pending.clear()
        if self._tg is not None:
            for child in self._children.values():
                self._tg.start_soon(child.watch_pidfd)
        self._children.clear()

    async def _relay(self, stream: anyio.abc.ByteReceiveStream) -> None:
        from anyio.streams.text import TextReceiveStream

        pending = ""
        async for chunk in TextReceiveStream(stream, errors="replace"):
            *lines, pending = (pending + chunk).split("\n")
            for line in lines:
                if line.strip():
                    self._output(line.rstrip())
        if pending.strip():
            self._output(pending.rstrip())


@final
class _Pending:
    """A spawn sent and not yet answered: the read ends of its pipes until a process owns them."""

    def __init__(self, stdout: int, stderr: int) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.answered = anyio.Event()
        self.process: ForkedProcess | None = None
        self.error: str | None = None

    def close(self) -> None:
        _close([self.stdout, self.stderr])


@final
class _PipeStream(anyio.abc.ByteReceiveStream):
    """The read end of a pipe as an anyio byte stream."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while True:
            if self._fd < 0:
                raise anyio.ClosedResourceError
            try:
                data = os.read(self._fd, max_bytes)
            except BlockingIOError:
                await anyio.wait_readable(self._fd)
                continue
            if not data:
                raise anyio.EndOfStream
            return data

    async def aclose(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            anyio.notify_closing(fd)
            os.close(fd)


async def _send(control: socket.socket, data: bytes, fds: list[int]) -> None:
    while True:
        try:
            socket.send_fds(control, [data], fds)
        except BlockingIOError:
            await anyio.wait_writable(control)
        else:
            return


async def _first(a: anyio.Event, b: anyio.Event) -> None:
    """Return as soon as `a` or `b` is set."""
    async with anyio.create_task_group() as tg:

        async def wait(event: anyio.Event) -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(wait, a)
        tg.start_soon(wait, b)


def _close(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
