"""The README's terminals, typed into real tmux panes: `mesh up` in one, the demo in another, a person in a third.

No pane has `MESH_NAME`: the commands typed in the third pane must find the mesh that `mesh up`
started by themselves, as they do for a newcomer who opened a fresh terminal and activated the
virtual environment (the panes' `PATH` starts with this interpreter's `bin`, as `activate` does).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
_PENDING = re.compile(r"^\s*([0-9a-f]{8,})\b.*human-desk", re.MULTILINE)


@dataclass
class Tmux:
    """A private tmux server (its own socket) with one window, driven like a person at a keyboard."""

    socket: Path

    def __call__(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-S", str(self.socket), *args], capture_output=True, text=True, timeout=30, check=True
        )
        return done.stdout

    def type(self, pane: int, line: str) -> None:
        """Type `line` into `pane` and press Enter."""
        self("send-keys", "-t", f"mesh:0.{pane}", "-l", line)
        self("send-keys", "-t", f"mesh:0.{pane}", "Enter")

    def screen(self, pane: int) -> str:
        """Everything `pane` has shown, its scroll-back included, lines joined where tmux wrapped them."""
        return self("capture-pane", "-p", "-J", "-S", "-", "-t", f"mesh:0.{pane}")

    def wait_for(self, pane: int, pattern: str, timeout: float = 90) -> re.Match[str]:
        """The first match of `pattern` on `pane`'s screen, waiting for it up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not (found := re.search(pattern, screen := self.screen(pane), re.MULTILINE)):
            if time.monotonic() > deadline or "Traceback" in screen:
                raise AssertionError(f"{pattern!r} never showed in pane {pane}; it shows:\n{screen}")
            time.sleep(0.2)  # polling a screen: there is no event to wait on
        return found

    def command(self, pane: int) -> str:
        """The program running in the foreground of `pane`."""
        return self("display-message", "-p", "-t", f"mesh:0.{pane}", "#{pane_current_command}").strip()


@pytest.fixture
def panes(mesh_env: dict[str, str], tmp_path: Path) -> Iterator[Tmux]:
    """Three shells side by side in a fresh tmux server, in the project's folder, with no MESH_NAME."""
    assert shutil.which("tmux"), "tmux is needed (`.ci/run` installs it)"
    env = {k: v for k, v in os.environ.items() if k != "MESH_NAME" and not k.startswith("TMUX")}
    env |= {"MESH_HOME": mesh_env["MESH_HOME"], "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"}
    env |= {"TERM": "xterm-256color", "HOME": str(tmp_path), "PS1": "$ "}
    tmux = Tmux(tmp_path / f"tmux-{uuid.uuid4().hex[:8]}")
    shell = "bash --norc --noprofile"
    subprocess.run(
        ["tmux", "-S", str(tmux.socket), "-f", "/dev/null", "new-session", "-d", "-s", "mesh", "-x", "200", "-y", "50",
         "-c", str(ROOT), shell],
        env=env, check=True, timeout=30,
    )  # fmt: skip
    try:
        tmux("set-option", "-g", "history-limit", "5000")
        tmux("split-window", "-v", "-t", "mesh:0", "-c", str(ROOT), shell)
        tmux("split-window", "-v", "-t", "mesh:0", "-c", str(ROOT), shell)
        yield tmux
    finally:
        _stop(tmux)


def _stop(tmux: Tmux) -> None:
    """Ctrl-C in the first pane (as a person stops `mesh up`), wait for its shell's prompt, end the server."""
    try:
        tmux("send-keys", "-t", "mesh:0.1", "C-c")
        tmux("send-keys", "-t", "mesh:0.0", "C-c")
        deadline = time.monotonic() + 60
        while tmux.command(0) != "bash" and time.monotonic() < deadline:
            time.sleep(0.2)  # polling a pane: there is no event to wait on
    finally:
        subprocess.run(["tmux", "-S", str(tmux.socket), "kill-server"], capture_output=True, timeout=30, check=False)


def test_mesh_up_in_one_pane_is_found_approved_and_listed_from_another_without_its_name(panes: Tmux) -> None:
    panes.type(0, "mesh up examples/support-desk --registry-port 0")
    panes.wait_for(0, r"ready: 7 of 7 agents")
    activate = panes.wait_for(0, r"^\s+\. (\S+/bin/activate)$")  # among what to type next
    panes.type(1, "python3 examples/support-desk/run_demo.py")
    panes.wait_for(1, r"^T-1003 ")

    panes.type(2, "mesh ls; echo ls-exit=$?")
    listed = panes.wait_for(2, r"ls-exit=(\d+)")
    panes.type(2, "mesh approvals ls; echo approvals-exit=$?")
    queued = panes.wait_for(2, r"approvals-exit=(\d+)")
    pending = panes.wait_for(2, _PENDING.pattern)
    short = pending[1][:6]
    panes.type(2, f"mesh approvals approve {short}; echo approve-exit=$?")
    approved = panes.wait_for(2, r"approve-exit=(\d+)")
    escalated = panes.wait_for(1, r"^T-1004 .*escalated to a human: ESC-\d+")
    person = panes.screen(2)

    assert (ROOT / activate[1]).parent.resolve() == Path(sys.executable).parent.resolve()
    assert listed[1] == "0", person
    assert "using mesh 'support-desk' (the one running here" in person
    assert all(agent in person for agent in ("kb", "crm", "triage", "drafter", "human-desk", "analytics"))
    assert queued[1] == "0", person
    assert approved[1] == "0", person
    assert re.search(rf"{pending[1]}: approved by ", person), person
    assert "Traceback" not in person + panes.screen(1) + panes.screen(0)
    assert escalated[0]
