"""Real `mesh` processes for tests: started on free ports, ready when they say so, always reaped.

A process is ready when it prints `listening on URL` on stderr and its `/healthz` answers;
leaving the context sends SIGTERM, then SIGKILL after a bounded wait, so no test leaves a
process behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Self, final

import anyio
import anyio.abc
import httpx2
from anyio.streams.text import TextReceiveStream

__all__ = ["AgentProcess", "MeshProcess", "RegistryProcess", "free_port"]

_LISTENING = re.compile(r"listening on (http://\S+)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a service that must keep its port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MeshProcess:
    """`python -m mesh ARGS...` as a child process; `url` is what it said it listens on."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        ready_timeout: float = 20.0,
        health_path: str = "/healthz",
    ) -> None:
        self.args = [sys.executable, "-m", "mesh", *args]
        self.env = {**os.environ, **(env or {})}
        self.ready_timeout = ready_timeout
        self.health_path = health_path
        self.url = ""
        self.stderr = ""
        self._process: anyio.abc.Process | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._ready = anyio.Event()

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._require().pid

    @property
    def base_url(self) -> str:
        """`http://host:port`, without the `/mcp` path."""
        return self.url.removesuffix("/mcp")

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has exited."""
        return self._require().returncode

    async def __aenter__(self) -> Self:
        if self._process is not None:
            raise RuntimeError(f"{self.args[3:]} is already started; use a new MeshProcess")
        self._process = await anyio.open_process(self.args, env=self.env, stderr=-1, stdout=-1, stdin=-1)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._drain_stderr)
        self._tg.start_soon(self._drain_stdout)
        try:
            with anyio.fail_after(self.ready_timeout):
                await self._ready.wait()
                if not self.url:
                    raise RuntimeError(f"{' '.join(self.args[3:])} exited early: {self.stderr.strip()}")
                await self._wait_healthy()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)
            self._tg = None

    async def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send `sig` and wait for the exit (SIGKILL after `timeout`); returns the exit code."""
        process = self._require()
        if process.returncode is None:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)
                with anyio.move_on_after(timeout):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
        assert process.returncode is not None
        return process.returncode

    def signal(self, sig: signal.Signals) -> None:
        """Send `sig` without waiting (SIGKILL, SIGSTOP, SIGCONT in chaos tests)."""
        self._require().send_signal(sig)

    async def _wait_healthy(self) -> None:
        async with httpx2.AsyncClient(timeout=2.0) as client:
            while True:
                try:
                    response = await client.get(self.base_url + self.health_path)
                    if response.status_code == 200:
                        return
                except httpx2.TransportError:
                    pass
                await anyio.sleep(0.02)

    async def _drain_stderr(self) -> None:
        process = self._require()
        assert process.stderr is not None
        buffer = ""
        try:
            async for chunk in TextReceiveStream(process.stderr):
                self.stderr += chunk
                buffer += chunk
                if not self.url and (match := _LISTENING.search(buffer)):
                    self.url = match.group(1)
                    self._ready.set()
        finally:
            self._ready.set()

    async def _drain_stdout(self) -> None:
        process = self._require()
        assert process.stdout is not None
        async for _ in process.stdout:
            pass

    def _require(self) -> anyio.abc.Process:
        if self._process is None:
            raise RuntimeError("the process has not been started; use `async with`")
        return self._process


@final
class AgentProcess(MeshProcess):
    """`mesh run TARGET` on a free port, ready when its `/healthz` answers."""

    def __init__(
        self,
        target: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        ready_timeout: float = 20.0,
    ) -> None:
        super().__init__(["run", target, "--port", "0", *args], env=env, ready_timeout=ready_timeout)


@final
class RegistryProcess(MeshProcess):
    """`mesh registry` on `port` (a free one by default), ready when its `/healthz` answers."""

    def __init__(
        self,
        *args: str,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        ready_timeout: float = 20.0,
    ) -> None:
        self.port = port if port is not None else free_port()
        super().__init__(["registry", "--port", str(self.port), *args], env=env, ready_timeout=ready_timeout)
