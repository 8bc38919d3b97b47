"""`mesh.connect()`: join the mesh from a script, as a caller (DESIGN §3).

async with mesh.connect() as m:
    await m.call("crm", "lookup", {"email": "ada@example.com"})
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from mesh.runtime.node import MeshNode

__all__ = ["connect"]


@asynccontextmanager
async def connect(
    *,
    mesh: str | None = None,
    name: str = "script",
    metadata: Mapping[str, Any] | None = None,
    registry: str | None = None,
    mdns: bool = True,
    settle: float = 5.0,
) -> AsyncGenerator[MeshNode]:
    """Discover the mesh (mDNS and the registry) and yield a node whose `call` reaches any agent."""
    async with MeshNode(name, mesh=mesh, metadata=metadata, registry=registry, mdns=mdns) as node:
        await node.settle(timeout=settle)
        yield node
