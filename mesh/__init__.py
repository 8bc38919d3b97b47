"""agentplex: an MCP-native agent mesh.

Each agent is an MCP server in its own process; agents find each other through mDNS and
a shared registry, call each other peer to peer, and every call chain becomes one
decision trace. This module is the public surface: adding a name is an API decision.

`Agent`, `Context`, `connect` and `add_span_processor` are imported on first use, so a process that needs only a
leaf module (`mesh.wire`, say: the tracer's ingest workers) does not load the whole runtime.
"""

import importlib
import typing

from mesh.errors import (
    ApprovalDenied,
    ApprovalRequired,
    ConfigError,
    DeadlineExceeded,
    DiscoveryError,
    IdentityError,
    MeshError,
    PeerError,
    PeerRejected,
    PeerUnavailable,
    PolicyDenied,
    RegistryError,
    ToolFailed,
)

if typing.TYPE_CHECKING:
    from mesh.agent import Agent
    from mesh.caller import connect
    from mesh.context import Context
    from mesh.tracing.processors import add_span_processor

__all__ = [
    "Agent",
    "Context",
    "connect",
    "add_span_processor",
    "MeshError",
    "ConfigError",
    "IdentityError",
    "PolicyDenied",
    "ApprovalRequired",
    "ApprovalDenied",
    "DiscoveryError",
    "RegistryError",
    "PeerError",
    "PeerUnavailable",
    "DeadlineExceeded",
    "PeerRejected",
    "ToolFailed",
]

_RUNTIME: typing.Final = {
    "Agent": "mesh.agent",
    "Context": "mesh.context",
    "connect": "mesh.caller",
    "add_span_processor": "mesh.tracing.processors",
}


def __getattr__(name: str) -> typing.Any:
    home = _RUNTIME.get(name)
    if home is None:
        raise AttributeError(f"module 'mesh' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
