"""The mesh's exception tree: one root, so callers catch one family.

MeshError
├── ConfigError              bad input from the user: a file, a flag, a name
│   └── AgentLoadError       a TARGET that does not yield exactly one Agent
├── IdentityError            a missing, forged or expired token or announcement
├── PolicyError              a policy file that cannot be read or parsed
├── PolicyDenied             a Cedar verdict of deny (names the policy)
├── ApprovalRequired         a verdict that needs a human, with no one to ask
├── ApprovalDenied           a human (or the clock) said no
├── DiscoveryError           no such agent, or nothing healthy serves it
├── RegistryError            the registry refused or could not be reached
└── PeerError                a call to another agent failed
    ├── PeerUnavailable      could not reach any instance (connect refused, circuit open, died mid-call)
    ├── DeadlineExceeded     the call's time budget ran out
    ├── PeerRejected         the peer answered with a protocol error (401, bad arguments, ...)
    └── ToolFailed           the tool ran and reported an error

This module is a leaf: it imports nothing from mesh.
"""

from __future__ import annotations


class MeshError(Exception):
    """Root of every error the mesh raises on purpose."""


class ConfigError(MeshError):
    """The user gave input the mesh cannot use; the message says which and why."""


class AgentLoadError(ConfigError):
    """A TARGET for `mesh run` did not resolve to exactly one Agent."""


class IdentityError(MeshError):
    """A token or announcement is missing, forged, expired or meant for someone else."""


class PolicyError(MeshError):
    """A policy file cannot be read or parsed; the mesh then denies every call."""


class PolicyDenied(MeshError):
    """A Cedar policy denied the call."""

    def __init__(self, message: str, *, policy: str | None = None, where: str = "caller") -> None:
        super().__init__(message)
        self.policy = policy
        self.where = where


class ApprovalRequired(MeshError):
    """The call needs a human decision and nobody in reach can give one."""


class ApprovalDenied(MeshError):
    """A human declined the call, or the approval expired."""


class DiscoveryError(MeshError):
    """No agent of that name, or none with a healthy instance."""


class RegistryError(MeshError):
    """The registry refused a request or could not be reached."""


class PeerError(MeshError):
    """A call to another agent failed."""

    def __init__(self, message: str, *, agent: str | None = None, tool: str | None = None) -> None:
        super().__init__(message)
        self.agent = agent
        self.tool = tool


class PeerUnavailable(PeerError):
    """No instance of the agent could be reached (or one died before answering)."""


class DeadlineExceeded(PeerError):
    """The call's deadline passed before an answer came."""


class PeerRejected(PeerError):
    """The peer refused the request: authentication, arguments, or a protocol error."""


class ToolFailed(PeerError):
    """The tool ran and returned an error result."""
