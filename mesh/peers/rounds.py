"""Input-required rounds across hops: what the caller forwards, and the error that carries a question up.

When a callee answers `input_required` (a person must approve), the caller cannot answer
itself: `InputNeeded` carries the question up to whoever can, and on the next round the
answer comes back down through `relayed_answers`. Context variables, set by the runtime
for the request being served, read by the pool for the calls it makes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from mcp import MCPError

from mesh.errors import ApprovalRequired, MeshError

__all__ = ["INPUT_NEEDED_CODE", "Ask", "InputNeeded", "Relay", "interactive_var", "relay_var", "with_answers"]

_T = TypeVar("_T")

INPUT_NEEDED_CODE = -32042
"""The JSON-RPC code `InputNeeded` travels under inside one process (never on the wire)."""


class InputNeeded(MeshError, MCPError):
    """A callee needs a person's answer before it can run; let it propagate so it reaches one."""

    def __init__(
        self,
        agent: str,
        tool: str,
        input_requests: dict[str, Any],
        request_state: str | None,
        instance: str | None = None,
    ) -> None:
        MCPError.__init__(self, INPUT_NEEDED_CODE, f"{agent}.{tool} needs a person's answer before it runs")
        self.agent = agent
        self.tool = tool
        self.input_requests = input_requests
        self.request_state = request_state
        self.instance = instance
        """The instance that asked: its answer goes back to it, the one that can honour it once."""


@dataclass(frozen=True, slots=True)
class Relay:
    """Answers to a question a downstream call asked, to send with the same call again."""

    agent: str
    tool: str
    state: str | None
    responses: dict[str, Any]
    instance: str | None = None
    """The instance that asked; the answers go to it alone."""


interactive_var: ContextVar[bool] = ContextVar("mesh_interactive", default=False)
"""True while serving a request whose origin can answer questions (elicitation)."""

relay_var: ContextVar[Relay | None] = ContextVar("mesh_relay", default=None)
"""The answers to pass down on this round, if the previous round relayed a question."""


Ask = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
"""Puts one input request (a wire dict, e.g. an elicitation) to a person; returns the answer (an ElicitResult dict)."""


async def with_answers(call: Callable[[], Awaitable[_T]], ask: Ask, *, max_rounds: int = 4) -> _T:
    """Run `call` where a person can answer: each question a callee asks goes to `ask`, then the call is repeated."""
    token = interactive_var.set(True)
    relay_token = relay_var.set(None)
    try:
        for _ in range(max_rounds):
            try:
                return await call()
            except InputNeeded as need:
                answers = {key: await ask(key, request) for key, request in need.input_requests.items()}
                relay_var.set(Relay(need.agent, need.tool, need.request_state, answers, need.instance))
        raise ApprovalRequired(f"gave up after {max_rounds} rounds of questions")
    finally:
        relay_var.reset(relay_token)
        interactive_var.reset(token)
