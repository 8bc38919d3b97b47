"""The mesh's seams as Protocols: implement one to extend the mesh (STYLE habit 6).

Leaf module: type definitions only, no behaviour.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["PeerCaller"]


class PeerCaller(Protocol):
    """Calls a tool on another agent of the mesh and returns its structured result (or text)."""

    async def call(
        self,
        agent: str,
        tool: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any: ...
