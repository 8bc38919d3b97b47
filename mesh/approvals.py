"""Human approval, the pure part: what exactly is approved, and the signed ticket that binds it.

An approval is bound to one call: agent, tool, a digest of the arguments, and the caller,
with an expiry (DESIGN §6). The ticket travels as the MCP `requestState` of an input-required
round, signed with the mesh key so no hop can re-aim it at another call, and each round's state
names the instance that issued it and a nonce, so that instance can honour it once. No I/O here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "RoundState",
    "Ticket",
    "approval_prompt",
    "approval_schema",
    "arguments_digest",
]


class _Signer(Protocol):
    def sign(self, fields: Mapping[str, str]) -> str: ...
    def verify_signature(self, fields: Mapping[str, str], signature: str) -> bool: ...


def arguments_digest(arguments: Mapping[str, Any] | None) -> str:
    """sha256 of the arguments in canonical JSON (sorted keys, no spaces), as hex."""
    canonical = json.dumps(arguments or {}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Ticket:
    """One pending approval of one exact call."""

    agent: str
    tool: str
    digest: str
    caller: str
    expires_at: float

    def fields(self) -> dict[str, str]:
        """What the signature covers."""
        return {
            "purpose": "approval-ticket/1",
            "agent": self.agent,
            "tool": self.tool,
            "digest": self.digest,
            "caller": self.caller,
            "expires_at": f"{self.expires_at:.3f}",
        }

    def encode(self, signer: _Signer) -> str:
        """The ticket as an opaque, signed `requestState` string."""
        body = json.dumps(self.fields(), separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(body).decode().rstrip("=") + "." + signer.sign(self.fields())

    @classmethod
    def decode(cls, state: str, signer: _Signer) -> Ticket | None:
        """The ticket in `state` if its signature holds, else None (never raises for junk)."""
        body, _, signature = state.partition(".")
        try:
            raw = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            fields = {str(k): str(v) for k, v in raw.items()}
            if fields.get("purpose") != "approval-ticket/1" or not signer.verify_signature(fields, signature):
                return None
            return cls(
                agent=fields["agent"],
                tool=fields["tool"],
                digest=fields["digest"],
                caller=fields["caller"],
                expires_at=float(fields["expires_at"]),
            )
        except (ValueError, KeyError, AttributeError, TypeError):
            return None

    def matches(self, other: Ticket, *, now: float | None = None) -> str | None:
        """None if `self` approves the call `other` describes now, else why not."""
        now = time.time() if now is None else now
        if (self.agent, self.tool, self.digest, self.caller) != (other.agent, other.tool, other.digest, other.caller):
            return "the approval was given for a different call"
        if now > self.expires_at:
            return f"the approval expired {now - self.expires_at:.0f}s ago"
        return None


def approval_prompt(ticket: Ticket, arguments: Mapping[str, Any] | None, reason: str) -> str:
    """What a person is asked: who wants to run what, with which arguments, and why it needs them."""
    shown = json.dumps(arguments or {}, sort_keys=True, default=str)
    if len(shown) > 400:
        shown = shown[:400] + "…"
    return f"{ticket.caller} wants to run {ticket.agent}.{ticket.tool}({shown}). {reason} Approve?"


def approval_schema() -> dict[str, Any]:
    """The elicitation form: one yes/no and an optional note."""
    return {
        "type": "object",
        "properties": {
            "approve": {"type": "boolean", "title": "Approve this call"},
            "note": {"type": "string", "title": "Note for the audit record"},
        },
        "required": ["approve"],
    }


@dataclass(frozen=True, slots=True)
class RoundState:
    """What an agent keeps between input-required rounds: its own approval, and a question it relays.

    Single use: the instance that issued it honours its nonce once (a replayed round is refused).
    """

    asked: str | None = None
    """The ticket this agent asked a person about in the previous round."""
    approved: str | None = None
    """This agent's own approval ticket, already answered yes (so it is not asked twice)."""
    relay_agent: str | None = None
    relay_tool: str | None = None
    relay_state: str | None = None
    """The `requestState` of the downstream call whose question this round relays."""
    relay_instance: str | None = None
    """The downstream instance that asked (the answer must go back to it)."""
    instance: str = ""
    """The instance that issued this state."""
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(12))

    def encode(self, signer: _Signer) -> str:
        """The state as a signed, opaque `requestState`."""
        fields = {
            "purpose": "round-state/2",
            "asked": self.asked or "",
            "approved": self.approved or "",
            "relay_agent": self.relay_agent or "",
            "relay_tool": self.relay_tool or "",
            "relay_state": self.relay_state or "",
            "relay_instance": self.relay_instance or "",
            "instance": self.instance,
            "nonce": self.nonce,
        }
        body = json.dumps(fields, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(body).decode().rstrip("=") + "." + signer.sign(fields)

    @classmethod
    def decode(cls, state: str | None, signer: _Signer) -> RoundState | None:
        """The state if it is ours and intact, else None."""
        if not state:
            return None
        body, _, signature = state.partition(".")
        try:
            raw = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            fields = {str(k): str(v) for k, v in raw.items()}
        except (ValueError, AttributeError):
            return None
        if fields.get("purpose") != "round-state/2" or not signer.verify_signature(fields, signature):
            return None
        return cls(
            asked=fields.get("asked") or None,
            approved=fields.get("approved") or None,
            relay_agent=fields.get("relay_agent") or None,
            relay_tool=fields.get("relay_tool") or None,
            relay_state=fields.get("relay_state") or None,
            relay_instance=fields.get("relay_instance") or None,
            instance=fields.get("instance", ""),
            nonce=fields.get("nonce", ""),
        )
