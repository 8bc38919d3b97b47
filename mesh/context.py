"""`Context`: what a tool sees of the mesh while it runs (DESIGN §3).

Owns the per-call view: who called, calling peers (`call`), recording decisions (`decide`),
and talking to the person at the origin of the chain: progress (`report_progress`), log
messages (`log`, `info`, ...) and questions (`elicit`), named as the SDK's own `Context` names
them. How calls and notices travel is the PeerCaller's and the runtime's business, not this module's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar, final

from mcp.server.elicitation import (
    AcceptedElicitation,
    CancelledElicitation,
    DeclinedElicitation,
    ElicitationResult,
    render_elicitation_schema,
)
from mcp_types import LoggingLevel
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, ValidationError

from mesh.decisions import record_decision
from mesh.errors import ConfigError
from mesh.peers.notices import NoticeSink
from mesh.peers.questions import Questions
from mesh.protocols import PeerCaller

__all__ = ["Context", "ResourceUpdates", "resource_updates_var"]


class ResourceUpdates(Protocol):
    """Tells the clients subscribed to a resource that it changed (the runtime's subscriptions)."""

    async def updated(self, uri: str) -> int: ...


resource_updates_var: ContextVar[ResourceUpdates | None] = ContextVar("mesh_resource_updates", default=None)
"""The serving agent's resource subscriptions, set by the runtime while it serves."""

_SchemaT = TypeVar("_SchemaT", bound=BaseModel)


@final
class Context:
    """The mesh, as seen from inside one tool call."""

    __slots__ = ("_notices", "_peers", "_questions", "agent", "caller", "metadata", "request", "tool")

    def __init__(
        self,
        *,
        agent: str,
        tool: str,
        caller: str | None,
        peers: PeerCaller | None,
        metadata: Mapping[str, Any] | None = None,
        request: Any = None,
        notices: NoticeSink | None = None,
        questions: Questions | None = None,
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
        """The SDK's request context, for what the mesh does not wrap."""
        self._peers = peers
        self._notices = notices
        self._questions = questions

    async def call(
        self,
        agent: str,
        tool: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Call `tool` on `agent` peer to peer; returns its structured result, raises a MeshError.

        The callee's progress and log messages reach this call's caller, when it asked for them.
        """
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

    async def report_progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        """Tell the caller how far this call has got (sent only when it asked for progress)."""
        if self._notices is not None:
            await self._notices.progress(progress, total, message)

    async def log(self, level: LoggingLevel, data: Any, *, logger_name: str | None = None) -> None:
        """Send a log message up the chain to the origin (sent only at a level the caller takes).

        The logger defaults to this agent's name, so the origin sees where a message came from.
        """
        if self._notices is not None:
            await self._notices.log(level, data, logger_name or self.agent)

    async def debug(self, data: Any, *, logger_name: str | None = None) -> None:
        """Send a debug log message."""
        await self.log("debug", data, logger_name=logger_name)

    async def info(self, data: Any, *, logger_name: str | None = None) -> None:
        """Send an info log message."""
        await self.log("info", data, logger_name=logger_name)

    async def warning(self, data: Any, *, logger_name: str | None = None) -> None:
        """Send a warning log message."""
        await self.log("warning", data, logger_name=logger_name)

    async def error(self, data: Any, *, logger_name: str | None = None) -> None:
        """Send an error log message."""
        await self.log("error", data, logger_name=logger_name)

    async def resource_updated(self, uri: str) -> int:
        """Tell the clients subscribed to this agent's resource `uri` that it changed; how many were told."""
        updates = resource_updates_var.get()
        return 0 if updates is None else await updates.updated(uri)

    async def elicit(self, message: str, schema: type[_SchemaT]) -> ElicitationResult[_SchemaT]:
        """Ask the person at the origin of the chain to fill in `schema`; their accept, decline or cancel.

        A handshake-era client that called this agent directly is asked on its own connection. Anywhere
        else the question travels up as approvals do, and the call is made again with the answer: the
        tool runs again from the top, and this question, asked again, returns the answer. Raises
        `ApprovalRequired` when nobody in the chain can answer.
        """
        requested = render_elicitation_schema(schema)
        if self._asks_directly():
            return await self.request.elicit(message, schema)
        if self._questions is None:
            raise ConfigError("this agent was started without a mesh runtime; ctx.elicit is unavailable")
        answer = self._questions.ask(message, requested)
        action = answer.get("action")
        if action == "accept":
            try:
                return AcceptedElicitation(data=schema.model_validate(answer.get("content") or {}))
            except ValidationError as exc:
                raise ValueError("the answer does not match the requested form") from exc
        return DeclinedElicitation() if action == "decline" else CancelledElicitation()

    def _asks_directly(self) -> bool:
        """True when the caller is a handshake-era client on a connection that takes server requests."""
        try:
            request_context: Any = self.request.request_context
        except (AttributeError, ValueError):  # no SDK context, or one outside a request
            return False
        if request_context.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return False
        session: Any = request_context.session
        capabilities: Any = session.client_capabilities
        return bool(session.can_send_request) and capabilities is not None and capabilities.elicitation is not None
