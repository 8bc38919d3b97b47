"""In-process fakes for the call path: agents served by the SDK's own server, no sockets, no processes.

`InProcessMesh` keeps a `PeerDirectory` of instances and an httpx2 transport (`InProcessTransport`)
that hands each request to the ASGI app its URL names, so a `PeerPool` or a `HopClient` runs its
whole path for real (routing, retries, failover, circuit breaking, JSON and event-stream answers)
in unit tests. An instance can be made `"down"` (the request never arrives: connect refused) or
`"lose"` (the request arrives and runs, its answer is lost): the two failures a caller must tell apart,
since only the first is always safe to send elsewhere.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any, Literal, final

import httpx2
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp

from mesh.identity import MeshKeys
from mesh.peers.directory import Instance, PeerDirectory
from mesh.peers.pool import PeerPool
from mesh.policy import Policy

__all__ = ["Fault", "InProcessMesh", "InProcessTransport"]

Fault = Literal["up", "down", "lose"]
"""How an instance's transport behaves: answers, refuses the connection, or loses the answer after running."""

LEASE = 3600.0
"""Seconds of registry lease an in-process instance gets: healthy until a failure opens its circuit."""


@final
class InProcessTransport(httpx2.AsyncBaseTransport):
    """Routes each request by `host:port` to a mounted ASGI app, applying that address's `Fault`."""

    def __init__(self) -> None:
        self._apps: dict[str, httpx2.ASGITransport] = {}
        self.faults: dict[str, Fault] = {}
        self.arrived: dict[str, int] = {}
        """Requests that reached each address's app (a `"lose"` one counts: it ran)."""
        self.sent: list[str] = []
        """The address of every request, in the order they were sent, whatever became of them."""

    def mount(self, address: str, app: ASGIApp) -> None:
        """Serve `app` (an ASGI app) at `address` (`host:port`)."""
        self._apps[address] = httpx2.ASGITransport(app=app)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        address = f"{request.url.host}:{request.url.port}"
        app = self._apps.get(address)
        fault = self.faults.get(address, "up")
        self.sent.append(address)
        if app is None or fault == "down":
            raise httpx2.ConnectError(f"connection refused by {address}", request=request)
        self.arrived[address] = self.arrived.get(address, 0) + 1
        response = await app.handle_async_request(request)
        if fault == "lose":
            await response.aclose()
            raise httpx2.ReadError(f"{address} dropped the connection before answering", request=request)
        return response


@final
class InProcessMesh:
    """A directory of agents served in this process; `pool()` makes a `PeerPool` that calls them."""

    def __init__(self, mesh: str = "inprocess") -> None:
        self.directory = PeerDirectory()
        self.transport = InProcessTransport()
        self.keys = MeshKeys(secrets.token_bytes(32), mesh)
        self._ports = itertools.count(20001)  # labels in URLs only: nothing binds them
        self._names: dict[str, str] = {}
        self._stack: AsyncExitStack | None = None

    async def __aenter__(self) -> InProcessMesh:
        if self._stack is not None:
            raise RuntimeError("InProcessMesh is already open")
        self._stack = AsyncExitStack()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def serve(
        self,
        name: str,
        server: MCPServer,
        *,
        instance: str | None = None,
        json_response: bool = True,
        metadata: Mapping[str, Any] | None = None,
    ) -> Instance:
        """Serve `server` as an instance of agent `name` and list it in the directory, with its tools."""
        if self._stack is None:
            raise RuntimeError("InProcessMesh.serve outside `async with`")
        app = server.streamable_http_app(json_response=json_response)
        await self._stack.enter_async_context(server.session_manager.run())
        address = f"127.0.0.1:{next(self._ports)}"
        self.transport.mount(address, app)
        tools = await server.list_tools()
        found = Instance(
            name=name,
            instance=instance or f"{name}-{address.rsplit(':', 1)[1]}",
            url=f"http://{address}/mcp",
            tools=tuple(t.name for t in tools),
            tool_info=tuple(t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in tools),
            metadata=dict(metadata or {}),
            auth=False,
            lease_until=time.time() + LEASE,
        )
        self._names[address] = found.instance
        return self.directory.report("registry", found)

    def fault(self, inst: Instance, fault: Fault) -> None:
        """Make `inst` answer, refuse connections, or lose its answers from now on."""
        self.transport.faults[_address(inst)] = fault

    def arrived(self, inst: Instance) -> int:
        """How many requests reached `inst` (ran there), answered or not."""
        return self.transport.arrived.get(_address(inst), 0)

    def sent(self) -> list[str]:
        """The instance every request went to, in order (refused and lost ones too)."""
        return [self._names.get(address, address) for address in self.transport.sent]

    def pool(
        self,
        me: str = "caller",
        *,
        policy: Policy | None = None,
        metadata: Mapping[str, Any] | None = None,
        default_timeout: float = 30.0,
        max_attempts: int = 3,
    ) -> PeerPool:
        """A `PeerPool` for agent `me` over this mesh's directory and transport (enter it with `async with`)."""
        return PeerPool(
            me=me,
            keys=self.keys,
            directory=self.directory,
            policy=policy,
            metadata=metadata,
            default_timeout=default_timeout,
            max_attempts=max_attempts,
            transport=self.transport,
        )


def _address(inst: Instance) -> str:
    url = httpx2.URL(inst.url)
    return f"{url.host}:{url.port}"
