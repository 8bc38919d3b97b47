"""`Context`: what a tool sees of the mesh while it runs (DESIGN §3).

Owns the per-call view: who called, calling peers (`call`), recording decisions
(`decide`). How calls travel is the PeerCaller's business, not this module's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, final

from mesh.decisions import record_decision
from mesh.errors import ConfigError
from mesh.protocols import PeerCaller

__all__ = ["Context"]


@final
class Context:
    """The mesh, as seen from inside one tool call."""

    __slots__ = ("_peers", "agent", "caller", "metadata", "request", "tool")

    def __init__(
        self,
        *,
        agent: str,
        tool: str,
        caller: str | None,
        peers: PeerCaller | None,
        metadata: Mapping[str, Any] | None = None,
        request: Any = None,
    ) -> None:
        self.agent = agent
        """The name of the agent running this tool."""
        self.tool = tool
        """The name of the tool being run."""
        self.caller = caller
        """Who called, as proven by their token (None for an unauthenticated or stdio client)."""
        self.metadata: Mapping[str, Any] = metadata or {}
        """This agent's governance metadata as deployed (after `--meta` overrides)."""
        self.request = request
        """The SDK's request context, for what the mesh does not wrap (elicitation, progress)."""
        self._peers = peers

    async def call(
        self,
        agent: str,
        tool: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Call `tool` on `agent` peer to peer; returns its structured result, raises a MeshError."""
        if self._peers is None:
            raise ConfigError("this agent was started without a mesh connection; ctx.call is unavailable")
        return await self._peers.call(agent, tool, arguments, timeout=timeout)

    def decide(
        self,
        kind: str,
        *,
        choice: str,
        reason: str | None = None,
        confidence: float | None = None,
        alternatives: Sequence[str] = (),
    ) -> None:
        """Record a decision this agent made, on the current span of the decision trace."""
        record_decision(kind, choice=choice, reason=reason, confidence=confidence, alternatives=alternatives)
