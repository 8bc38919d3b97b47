"""Supervising the processes of `mesh up` (DESIGN §2): the registry first, then every agent.

Owns the children: starting each `python -m mesh ...` in its own session (a terminal's Ctrl-C
reaches only `mesh up`, so the order of shutdown stays ours), readiness (its `listening on URL`
line, then `/healthz`), noticing exits, and stopping on SIGINT/SIGTERM/SIGHUP: SIGTERM to every
agent, SIGKILL after a grace period (or at a second signal), the registry last. It draws
nothing: an `Observer` is told. A SIGKILLed `mesh up` cannot stop its children: they outlive it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Final, Literal, Protocol, final

import anyio
import anyio.abc
import httpx2
from anyio.streams.text import TextReceiveStream

from mesh.errors import MeshError, RegistryError
from mesh.runtime.http import bind
from mesh.runtime.meshfile import MeshPlan

__all__ = ["ChildKind", "ChildState", "ChildStatus", "Observer", "up"]

ChildKind = Literal["registry", "agent"]
ChildState = Literal["starting", "ready", "stopping", "exited"]

_LISTENING: Final = re.compile(r"listening on (http://\S+)")
_AGENT_NAME: Final = re.compile(r"mesh: agent (\S+) \(")
_KILL_WAIT: Final = 5.0
_HEALTH_WAIT: Final = 10.0


@dataclass(frozen=True, slots=True)
class ChildStatus:
    """One child process as last seen."""

    label: str
    kind: ChildKind
    target: str = ""
    pid: int | None = None
    state: ChildState = "starting"
    url: str | None = None
    name: str | None = None
    exit_code: int | None = None
    last_line: str = ""

    @property
    def shown_state(self) -> str:
        """`starting`, `ready`, `stopping` or `exited(CODE)`."""
        return f"exited({self.exit_code})" if self.state == "exited" else self.state


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


async def up(plan: MeshPlan, observer: Observer, *, ready_timeout: float = 30.0, grace: float = 10.0) -> None:
    """Run `plan` until SIGINT, SIGTERM or SIGHUP, then stop every process; MeshError if it cannot start."""
    if plan.registry is not None and plan.registry.port:
        bind("127.0.0.1", plan.registry.port).close()  # a taken port is a one-line ConfigError now
    base_env = {**os.environ, "MESH_NAME": plan.mesh}
    cwd = str(plan.source.resolve().parent)
    registry: _Child | None = None
    agents: list[_Child] = []
    hurry = anyio.Event()  # a second signal: stop waiting for the grace period
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with anyio.create_task_group() as tg:
            try:
                with anyio.CancelScope() as running:
                    tg.start_soon(_cancel_on_signal, signals, running, hurry, observer)
                    registry_url: str | None = None
                    if plan.registry is not None:
                        argv = plan.registry.argv(mesh=plan.mesh, mdns=plan.mdns)
                        registry = _Child("registry", "registry", "registry", argv, base_env, cwd, observer)
                        await tg.start(registry.run)
                        registry_url = await _registry_ready(registry, ready_timeout)
                    for launch in plan.agents:
                        argv = launch.argv(mesh=plan.mesh, registry=registry_url, policy=plan.policy, mdns=plan.mdns)
                        env = {**base_env, **launch.environment()}
                        agent = _Child(launch.label, "agent", launch.shown, argv, env, cwd, observer)
                        agents.append(agent)
                        await tg.start(agent.run)
                    tg.start_soon(_report_ready, agents, registry_url, ready_timeout, observer)
                    await _all_exited(agents)
                    if agents:
                        raise MeshError(f"every agent has exited; the last said: {agents[-1].status.last_line or '-'}")
                    await anyio.sleep_forever()  # a registry-only mesh runs until signalled
            finally:
                with anyio.CancelScope(shield=True):
                    await _stop(agents, grace, hurry, observer)
                    await _stop([registry] if registry is not None else [], grace, hurry, observer)
                tg.cancel_scope.cancel()
    observer.note("stopped")


@final
class _Child:
    """One `python -m mesh ...` process: its status, readiness and exit."""

    def __init__(
        self,
        label: str,
        kind: ChildKind,
        target: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: str,
        observer: Observer,
    ) -> None:
        self.status = ChildStatus(label=label, kind=kind, target=target)
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.observer = observer
        self.settled = anyio.Event()
        """Set once the child is ready or has exited."""
        self.exited = anyio.Event()
        self._process: anyio.abc.Process | None = None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the process, follow its output until it exits, then close it."""
        process = await anyio.open_process(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._process = process
        self._set(replace(self.status, pid=process.pid))
        task_status.started()
        try:
            async with anyio.create_task_group() as tg:
                assert process.stdout is not None
                assert process.stderr is not None
                tg.start_soon(self._follow, process.stdout, _keep)
                tg.start_soon(self._follow, process.stderr, partial(self._readiness, tg=tg))
                self._on_exit(await process.wait())
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                await process.aclose()
                self._on_exit(process.returncode if process.returncode is not None else -9)

    def signal(self, sig: signal.Signals) -> None:
        """Send `sig` if the process is still running."""
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(sig)

    def _readiness(self, line: str, *, tg: anyio.abc.TaskGroup) -> bool:
        """Consume the `listening on URL` line (True); leave any other line to be shown."""
        match = _LISTENING.search(line)
        if match is None or self.status.url is not None:
            return False
        name = _AGENT_NAME.search(line)
        self._set(replace(self.status, url=match.group(1), name=name.group(1) if name else None))
        tg.start_soon(self._confirm_health, match.group(1).removesuffix("/mcp"))
        return True

    async def _confirm_health(self, base: str) -> None:
        with anyio.move_on_after(_HEALTH_WAIT):
            async with httpx2.AsyncClient(timeout=2.0) as http:
                while not self.exited.is_set():
                    with contextlib.suppress(httpx2.TransportError):
                        if (await http.get(f"{base}/healthz")).status_code == 200:
                            if self.status.state == "starting":
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

    def _on_exit(self, code: int) -> None:
        if self.status.state != "exited":
            self._set(replace(self.status, state="exited", exit_code=code))
        self.settled.set()
        self.exited.set()

    def mark_stopping(self) -> None:
        """Show the child as stopping (its SIGTERM is on the way)."""
        if not self.exited.is_set():
            self._set(replace(self.status, state="stopping"))

    def _set(self, status: ChildStatus) -> None:
        self.status = status
        self.observer.changed(status)


def _keep(line: str) -> bool:
    """Consume nothing: every line is shown."""
    del line
    return False


async def _cancel_on_signal(
    signals: AsyncIterator[signal.Signals], scope: anyio.CancelScope, hurry: anyio.Event, observer: Observer
) -> None:
    async for sig in signals:
        if not scope.cancel_called:
            observer.note(f"{sig.name}: stopping (again to kill at once)")
            scope.cancel()
        else:
            observer.note(f"{sig.name}: killing what is left")
            hurry.set()


async def _registry_ready(registry: _Child, timeout: float) -> str:
    with anyio.move_on_after(timeout):
        await registry.settled.wait()
    if registry.status.state == "ready" and registry.status.url is not None:
        return registry.status.url
    if registry.exited.is_set():
        said = registry.status.last_line.removeprefix("mesh: error: ") or f"exit code {registry.status.exit_code}"
        raise RegistryError(f"the registry did not start: {said}")
    raise RegistryError(f"the registry did not report ready within {timeout:g}s")


async def _report_ready(agents: list[_Child], registry_url: str | None, timeout: float, observer: Observer) -> None:
    with anyio.move_on_after(timeout):
        for agent in agents:
            await agent.settled.wait()
    ready = [a for a in agents if a.status.state == "ready"]
    late = [a.status.label for a in agents if a.status.state == "starting"]
    where = f", registry {registry_url}" if registry_url else ""
    observer.note(f"ready: {len(ready)} of {len(agents)} agents{where}")
    if late:
        observer.note(f"still starting after {timeout:g}s: {', '.join(late)}")
    observer.ready(registry_url)


async def _all_exited(children: list[_Child]) -> None:
    for child in children:
        await child.exited.wait()


async def _stop(children: Sequence[_Child], grace: float, hurry: anyio.Event, observer: Observer) -> None:
    """SIGTERM every running child at once; SIGKILL whichever is still there after `grace` (or `hurry`)."""
    running = [c for c in children if not c.exited.is_set()]
    if not running:
        return
    observer.note(f"stopping {', '.join(c.status.label for c in running)}")

    async def stop_one(child: _Child) -> None:
        child.mark_stopping()
        child.signal(signal.SIGTERM)
        with anyio.move_on_after(grace):
            await _either(child.exited, hurry)
        if not child.exited.is_set():
            if not hurry.is_set():
                observer.note(f"{child.status.label} did not stop within {grace:g}s: killing it")
            child.signal(signal.SIGKILL)
            with anyio.move_on_after(_KILL_WAIT):
                await child.exited.wait()

    async with anyio.create_task_group() as tg:
        for child in running:
            tg.start_soon(stop_one, child)


async def _either(a: anyio.Event, b: anyio.Event) -> None:
    """Return as soon as `a` or `b` is set."""
    async with anyio.create_task_group() as tg:

        async def wait(event: anyio.Event) -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(wait, a)
        tg.start_soon(wait, b)
