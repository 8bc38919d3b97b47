"""The registry's web page at `/`: placeholder until the UI lands."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from starlette.requests import Request
from starlette.responses import HTMLResponse

__all__ = ["install_web"]


def install_web(server: MCPServer) -> None:
    """Serve the web page at `/`."""

    async def index(request: Request) -> HTMLResponse:
        del request
        return HTMLResponse("<!doctype html><title>agentplex</title><h1>agentplex registry</h1>")

    server.custom_route("/", methods=["GET"])(index)
