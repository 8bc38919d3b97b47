"""Supervising the processes of `mesh up` (DESIGN §2): the registry first, then every agent.

Owns the order of things: the launcher (`mesh.runtime.preloaded`) starts beside the registry and
imports the runtime once; then every agent that it can fork (a `target` entry without `env`) is
forked from it, a few at a time so each gets the CPU it needs to be ready at once, and the others
start as their own `python -m mesh ...` (`MESH_UP_PRELOAD=0`: all of them). Each child runs in its
own session (a terminal's Ctrl-C reaches only `mesh up`, so the order of shutdown stays ours) and
is followed by `mesh.runtime.supervised` (readiness, exits, restarts). On SIGINT/SIGTERM/SIGHUP:
SIGTERM to every agent, SIGKILL after a grace period (or at a second signal), then the launcher,
the registry last. It draws nothing: an `Observer` is told. A SIGKILLed `mesh up` cannot stop its
own children (the registry, unforked agents): they outlive it; the launcher stops its forks.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import AsyncIterator, Sequence
from typing import Final

import anyio
import anyio.abc
import httpx2

from mesh.errors import MeshError, RegistryError
from mesh.runtime.http import bind
from mesh.runtime.launcher import ForkSpec
from mesh.runtime.meshfile import AgentLaunch, MeshPlan
from mesh.runtime.preloaded import Launcher, LauncherFailed, preload_wanted
from mesh.runtime.supervised import (
    ChildKind,
    ChildProcess,
    ChildState,
    ChildStatus,
    Observer,
    Starter,
    Supervised,
    summary,
)
from mesh.tls import client_context

__all__ = ["ChildKind", "ChildState", "ChildStatus", "Observer", "summary", "up"]

_KILL_WAIT: Final = 5.0
_START_WINDOW: Final = 4
"""Forked agents starting at once: more only share the two cores and make each one later."""
_WINDOW_WAIT: Final = 5.0
"""Seconds a starting agent may hold its place in the window before the next one starts anyway."""


async def up(
    plan: MeshPlan,
    observer: Observer,
    *,
    ready_timeout: float = 30.0,
    grace: float = 10.0,
    preload: bool | None = None,
) -> None:
    """Run `plan` until SIGINT, SIGTERM or SIGHUP, then stop every process; MeshError if it cannot start.

    `preload` (default: `preload_wanted()`) forks agents from a launcher that imported the runtime once.
    """
    if plan.registry is not None and plan.registry.port:
        bind("127.0.0.1", plan.registry.port).close()  # a taken port is a one-line ConfigError now
    base_env = {**os.environ, "MESH_NAME": plan.mesh}
    cwd = str(plan.source.resolve().parent)
    preload = preload_wanted() if preload is None else preload
    registry: Supervised | None = None
    agents: list[Supervised] = []
    launcher: Launcher | None = None
    hurry = anyio.Event()  # a second signal: stop waiting for the grace period
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        health = httpx2.AsyncClient(timeout=2.0, verify=client_context())
        async with health, anyio.create_task_group() as tg:
            try:
                with anyio.CancelScope() as running:
                    tg.start_soon(_cancel_on_signal, signals, running, hurry, observer)
                    forkable = sorted({a.target for a in plan.agents if _forkable(a)})
                    if preload and forkable:
                        launcher = await _start_launcher(forkable, base_env, cwd, observer, tg)
                    registry_url: str | None = None
                    if plan.registry is not None:
                        argv = plan.registry.argv(mesh=plan.mesh, mdns=plan.mdns)
                        start = _subprocess(argv, base_env, cwd)
                        registry = Supervised("registry", "registry", "registry", start, observer, health)
                        await tg.start(registry.run)
                        registry_url = await _registry_ready(registry, ready_timeout)
                    if launcher is not None and not await _launcher_ready(launcher, ready_timeout, observer):
                        launcher = None
                    window = anyio.Semaphore(_START_WINDOW) if launcher is not None else None
                    for launch in plan.agents:
                        start = _agent_starter(launch, plan, registry_url, base_env, cwd, launcher, observer)
                        agent = Supervised(
                            launch.label, "agent", launch.shown, start, observer, health, restart=launch.restart
                        )
                        agents.append(agent)
                        if window is not None and _forkable(launch):
                            await window.acquire()
                            tg.start_soon(_release_when_settled, agent, window)
                        await tg.start(agent.run)
                    tg.start_soon(_report_ready, agents, registry_url, ready_timeout, observer)
                    await _all_exited(agents)
                    if agents:
                        raise MeshError(f"every agent has exited; the last said: {agents[-1].status.last_line or '-'}")
                    await anyio.sleep_forever()  # a registry-only mesh runs until signalled
            finally:
                with anyio.CancelScope(shield=True):
                    await _stop(agents, grace, hurry, observer)
                    if launcher is not None:
                        await launcher.close()
                    await _stop([registry] if registry is not None else [], grace, hurry, observer)
                tg.cancel_scope.cancel()
    observer.note("stopped")


def _forkable(launch: AgentLaunch) -> bool:
    """A mesh agent whose process needs nothing of its own: its `env` would have to be there at import time."""
    return launch.kind == "target" and not launch.env


async def _start_launcher(
    targets: list[str], env: dict[str, str], cwd: str, observer: Observer, tg: anyio.abc.TaskGroup
) -> Launcher | None:
    launcher = Launcher(preload=targets, env=env, cwd=cwd, output=lambda line: observer.output("launcher", line))
    try:
        await launcher.start(tg)
    except LauncherFailed as exc:
        observer.note(f"{exc}: starting every agent as its own process")
        return None
    return launcher


async def _launcher_ready(launcher: Launcher, timeout: float, observer: Observer) -> bool:
    try:
        await launcher.wait_ready(timeout)
    except LauncherFailed as exc:
        observer.note(f"launcher: {exc}: starting every agent as its own process")
        await launcher.close()
        return False
    return True


def _agent_starter(
    launch: AgentLaunch,
    plan: MeshPlan,
    registry_url: str | None,
    base_env: dict[str, str],
    cwd: str,
    launcher: Launcher | None,
    observer: Observer,
) -> Starter:
    """How to start one process of `launch`: a fork while the launcher runs, else a subprocess."""
    argv = launch.argv(mesh=plan.mesh, registry=registry_url, policy=plan.policy, mdns=plan.mdns)
    subprocess_start = _subprocess(argv, {**base_env, **launch.environment()}, cwd)
    if launcher is None or not _forkable(launch):
        return subprocess_start
    spec = ForkSpec(
        label=launch.label,
        target=launch.target,
        mesh=plan.mesh,
        name=launch.name,
        meta=launch.meta,
        registry=registry_url,
        policy=str(plan.policy) if plan.policy is not None else None,
        mdns=plan.mdns,
    )

    async def start() -> tuple[ChildProcess, bool]:
        if launcher.alive:
            try:
                return await launcher.spawn(spec), True
            except LauncherFailed as exc:
                observer.note(f"{launch.label}: {exc}: starting it as its own process")
        return await subprocess_start()

    return start


def _subprocess(argv: Sequence[str], env: dict[str, str], cwd: str) -> Starter:
    async def start() -> tuple[ChildProcess, bool]:
        process = await anyio.open_process(
            list(argv),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        return process, False

    return start


async def _release_when_settled(agent: Supervised, window: anyio.Semaphore) -> None:
    with anyio.move_on_after(_WINDOW_WAIT):
        await agent.settled.wait()
    window.release()


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


async def _registry_ready(registry: Supervised, timeout: float) -> str:
    with anyio.move_on_after(timeout):
        await registry.settled.wait()
    if registry.status.state == "ready" and registry.status.url is not None:
        return registry.status.url
    if registry.exited.is_set() or registry.status.state == "exited":
        said = registry.status.last_line.removeprefix("mesh: error: ") or f"exit code {registry.status.exit_code}"
        raise RegistryError(f"the registry did not start: {said}")
    raise RegistryError(f"the registry did not report ready within {timeout:g}s")


async def _report_ready(agents: list[Supervised], registry_url: str | None, timeout: float, observer: Observer) -> None:
    with anyio.move_on_after(timeout):
        for agent in agents:
            await agent.settled.wait()
    late = [a.status.label for a in agents if a.status.state == "starting"]
    where = f", registry {registry_url}" if registry_url else ""
    observer.note(summary(a.status for a in agents) + where)
    if late:
        observer.note(f"still starting after {timeout:g}s: {', '.join(late)}")
    observer.ready(registry_url)


async def _all_exited(children: list[Supervised]) -> None:
    for child in children:
        await child.exited.wait()


async def _stop(children: Sequence[Supervised], grace: float, hurry: anyio.Event, observer: Observer) -> None:
    """SIGTERM every running child at once; SIGKILL whichever is still there after `grace` (or `hurry`)."""
    running = [c for c in children if not c.exited.is_set()]
    if not running:
        return
    observer.note(f"stopping {', '.join(c.status.label for c in running)}")

    async def stop_one(child: Supervised) -> None:
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
