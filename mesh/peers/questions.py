"""A tool's own questions to the person at the origin, asked across input-required rounds.

On a 2026-07-28 chain a callee cannot hold a call open while a person answers: it answers
`input_required` and is called again with the answers, the round trip approvals already take
(`mesh.peers.rounds`). So a tool that asks runs again from the top on the next round, and each
question it asks again is answered from that round instead of asked. The answers so far ride in
the state of the round (inside the guard's signed, single-use round state: an answer is used once,
by the instance that asked, and cannot be forged). No I/O here.

`sampling_var` says, beside `interactive_var`, whether the origin's client answers sampling requests,
which an adopted server's tool may make (`mesh.runtime.adopted_questions`).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Final, final

from mcp_types import ElicitRequest, ElicitRequestFormParams

from mesh.errors import ApprovalRequired
from mesh.peers.rounds import InputNeeded, Relay, interactive_var
from mesh.wire import ASK_INPUT_KEY

__all__ = ["Questions", "sampling_var"]

_STATE_PREFIX: Final = "ask1:"

sampling_var: ContextVar[bool] = ContextVar("mesh_sampling", default=False)
"""True while serving a request whose origin client answers `sampling/createMessage` (carried as `_meta`)."""


@final
class Questions:
    """The questions one run of one tool asks, and the answers earlier rounds brought."""

    __slots__ = ("_agent", "_answers", "_asked", "_tool")

    def __init__(self, agent: str, tool: str, answers: Mapping[str, tuple[str, dict[str, Any]]] | None = None) -> None:
        self._agent = agent
        self._tool = tool
        self._answers = dict(answers or {})
        self._asked = 0

    @classmethod
    def of_round(cls, agent: str, tool: str, relay: Relay | None) -> tuple[Questions, Relay | None]:
        """This run's questions, from the round's relay if it carries ours; and the relay left for the callees."""
        if relay is None or relay.state is None or not relay.state.startswith(_STATE_PREFIX):
            return cls(agent, tool), relay
        state = _decode(relay.state)
        if state is None:
            return cls(agent, tool), relay
        answers = {key: (digest, answer) for key, (digest, answer) in state["answers"].items()}
        for key, digest in state["asked"].items():
            reply = relay.responses.get(key)
            if isinstance(reply, dict):
                answers[key] = (digest, reply)  # pyright: ignore[reportUnknownArgumentType]
        # A callee's question was the one asked: its answers go on down to it, with its own state.
        if not state["relayed"]:
            return cls(agent, tool, answers), None
        left = Relay(relay.agent, relay.tool, state["inner"], relay.responses, relay.instance)
        return cls(agent, tool, answers), left

    def ask(self, message: str, requested_schema: dict[str, Any]) -> dict[str, Any]:
        """The person's answer (an `ElicitResult` as a wire dict), or `InputNeeded` carrying the question up."""
        self._asked += 1
        key = f"{ASK_INPUT_KEY}/{self._agent}/{self._asked}"
        digest = _digest(message, requested_schema)
        known = self._answers.get(key)
        if known is not None and known[0] == digest:
            return known[1]
        if not interactive_var.get():
            raise ApprovalRequired(
                f"{self._agent}.{self._tool} asks a person ({message!r}), and nobody in this call chain can answer"
            )
        question = ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=requested_schema))
        wire = question.model_dump(mode="json", by_alias=True, exclude_none=True)
        self._answers.pop(key, None)  # an answer to a different question at this place is not this one's
        raise InputNeeded(self._agent, self._tool, {key: wire}, self._state({key: digest}))

    def carry(self, need: InputNeeded) -> InputNeeded:
        """`need` (a callee's question) with this run's answers kept for the round after it."""
        if not self._answers or (need.request_state or "").startswith(_STATE_PREFIX):
            return need  # nothing to keep, or this run's own question (its state already keeps them)
        state = self._state({}, relayed=True, inner=need.request_state)
        return InputNeeded(need.agent, need.tool, need.input_requests, state, need.instance)

    def _state(self, asked: dict[str, str], *, relayed: bool = False, inner: str | None = None) -> str:
        body = {
            "asked": asked,
            "answers": {key: [digest, answer] for key, (digest, answer) in self._answers.items()},
            "relayed": relayed,
            "inner": inner,
        }
        encoded = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        return _STATE_PREFIX + base64.urlsafe_b64encode(encoded).decode().rstrip("=")


def _digest(message: str, schema: Mapping[str, Any]) -> str:
    canonical = json.dumps([message, schema], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _decode(state: str) -> dict[str, Any] | None:
    """The state's fields if it is well formed, else None (it never raises for junk)."""
    body = state.removeprefix(_STATE_PREFIX)
    try:
        raw = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    asked: Any = raw.get("asked")  # pyright: ignore[reportUnknownMemberType]
    answers: Any = raw.get("answers")  # pyright: ignore[reportUnknownMemberType]
    inner: Any = raw.get("inner")  # pyright: ignore[reportUnknownMemberType]
    if not isinstance(asked, dict) or not isinstance(answers, dict) or not (inner is None or isinstance(inner, str)):
        return None
    good_asked = {str(k): str(v) for k, v in asked.items()}  # pyright: ignore[reportUnknownVariableType]
    good_answers: dict[str, tuple[str, dict[str, Any]]] = {}
    for key, pair in answers.items():  # pyright: ignore[reportUnknownVariableType]
        if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], dict):  # pyright: ignore[reportUnknownArgumentType]
            good_answers[str(key)] = (str(pair[0]), pair[1])  # pyright: ignore[reportUnknownArgumentType]
    return {"asked": good_asked, "answers": good_answers, "relayed": raw.get("relayed") is True, "inner": inner}  # pyright: ignore[reportUnknownMemberType]
