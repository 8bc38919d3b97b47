"""`--lan` across two hosts: network namespaces joined by a veth cable, mDNS and the call crossing it.

Host A runs `mesh run agents/echo.py --lan`; host B, with no registry and no configuration but
the mesh's name and secret, finds it by mDNS on the cable and calls it. Needs root and iproute2
(`.ci/run` runs as root; iproute2 is on Debian by default). Traffic stays on the namespaces'
private 10.77.x.0/24 link.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Hosts:
    a: str  # namespace names
    b: str
    a_ip: str
    b_ip: str


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


@contextmanager
def two_hosts() -> Generator[Hosts]:
    """Two network namespaces with one veth link between them; removed (with the link) on exit."""
    tag = uuid.uuid4().hex[:6]
    subnet = f"10.77.{random.randrange(1, 250)}"
    hosts = Hosts(f"apx-{tag}-a", f"apx-{tag}-b", f"{subnet}.1", f"{subnet}.2")
    try:
        _ip("netns", "add", hosts.a)
        _ip("netns", "add", hosts.b)
        _ip("link", "add", f"va{tag}", "type", "veth", "peer", "name", f"vb{tag}")
        for ns, dev, address in ((hosts.a, f"va{tag}", hosts.a_ip), (hosts.b, f"vb{tag}", hosts.b_ip)):
            _ip("link", "set", dev, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield hosts
    finally:
        for ns in (hosts.a, hosts.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10, check=False)


def _mesh(ns: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "mesh", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )


@pytest.fixture
def hosts(mesh_env: dict[str, str]) -> Iterator[Hosts]:
    del mesh_env  # the mesh's name and MESH_HOME (its secret) are shared by both hosts, as a deployment would
    if os.geteuid() != 0:
        pytest.fail("the LAN test creates network namespaces and needs root (CI runs as root)")
    with two_hosts() as made:
        yield made


def test_an_agent_on_one_host_is_found_by_mdns_and_called_from_another(hosts: Hosts) -> None:
    agent = subprocess.Popen(
        ["ip", "netns", "exec", hosts.a, sys.executable, "-m", "mesh", "run", "agents/echo.py", "--lan", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        seen: list[dict[str, object]] = []
        while time.monotonic() < deadline and not seen:
            listed = _mesh(hosts.b, "ls", "--lan", "--json", "--wait", "2")
            assert listed.returncode == 0, listed.stderr
            seen = [v for v in json.loads(listed.stdout) if v["name"] == "echo" and v["healthy"]]
        assert seen, f"host B never saw the agent; agent said: {_stop(agent)}"
        [view] = seen
        called = _mesh(hosts.b, "call", "echo", "echo", "--lan", "--arg", "text=across the cable", "--json")
    finally:
        said = _stop(agent)
    assert str(view["url"]).startswith(f"http://{hosts.a_ip}:"), view
    assert view["sources"] == ["mdns"]
    assert called.returncode == 0, called.stderr + said
    assert json.loads(called.stdout) == "across the cable"


def _stop(process: subprocess.Popen[str]) -> str:
    """Stop a process we started (SIGTERM, then SIGKILL) and return what it wrote on stderr."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    if process.stderr is None or process.stderr.closed:
        return ""
    with process.stderr:
        return process.stderr.read()
