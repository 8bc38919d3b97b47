"""Names in the mesh: agent and mesh names are DNS labels (RFC 1123), so they fit mDNS.

Owns validation only; what a name refers to is the peer directory's business.
"""

from __future__ import annotations

import re

from mesh.errors import ConfigError

__all__ = ["TOOL_SEPARATOR", "check_name", "is_name"]

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

TOOL_SEPARATOR = "__"
"""How the gateway joins agent and tool (`crm__lookup`): Claude's tool names allow no dots."""


def is_name(value: str) -> bool:
    """True when `value` is a lowercase DNS label (letters, digits, inner hyphens, 1-63 chars)."""
    return bool(_LABEL.match(value))


def check_name(value: str, *, what: str = "agent name") -> str:
    """Return `value` if it is a DNS label, else raise ConfigError saying what is wrong."""
    if not is_name(value):
        raise ConfigError(
            f"invalid {what} {value!r}: use 1-63 lowercase letters, digits and inner hyphens (a DNS label)"
        )
    return value
