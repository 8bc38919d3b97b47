"""The gateway: every tool of the mesh behind one stdio MCP server (what Claude Desktop launches).

`catalog` decides what a client sees and under which names and `results` shapes the answers
(both pure); `server` serves them live and routes each call peer to peer. Discovery and
calling belong to `mesh.runtime.node.MeshNode`.
"""

from mesh.gateway.catalog import Catalog, build_catalog, exposed_name, split_name
from mesh.gateway.server import GATEWAY_NAME, Gateway, serve_gateway

__all__ = ["GATEWAY_NAME", "Gateway", "serve_gateway", "Catalog", "build_catalog", "exposed_name", "split_name"]
