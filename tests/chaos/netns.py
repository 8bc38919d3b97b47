"""Hosts for the chaos tests: network namespaces on one bridge, and `mesh` processes run inside them.

`lan(...)` makes a namespace per host and a switch namespace holding a bridge, each host joined to
it by a veth cable made directly inside the namespaces (a private /24 that exists only there: the
machine's own interfaces, routes and namespace are never touched), and deletes them all on exit.
`Lan.cut` and `Lan.restore` pull a host's cable and plug it back, from inside that host.
`HostProcess` is `python -m mesh ARGS` inside one host, ready once its `/healthz` answers there;
`host_get` and `host_mesh` fetch a URL and run the CLI from inside a host. Needs root and iproute2.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Generator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, final

import anyio

from mesh.testing import MeshProcess

__all__ = ["ROOT", "HostProcess", "Lan", "host_get", "host_json", "host_mesh", "lan", "require_root"]

ROOT: Final = Path(__file__).resolve().parents[2]
SUBNET: Final = "10.78.0"
"""The hosts' /24: it exists only inside the namespaces, so every run may use the same one."""
DEVICE: Final = "eth0"
"""Each host's cable, as named inside its namespace."""


def require_root() -> None:
    """Fail (not skip) without root: CI runs as root, and a chaos test that did not run proves nothing."""
    if os.geteuid() != 0:
        raise PermissionError("the chaos tests create network namespaces and need root (CI runs as root)")


@dataclass(frozen=True, slots=True)
class Lan:
    """Hosts (short labels) on one switch; host k has address SUBNET.(k+1)."""

    tag: str
    hosts: tuple[str, ...]

    def ns(self, host: str) -> str:
        """The namespace of `host`."""
        self._index(host)
        return f"apx-{self.tag}-{host}"

    @property
    def switch(self) -> str:
        """The namespace holding the bridge."""
        return f"apx-{self.tag}-sw"

    def ip(self, host: str) -> str:
        """The address of `host` on the switch."""
        return f"{SUBNET}.{self._index(host) + 1}"

    def cut(self, host: str) -> None:
        """Pull `host`'s cable: its interface goes down inside its namespace."""
        _ip("-n", self.ns(host), "link", "set", DEVICE, "down")

    def restore(self, host: str) -> None:
        """Plug `host`'s cable back in."""
        _ip("-n", self.ns(host), "link", "set", DEVICE, "up")

    def _index(self, host: str) -> int:
        if host not in self.hosts:
            raise ValueError(f"no host {host!r} on this LAN (hosts: {', '.join(self.hosts)})")
        return self.hosts.index(host)


@contextmanager
def lan(*hosts: str) -> Generator[Lan]:
    """Namespaces for `hosts` (labels of up to 6 lowercase letters) on one bridge; all deleted on exit."""
    require_root()
    made = Lan(uuid.uuid4().hex[:6], tuple(hosts))
    created: list[str] = []
    try:
        for ns in (made.switch, *(made.ns(h) for h in hosts)):
            _ip("netns", "add", ns)
            created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", made.switch, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        _ip("-n", made.switch, "link", "set", "br0", "up")
        for host in hosts:
            port = f"p-{host}"
            ns = made.ns(host)
            _ip("link", "add", DEVICE, "netns", ns, "type", "veth", "peer", "name", port, "netns", made.switch)
            _ip("-n", made.switch, "link", "set", port, "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{made.ip(host)}/24", "dev", DEVICE)
            _ip("-n", ns, "link", "set", DEVICE, "up")
        yield made
    finally:
        for ns in reversed(created):  # a namespace's veth ends go with it
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10, check=False)


_INSTANCE = re.compile(r"\((\w+)\) listening on ")


@final
class HostProcess(MeshProcess):
    """`python -m mesh ARGS` inside `host`'s namespace; ready once its `/healthz` answers from inside the host."""

    def __init__(
        self,
        net: Lan,
        host: str,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        ready_timeout: float = 60,
    ) -> None:
        super().__init__(args, env=env, ready_timeout=ready_timeout)
        self.net = net
        self.host = host
        self.args = ["ip", "netns", "exec", net.ns(host), *self.args]

    @property
    def instance(self) -> str:
        """The instance id an agent printed when it started listening."""
        found = _INSTANCE.search(self.stderr)
        if found is None:
            raise RuntimeError(f"{' '.join(self.args)} has not said which instance it is")
        return found.group(1)

    @property
    def local_url(self) -> str:
        """Its `/mcp` URL on the host's loopback: reachable from inside the host even while its cable is out."""
        port = self.base_url.rsplit(":", 1)[1]
        return f"http://127.0.0.1:{port}/mcp"

    async def _wait_healthy(self) -> None:
        while True:
            status, _ = await host_get(self.net, self.host, self.base_url + self.health_path, timeout=2)
            if status == 200:
                return
            await anyio.sleep(0.05)


async def host_get(net: Lan, host: str, url: str, *, token: str | None = None, timeout: float = 5) -> tuple[int, str]:
    """GET `url` from inside `host`: (status, body); status 0 if nothing answered."""
    done = await anyio.run_process(
        ["ip", "netns", "exec", net.ns(host), sys.executable, "-S", "-c", _FETCH, url, token or "", str(timeout)],
        check=False,
    )
    status, _, body = done.stdout.decode(errors="replace").partition("\n")
    return (int(status), body) if status.isdigit() else (0, done.stderr.decode(errors="replace"))


async def host_json(net: Lan, host: str, url: str, *, token: str | None = None) -> Any:
    """GET `url` from inside `host` and decode its JSON; RuntimeError unless it answers 200."""
    status, body = await host_get(net, host, url, token=token)
    if status != 200:
        raise RuntimeError(f"GET {url} from {host}: {status} {body[:200]}")
    return json.loads(body)


async def host_mesh(net: Lan, host: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run `python -m mesh ARGS` inside `host` to completion (its output captured)."""
    command = ["ip", "netns", "exec", net.ns(host), sys.executable, "-m", "mesh", *args]
    return await anyio.run_process(command, check=False, cwd=ROOT)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


# Run with -S (no site) and nothing but `socket`: a start of a few milliseconds, polled often. HTTP/1.0,
# so the server closes the connection after its answer (no chunked body).
_FETCH: Final = """
import socket, sys
url, token, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
where, _, path = url.split("://", 1)[1].partition("/")
host, _, port = where.rpartition(":")
auth = f"Authorization: Bearer {token}\\r\\n" if token else ""
try:
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock:
        sock.sendall(f"GET /{path} HTTP/1.0\\r\\nHost: {where}\\r\\n{auth}\\r\\n".encode())
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    head, _, body = answer.partition(b"\\r\\n\\r\\n")
    status = int(head.split(b" ", 2)[1])
except (OSError, ValueError, IndexError) as failed:
    status, body = 0, str(failed).encode()
sys.stdout.write(f"{status}\\n{body.decode(errors='replace')}")
"""
