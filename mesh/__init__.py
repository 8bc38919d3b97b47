"""agentplex: an MCP-native agent mesh.

Each agent is an MCP server in its own process; agents find each other through mDNS and
a shared registry, call each other peer to peer, and every call chain becomes one
decision trace. This module is the public surface: adding a name is an API decision.
"""

from mesh.agent import Agent
from mesh.connect import connect
from mesh.context import Context
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

__all__ = [
    "Agent",
    "Context",
    "connect",
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
