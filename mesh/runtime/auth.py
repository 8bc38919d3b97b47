"""The callee's identity check: every MCP request carries a mesh token naming this agent.

A pure ASGI layer in front of the SDK's app: 401 with a one-line reason otherwise, and
the verified caller and its claims left in the scope's state for tools and policy. Paths outside
`/mcp` (health) pass through.
"""

from __future__ import annotations

import json
from typing import Any, final

from starlette.types import ASGIApp, Receive, Scope, Send

from mesh.errors import IdentityError
from mesh.identity import MeshKeys
from mesh.runtime.tools import CALLER_STATE_KEY, CLAIMS_STATE_KEY

__all__ = ["BearerAuth", "bearer_token", "send_unauthorized"]


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
            token = bearer_token(scope)
            if token is None:
                raise IdentityError("no mesh token: send 'Authorization: Bearer <token>' (see `mesh token`)")
            claims = self.keys.verify(token, audience=self.audience)
        except IdentityError as exc:
            message = {"code": -32001, "message": f"unauthorized: {exc}"}
            await send_unauthorized(send, json.dumps({"jsonrpc": "2.0", "id": None, "error": message}).encode())
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        state[CALLER_STATE_KEY] = claims.caller
        state[CLAIMS_STATE_KEY] = claims
        await self.app(scope, receive, send)


def bearer_token(scope: Scope) -> str | None:
    """The token of the request's `Authorization: Bearer` header; None without one, IdentityError for another scheme."""
    for key, value in scope["headers"]:
        if key == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise IdentityError("the Authorization header is not a Bearer token")
            return token.strip()
    return None


async def send_unauthorized(send: Send, body: bytes) -> None:
    """Answer 401 with the JSON `body` and a Bearer challenge."""
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer realm="agentplex"'),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
