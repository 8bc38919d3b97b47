"""`mesh call` at a terminal: an approval two hops down is asked at the prompt, and the answer decides."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

import anyio
import pytest

from tests.integration.helpers import vault_chain

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal:
    """A real pseudo-terminal running `python -m mesh ARGS`, read and typed into like a person would."""

    def __init__(self, *args: str) -> None:
        self._master, slave = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mesh", *args], stdin=slave, stdout=slave, stderr=slave, close_fds=True
        )
        os.close(slave)
        self.screen = b""

    def read_until(self, pattern: bytes, timeout: float = 60) -> str:
        """Read the terminal until `pattern` shows (ANSI codes stripped), or fail after `timeout` s."""
        deadline = time.monotonic() + timeout
        while pattern not in _ANSI.sub(b"", self.screen):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} never showed; the terminal says: {self.text()!r}")
            if not self._read(left):
                raise AssertionError(f"the terminal closed before {pattern!r}; it said: {self.text()!r}")
        return self.text()

    def type(self, text: str) -> None:
        """Type `text` at the prompt."""
        os.write(self._master, text.encode())

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        """Read everything until the program exits; its exit code and the whole screen."""
        deadline = time.monotonic() + timeout
        while self._read(max(0.0, deadline - time.monotonic())):
            pass
        code = self.process.wait(timeout=max(1.0, deadline - time.monotonic()))
        os.close(self._master)
        return code, self.text()

    def text(self) -> str:
        return _ANSI.sub(b"", self.screen).decode(errors="replace")

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self._master], [], [], timeout)
        if not ready:
            return False
        try:
            chunk = os.read(self._master, 4096)
        except OSError:  # EIO: the other side closed
            return False
        self.screen += chunk
        return bool(chunk)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def _at_terminal(registry: str, answer: str) -> tuple[str, int, str]:
    terminal = Terminal(
        "call", "teller", "cash", "--arg", "account=acme", "--arg", "amount=20", "--registry", registry, "--json"
    )
    try:
        asked = terminal.read_until(b"[y/n]")
        terminal.type(answer + "\r")
        code, screen = terminal.finish()
    finally:
        terminal.kill()
    return asked, code, screen


async def test_a_yes_at_the_prompt_runs_the_call(mesh_env: dict[str, str]) -> None:
    async with vault_chain("desk") as (registry, _node):
        asked, code, screen = await anyio.to_thread.run_sync(_at_terminal, registry.base_url, "y")
    assert "approval" in asked
    assert "vault.withdraw" in asked
    assert code == 0, screen
    assert '"handed_out": 20' in screen


async def test_a_no_at_the_prompt_refuses_cleanly_in_one_line(mesh_env: dict[str, str]) -> None:
    async with vault_chain("desk") as (registry, _node):
        _asked, code, screen = await anyio.to_thread.run_sync(_at_terminal, registry.base_url, "n")
    assert code != 0
    [error] = [line for line in screen.splitlines() if line.startswith("mesh: error: ")]
    assert "declined" in error
    assert "Traceback" not in screen
    assert "handed_out" not in screen
