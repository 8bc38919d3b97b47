"""A callee's error result as the mesh error it names: the kinds a refusal travels under in `_meta`.

A callee that refuses or fails a call answers an `isError` result whose `_meta` names the kind
(`agentplex/error`: `PolicyDenied`, `DeadlineExceeded`, ...) and whose text starts with it; the
caller raises the matching `MeshError` with the callee's words. No I/O here.
"""

from __future__ import annotations

from mesh.errors import (
    ApprovalDenied,
    ApprovalRequired,
    DeadlineExceeded,
    MeshError,
    PeerUnavailable,
    PolicyDenied,
    ToolFailed,
)
from mesh.peers.hop import HopResult
from mesh.wire import ERROR_META_KEY

__all__ = ["refusal"]


def refusal(result: HopResult, agent: str, tool: str) -> MeshError:
    """The error to raise for `result`, an error result `agent` answered a call of `tool` with."""
    kind = (result.raw.get("_meta") or {}).get(ERROR_META_KEY)
    # A refusal's text starts with its kind; the exception's class already says it.
    text = result.text.removeprefix(f"{kind}: ") if kind else result.text
    if kind == "PolicyDenied":
        return PolicyDenied(text, where="callee")
    if kind == "DeadlineExceeded":
        return DeadlineExceeded(text, agent=agent, tool=tool)
    if kind == "ApprovalDenied":
        return ApprovalDenied(text)
    if kind == "ApprovalRequired":
        return ApprovalRequired(text)
    if kind == "PeerUnavailable":  # an adopted server's child died mid-call: not retried here
        return PeerUnavailable(text, agent=agent, tool=tool)
    return ToolFailed(text or f"{agent}.{tool} failed", agent=agent, tool=tool)
