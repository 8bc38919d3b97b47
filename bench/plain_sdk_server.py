"""A plain SDK `MCPServer` with the echo tool, served the SDK's default way: the baseline of bench/hop.py."""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("plain-echo", log_level="WARNING")


@server.tool()
async def echo(text: str) -> str:
    """Return `text` unchanged."""
    return text


if __name__ == "__main__":
    port = int(sys.argv[1])
    print(f"plain sdk listening on http://127.0.0.1:{port}/mcp", file=sys.stderr, flush=True)
    server.run("streamable-http", host="127.0.0.1", port=port)
