"""Who may reach a registry's routes when it serves the LAN: a mesh token, or a person signed in on its page.

Owns the session cookie (its name, how a request's session or bearer token is found) and
`TokenGate`, the ASGI layer that answers 401 to a tokenless request on `--lan`, except the page,
health and sign-in. It does not decide what a token may do once in: each route does (DESIGN §6).
"""

from __future__ import annotations

import json
from typing import Final, final

from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from mesh.errors import IdentityError
from mesh.identity import MeshKeys
from mesh.runtime.auth import bearer_token, send_unauthorized

__all__ = [
    "OPEN_PATHS",
    "SELF_CHECKED",
    "SESSION_COOKIE",
    "TokenGate",
    "bearer_or_session",
    "session_token",
]

SESSION_COOKIE: Final = "mesh_session"
"""The cookie that holds a signed-in person's token (the token is the session: no server state)."""

OPEN_PATHS: Final = frozenset({"/", "/healthz", "/ui/session"})
"""Paths anyone may reach on the LAN: the page (to sign in from), health (and its proof), signing in."""

SELF_CHECKED: Final = ("/mcp", "/v1/traces")
"""Paths whose routes check bearer tokens themselves (their own audience and answer format)."""

_NO_TOKEN: Final = (
    "this registry serves the LAN: send 'Authorization: Bearer <mesh token>' (see `mesh token`) or sign in on its page"
)


@final
class TokenGate:
    """Answers 401 to a request outside OPEN_PATHS and SELF_CHECKED without a mesh token for `audience`."""

    def __init__(self, app: ASGIApp, *, keys: MeshKeys, audience: str) -> None:
        self.app = app
        self.keys = keys
        self.audience = audience

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            self.keys.verify(bearer_or_session(scope), audience=self.audience)
        except IdentityError as exc:
            await send_unauthorized(send, json.dumps({"error": str(exc)}).encode())
            return
        await self.app(scope, receive, send)


def bearer_or_session(scope: Scope) -> str:
    """The token a request presents: its `Authorization: Bearer` header, else its session cookie.

    Raises IdentityError (one line) when it presents neither, or a header that is not a Bearer token.
    """
    token = bearer_token(scope) or session_token(_cookie_header(scope))
    if token is None:
        raise IdentityError(_NO_TOKEN)
    return token


def session_token(cookie_header: str) -> str | None:
    """The session token in a `Cookie` header, or None."""
    return cookie_parser(cookie_header).get(SESSION_COOKIE) or None


def _exempt(path: str) -> bool:
    return path in OPEN_PATHS or any(path == p or path.startswith(p + "/") for p in SELF_CHECKED)


def _cookie_header(scope: Scope) -> str:
    return "; ".join(value.decode("latin-1") for key, value in scope["headers"] if key == b"cookie")
