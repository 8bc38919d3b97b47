"""Test helpers that ship with agentplex, for our tests and our users' (STYLE habit 13).

`MeshProcess` / `AgentProcess` start real `mesh` processes on free ports and wait for
readiness; the in-memory fakes sit beside them (`InProcessMesh` serves agents in this process,
for unit tests of the call path). Nothing here is used in production paths.
"""

from mesh.testing.inprocess import InProcessMesh, InProcessTransport
from mesh.testing.processes import AgentProcess, MeshProcess, RegistryProcess, free_port
from mesh.testing.spans import RecordingSink

__all__ = [
    "AgentProcess",
    "InProcessMesh",
    "InProcessTransport",
    "MeshProcess",
    "RecordingSink",
    "RegistryProcess",
    "free_port",
]
