"""A fork of the launcher becoming one agent process, as `mesh run TARGET ...` would be one.

Owns what a fresh process has and a fork would not: its own session (a terminal's Ctrl-C reaches
`mesh up` only, as with `start_new_session`), its own stdin/stdout/stderr, none of the launcher's
descriptors, fresh random state, the collector back on, a name in `ps -o comm`. Then it serves the
agent as `mesh run` does (`mesh.cli.run`: the runtime cannot import the CLI, so the few lines that
run it are repeated here) and leaves with `os._exit`, never returning into the launcher's loop.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import random
import signal
import sys
import traceback
from collections.abc import Iterable
from typing import Final, NoReturn

import anyio

from mesh.agent import Agent
from mesh.errors import MeshError
from mesh.peers.failures import first_leaf
from mesh.runtime.launcher import ForkSpec
from mesh.runtime.loader import load_agent
from mesh.runtime.process import RunOptions, serve_agent

__all__ = ["become"]

_PR_SET_NAME: Final = 15


def become(spec: ForkSpec, *, stdout: int, stderr: int, inherited: Iterable[int]) -> NoReturn:
    """Turn this fresh fork into the agent `spec` names; exit with the code `mesh run` would exit with."""
    code = 1
    try:
        _own_process(stdout, stderr, inherited, f"mesh {spec.label}")
        code = _serve(spec)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    except BaseException:  # a bug: shown as an uncaught exception would be, then the exit code of one
        traceback.print_exc()
        code = 1
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _own_process(stdout: int, stderr: int, inherited: Iterable[int], name: str) -> None:
    os.setsid()
    for fd in inherited:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    for fd in {devnull, stdout, stderr} - {0, 1, 2}:
        os.close(fd)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as a fresh interpreter has it
    random.seed()  # CPython re-seeds `random` at fork already; OpenTelemetry's and the mesh's ids draw from it
    gc.enable()
    _name(name)


def _name(name: str) -> None:
    """Set the process's name (`ps -o comm`, `top`): the launcher's command line is every fork's."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def _serve(spec: ForkSpec) -> int:
    """`mesh run`'s path for a TARGET (`mesh.cli.run.run` and `mesh.cli.main`): the same calls, the same exits."""
    try:
        agent = load_agent(spec.target).with_overrides(name=spec.name, meta=dict(spec.meta))
        options = RunOptions(mesh=spec.mesh, registry=spec.registry, policy=spec.policy, mdns=spec.mdns)
        _run_until_signalled(agent, options)
    except MeshError as exc:
        _error(exc)
        return 1
    except BaseExceptionGroup as group:
        mistakes, _ = group.split(MeshError)
        if mistakes is None:
            raise
        _error(first_leaf(mistakes))
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _run_until_signalled(agent: Agent, options: RunOptions) -> None:
    """Serve on uvloop (when present) until SIGINT or SIGTERM, as `mesh.cli.run.run_until_signalled` does."""

    async def main() -> None:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch)
            await serve_agent(agent, options)
            tg.cancel_scope.cancel()

    anyio.run(main, backend_options={"use_uvloop": _has_uvloop()})


def _error(exc: BaseException) -> None:
    sys.stderr.write(f"mesh: error: {exc}\n")


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401  # pyright: ignore[reportUnusedImport]
    except ImportError:
        return False
    return True
