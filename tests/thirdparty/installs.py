"""Third-party MCP servers and the conformance suite, installed from npm and PyPI by the tests themselves.

Owns the pinned versions and the cache: `.cache/thirdparty/` under the checkout (git-ignored), one
directory per pinned set, so a second run installs nothing. An install that fails raises
`InstallFailed` with the installer's last words: a test error, never a skip. Running the installed
programs is the tests' business.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Generator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "CACHE",
    "CONFORMANCE",
    "EVERYTHING",
    "NODE",
    "TIME_SERVER",
    "InstallFailed",
    "NodeTools",
    "install_node_tools",
    "install_time_server",
]

CACHE: Final = Path(__file__).resolve().parents[2] / ".cache" / "thirdparty"
EVERYTHING: Final = "@modelcontextprotocol/server-everything@2026.8.31"
CONFORMANCE: Final = "@modelcontextprotocol/conformance@0.1.16"
NODE: Final = "node@22.23.3"
"""npm's `node` package: a Node 22 binary for the suite, which needs 22 (Debian ships 20)."""
TIME_SERVER: Final = "mcp-server-time==2026.10.19"
"""The reference time server from PyPI: offline, and pins `mcp` 2.x in a venv of its own."""

INSTALL_TIMEOUT: Final = 600.0
_DONE: Final = ".installed"


class InstallFailed(RuntimeError):
    """A registry install did not complete; the message says which package and why."""


@dataclass(frozen=True, slots=True)
class NodeTools:
    """The npm installs: a Node 22 binary, the everything server's and the suite's entry scripts."""

    node: Path
    everything: Path
    conformance: Path


def install_node_tools() -> NodeTools:
    """Node 22, the everything server and the conformance suite from npm (cached); the paths to run them."""
    if shutil.which("npm") is None:
        raise InstallFailed("npm is not on PATH: install nodejs and npm (.ci/run does: apt-get install nodejs npm)")
    packages = (NODE, EVERYTHING, CONFORMANCE)

    def install(prefix: Path) -> None:
        _run(
            ["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--loglevel=error", *packages],
            what=" ".join(packages),
        )

    prefix = _cached("npm", packages, install)
    modules = prefix / "node_modules"
    tools = NodeTools(
        node=modules / ".bin" / "node",
        everything=modules / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js",
        conformance=modules / "@modelcontextprotocol" / "conformance" / "dist" / "index.js",
    )
    for path in (tools.node, tools.everything, tools.conformance):
        if not path.exists():
            raise InstallFailed(f"npm installed {' '.join(packages)} into {prefix} but {path} is missing")
    version = _run([str(tools.node), "--version"], what=NODE).strip()
    if not version.startswith("v22."):
        raise InstallFailed(f"{tools.node} is Node {version}, not 22 (did npm skip the node package's install script?)")
    return tools


def install_time_server() -> Path:
    """`mcp-server-time` from PyPI in a venv of its own (cached); the path of its console script."""

    def install(venv: Path) -> None:
        _run([sys.executable, "-m", "venv", str(venv)], what=f"a venv for {TIME_SERVER}")
        _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", TIME_SERVER], what=TIME_SERVER)

    script = _cached("pypi", (TIME_SERVER,), install) / "bin" / "mcp-server-time"
    if not script.exists():
        raise InstallFailed(f"pip installed {TIME_SERVER} but {script} is missing")
    return script


# -- helpers -------------------------------------------------------------------------------------


def _cached(kind: str, pins: tuple[str, ...], install: Callable[[Path], None]) -> Path:
    """The directory for `pins`, installed by `install(dir)` unless a finished install is there already.

    The directory is installed in place (a venv cannot move) under a lock, and counts as done only
    once its marker is written: a run that died half way is started over.
    """
    key = hashlib.sha256("\n".join(pins).encode()).hexdigest()[:12]
    target = CACHE / f"{kind}-{key}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with _locked(CACHE / f".{kind}-{key}.lock"):
        if (target / _DONE).exists():
            return target
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        install(target)
        (target / _DONE).write_text("\n".join(pins) + "\n")
    return target


@contextmanager
def _locked(path: Path) -> Generator[None]:
    """Hold an exclusive lock on `path`: two test runs never install into one directory at once."""
    with path.open("w") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def _run(argv: list[str], *, what: str) -> str:
    """Run an installer step; its stdout, or `InstallFailed` with the end of what it said."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallFailed(f"installing {what}: {argv[0]} could not run: {exc}") from exc
    if done.returncode != 0:
        said = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise InstallFailed(f"installing {what} failed (exit {done.returncode}):\n{said}")
    return done.stdout
