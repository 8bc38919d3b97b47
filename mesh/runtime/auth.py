"""The callee's identity check: every MCP request carries a mesh token naming this agent.

A pure ASGI layer in front of the SDK's app: 401 with a one-line reason otherwise, and
the verified caller left in the scope's state for tools and policy. Paths outside
`/mcp` (health) pass through.
"""

from __future__ import annotations

import json
from typing import Any, final

from starlette.types import ASGIApp, Receive, Scope, Send

from mesh.errors import IdentityError
from mesh.identity import MeshKeys
from mesh.runtime.tools import CALLER_STATE_KEY

__all__ = ["BearerAuth"]


@final
class BearerAuth:
    """Rejects `/mcp` requests without a valid mesh token for `audience` (401)."""

    def __init__(self, app: ASGIApp, *, keys: MeshKeys, audience: str, protected: str = "/mcp") -> None:
        self.app = app
        self.keys = keys
        self.audience = audience
        self.protected = protected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.protected):
            await self.app(scope, receive, send)
            return
        try:
            claims = self.keys.verify(_bearer(scope), audience=self.audience)
        except IdentityError as exc:
            await _unauthorized(send, str(exc))
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        state[CALLER_STATE_KEY] = claims.caller
        await self.app(scope, receive, send)


def _bearer(scope: Scope) -> str:
    for key, value in scope["headers"]:
        if key == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise IdentityError("the Authorization header is not a Bearer token")
            return token.strip()
    raise IdentityError("no mesh token: send 'Authorization: Bearer <token>' (see `mesh token`)")


async def _unauthorized(send: Send, reason: str) -> None:
    body = json.dumps(
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32001, "message": f"unauthorized: {reason}"}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer realm="agentplex"'),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
