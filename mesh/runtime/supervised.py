"""One child of `mesh up` under supervision: its status, readiness, exits, and restarts with backoff.

Owns a child's life across its processes: start one (however the supervisor says: a subprocess or a
fork of the launcher), read its output, take its `listening on URL` line and then `/healthz` as
ready, notice its exit, and, under `restart = "on-failure"`, start it again after an exponential
backoff (a process that keeps failing before it is ready is given up on after a few tries). Also
`summary`, the footer's truth: how many agents are ready, starting, restarting, crashed.
"""

from __future__ import annotations

import contextlib
import re
import signal
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from functools import partial
from typing import Final, Literal, Protocol, final

import anyio
import anyio.abc
import httpx2
from anyio.streams.text import TextReceiveStream

from mesh.errors import MeshError
from mesh.runtime.meshfile import RestartPolicy

__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MAX",
    "START_RETRIES",
    "ChildKind",
    "ChildProcess",
    "ChildState",
    "ChildStatus",
    "Observer",
    "Supervised",
    "summary",
]

ChildKind = Literal["registry", "agent"]
ChildState = Literal["starting", "ready", "restarting", "stopping", "exited"]

BACKOFF_FIRST: Final = 0.5
"""Seconds before the first restart; each further one waits twice as long, up to `BACKOFF_MAX`."""
BACKOFF_MAX: Final = 30.0
STABLE: Final = 10.0
"""Seconds a process must stay ready for its next crash to be restarted after `BACKOFF_FIRST` again."""
START_RETRIES: Final = 3
"""Restarts tried for a child whose processes exit before they are ready, before it is given up on."""

_LISTENING: Final = re.compile(r"listening on (http://\S+)")
_AGENT_NAME: Final = re.compile(r"mesh: agent (\S+) \(")
_HEALTH_WAIT: Final = 10.0


@dataclass(frozen=True, slots=True)
class ChildStatus:
    """One child as last seen."""

    label: str
    kind: ChildKind
    target: str = ""
    pid: int | None = None
    state: ChildState = "starting"
    url: str | None = None
    name: str | None = None
    exit_code: int | None = None
    """The last process's exit code, once one has exited."""
    last_line: str = ""
    restarts: int = 0
    """How many times the child was started again after a crash."""
    restart_in: float | None = None
    """While `restarting`: seconds the backoff waits before the next start."""
    forked: bool = False
    """True when the process is a fork of the launcher (else its own `python -m mesh`)."""

    @property
    def shown_state(self) -> str:
        """`starting`, `ready`, `restarting`, `stopping` or `exited(CODE)`."""
        return f"exited({self.exit_code})" if self.state == "exited" else self.state

    @property
    def crashed(self) -> bool:
        """Down for good after a failure (a non-zero exit), not restarted."""
        return self.state == "exited" and self.exit_code != 0

    @property
    def recovering(self) -> bool:
        """Crashed and being restarted: waiting out the backoff, or started again and not ready yet."""
        return self.state == "restarting" or (self.state == "starting" and self.restarts > 0)


def summary(statuses: Iterable[ChildStatus]) -> str:
    """The footer: `ready: R of N agents`, then how many are starting, restarting, crashed, exited."""
    agents = [s for s in statuses if s.kind == "agent"]
    ready = sum(s.state == "ready" for s in agents)
    counts = {
        "starting": sum(s.state == "starting" and not s.recovering for s in agents),
        "restarting": sum(s.recovering for s in agents),
        "crashed": sum(s.crashed for s in agents),
        "exited": sum(s.state == "exited" and not s.crashed for s in agents),
        "stopping": sum(s.state == "stopping" for s in agents),
    }
    parts = [f"ready: {ready} of {len(agents)} agents", *(f"{n} {what}" for what, n in counts.items() if n)]
    return " · ".join(parts)


class Observer(Protocol):
    """Told what happens to the mesh; `mesh up` draws it as a live table or as plain lines."""

    def changed(self, status: ChildStatus) -> None:
        """A child's status changed."""
        ...

    def output(self, label: str, line: str) -> None:
        """A child wrote `line` (its readiness line excepted)."""
        ...

    def note(self, message: str) -> None:
        """Something happened to the mesh as a whole."""
        ...

    def ready(self, registry_url: str | None) -> None:
        """Every agent has settled (ready or not) for the first time: time to say what to type next."""
        ...


class ChildProcess(Protocol):
    """What supervision needs of a process: `anyio.abc.Process`, or a fork of the launcher."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    @property
    def stdout(self) -> anyio.abc.ByteReceiveStream | None: ...

    @property
    def stderr(self) -> anyio.abc.ByteReceiveStream | None: ...

    async def wait(self) -> int: ...

    def send_signal(self, sig: signal.Signals, /) -> None: ...

    def kill(self) -> None: ...

    async def aclose(self) -> None: ...


Starter = Callable[[], Awaitable[tuple[ChildProcess, bool]]]
"""Starts one process of a child: the process, and whether it is a fork of the launcher."""


@final
class Supervised:
    """One child across its processes: run it (and restart it) until it is down for good."""

    def __init__(
        self,
        label: str,
        kind: ChildKind,
        target: str,
        start: Starter,
        observer: Observer,
        health: httpx2.AsyncClient,
        *,
        restart: RestartPolicy = "no",
    ) -> None:
        self.status = ChildStatus(label=label, kind=kind, target=target)
        self.observer = observer
        self.settled = anyio.Event()
        """Set once the child was first ready, or its first process exited."""
        self.exited = anyio.Event()
        """Set once the child is down for good: exited and not to be restarted."""
        self._start = start
        self._health = health
        self._restart = restart
        self._stop = anyio.Event()
        self._process: ChildProcess | None = None
        self._health_scope: anyio.CancelScope | None = None
        self._ready_at: float | None = None
        self._task_status: anyio.abc.TaskStatus[None] | None = None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the child (reporting once its first process is started), restart it as its policy says."""
        backoff = BACKOFF_FIRST
        failed_starts = 0
        self._task_status = task_status
        try:
            while True:
                code = await self._one_process()
                if self._stop.is_set() or not self._restartable(code):
                    return  # shown as exited below
                ready_for = anyio.current_time() - self._ready_at if self._ready_at is not None else None
                failed_starts = 0 if ready_for is not None else failed_starts + 1
                if ready_for is not None and ready_for >= STABLE:
                    backoff = BACKOFF_FIRST
                if failed_starts > START_RETRIES:
                    label = self.status.label
                    self.observer.note(f"{label} exited before it was ready {failed_starts} times in a row: left down")
                    return
                self._set(replace(self.status, state="restarting", restart_in=backoff))
                self.settled.set()
                with anyio.move_on_after(backoff):
                    await self._stop.wait()
                if self._stop.is_set():
                    return
                backoff = min(backoff * 2, BACKOFF_MAX)
                self.status = replace(self.status, restarts=self.status.restarts + 1, restart_in=None)
        finally:
            self._started()
            if self.status.state != "exited":
                code = self.status.exit_code if self.status.exit_code is not None else -9
                self._set(replace(self.status, state="exited", exit_code=code, restart_in=None))
            self.settled.set()
            self.exited.set()

    def signal(self, sig: signal.Signals) -> None:
        """Send `sig` to the running process, if there is one."""
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)

    def mark_stopping(self) -> None:
        """No more restarts; show the child as stopping (its SIGTERM is on the way)."""
        self._stop.set()
        if not self.exited.is_set() and self.status.state != "restarting":
            self._set(replace(self.status, state="stopping"))

    def _restartable(self, code: int) -> bool:
        return self._restart == "on-failure" and code != 0

    def _started(self) -> None:
        """Tell `run`'s starter that the first process is started (or could not be): once."""
        if self._task_status is not None:
            task_status, self._task_status = self._task_status, None
            task_status.started()

    async def _one_process(self) -> int:
        """Start one process and follow it to its end; its exit code (127 if it could not start)."""
        self._ready_at = None
        try:
            process, forked = await self._start()
        except (OSError, MeshError) as exc:
            self.status = replace(self.status, pid=None, exit_code=127, last_line=str(exc))
            self._started()
            return 127
        self._process = process
        if self._stop.is_set():  # a stop came while it was being started: it missed the SIGTERM
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        state: ChildState = "stopping" if self._stop.is_set() else "starting"
        self._set(replace(self.status, pid=process.pid, state=state, url=None, exit_code=None, forked=forked))
        self._started()
        code = -9
        try:
            async with anyio.create_task_group() as tg:
                assert process.stdout is not None
                assert process.stderr is not None
                tg.start_soon(self._follow, process.stdout, _keep)
                tg.start_soon(self._follow, process.stderr, partial(self._readiness, tg=tg))
                code = await process.wait()
                if self._health_scope is not None:
                    self._health_scope.cancel()
                self.status = replace(self.status, exit_code=code)  # shown by `run`: exited, or restarting
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                await process.aclose()
            self._process = None
        return code

    def _readiness(self, line: str, *, tg: anyio.abc.TaskGroup) -> bool:
        """Consume the `listening on URL` line (True); leave any other line to be shown."""
        match = _LISTENING.search(line)
        if match is None or self.status.url is not None:
            return False
        name = _AGENT_NAME.search(line)
        self._set(replace(self.status, url=match.group(1), name=name.group(1) if name else self.status.name))
        tg.start_soon(self._confirm_health, match.group(1).removesuffix("/mcp"))
        return True

    async def _confirm_health(self, base: str) -> None:
        with anyio.CancelScope() as scope, anyio.move_on_after(_HEALTH_WAIT):
            self._health_scope = scope
            while True:
                with contextlib.suppress(httpx2.TransportError):
                    if (await self._health.get(f"{base}/healthz")).status_code == 200:
                        if self.status.state == "starting":
                            self._ready_at = anyio.current_time()
                            self._set(replace(self.status, state="ready"))
                        self.settled.set()
                        return
                await anyio.sleep(0.05)  # polling a condition, with the deadline above

    async def _follow(self, stream: anyio.abc.ByteReceiveStream, consume: Callable[[str], bool]) -> None:
        pending = ""
        async for chunk in TextReceiveStream(stream, errors="replace"):
            pending += chunk
            *lines, pending = pending.split("\n")
            for line in lines:
                self._line(line, consume)
        if pending:
            self._line(pending, consume)

    def _line(self, line: str, consume: Callable[[str], bool]) -> None:
        line = line.rstrip()
        if not line or consume(line):
            return
        self.status = replace(self.status, last_line=line)
        self.observer.output(self.status.name or self.status.label, line)

    def _set(self, status: ChildStatus) -> None:
        self.status = status
        self.observer.changed(status)


def _keep(line: str) -> bool:
    """Consume nothing: every line is shown."""
    del line
    return False
