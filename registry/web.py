"""The registry's web page at `/`, the sign-in that lets a person decide from it, and their decisions.

Owns the page (assembled once from the `registry/ui/` package data into one self-contained
document whose Content-Security-Policy pins its inline script and style by hash), the session
routes (`/ui/session`: a person's approver token, kept in an HttpOnly, SameSite=Strict cookie) and
`POST /ui/approvals/{id}/decision`, which records the signed-in person's decision. Who may decide
what is `registry.approvals.may_decide`'s; the data the page shows comes from the JSON routes.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, final
from urllib.parse import urlsplit

from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from mesh.errors import IdentityError
from mesh.hosts import is_loopback
from mesh.identity import Claims, MeshKeys
from mesh.wire import ApprovalDecision
from registry.access import SESSION_COOKIE, session_token
from registry.approvals import ApprovalQueue, DecisionRefused
from registry.inventory_api import REGISTRY_AUDIENCE

__all__ = ["MAX_DECISION_BYTES", "install_web"]

MAX_DECISION_BYTES: Final = 4096
"""Largest body the page may send to a `/ui/` route (413 beyond)."""

_TOKEN_SHAPE: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_PEOPLE_ROLES: Final = ("approver", "admin")


def install_web(server: MCPServer, *, queue: ApprovalQueue, keys: MeshKeys, lan: bool = False) -> None:
    """Serve the page at `/`, sign-in at `/ui/session` and the page's decisions at `/ui/approvals/{id}/decision`.

    `lan`: the registry serves the LAN, so a write from the page need not come from loopback (its
    Origin must still be the page's own); reads are gated by `registry.access.TokenGate`.
    """
    page = _Page.load()

    async def index(request: Request) -> Response:
        del request
        return HTMLResponse(page.html, headers=page.headers)

    async def session(request: Request) -> Response:
        if request.method == "GET":
            try:
                return _json(200, _who(_signed_in(request, keys)))
            except IdentityError as exc:
                return _error(401, str(exc))
        refusal = _refusal(request, lan=lan)
        if refusal is not None:
            return _error(403, refusal)
        if request.method == "DELETE":
            signed_out = Response(status_code=204, headers={"Cache-Control": "no-store"})
            signed_out.headers.append("set-cookie", _cookie("", 0))
            return signed_out
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        try:
            token = _SignIn.model_validate_json(body).token.strip()
            if not _TOKEN_SHAPE.fullmatch(token):  # it goes into a Set-Cookie header
                raise IdentityError("malformed token: expected <claims>.<signature>")
            claims = keys.verify(token, audience=REGISTRY_AUDIENCE)
        except ValidationError as exc:
            return _error(422, _invalid(exc))
        except IdentityError as exc:
            return _error(401, f"cannot sign in: {exc}")
        why = _cannot_sign_in(claims)
        if why is not None:
            return _error(403, why)
        left = int(claims.expires_at - time.time())
        if left < 1:
            return _error(401, "cannot sign in: the token has expired")
        signed_in = _json(200, _who(claims))
        signed_in.headers.append("set-cookie", _cookie(token, left))
        return signed_in

    async def decide(request: Request) -> Response:
        refusal = _refusal(request, lan=lan)
        if refusal is not None:
            return _error(403, refusal)
        try:
            claims = _signed_in(request, keys)
        except IdentityError as exc:
            return _error(401, str(exc))
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        try:
            decision = ApprovalDecision.model_validate_json(body)
        except ValidationError as exc:
            return _error(422, _invalid(exc))
        try:
            decided = await queue.decide(str(request.path_params["approval_id"]), decision, claims, time.time())
        except DecisionRefused as refused:
            return _error(refused.status, str(refused))
        return _json(200, decided.model_dump(mode="json"))

    server.custom_route("/", methods=["GET"])(index)
    server.custom_route("/ui/session", methods=["GET", "POST", "DELETE"])(session)
    server.custom_route("/ui/approvals/{approval_id}/decision", methods=["POST"])(decide)


class _SignIn(BaseModel):
    """What the page sends to sign in: a person's mesh token, pasted once."""

    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=1024)


@final
@dataclass(frozen=True, slots=True)
class _Page:
    """The assembled page and the headers it is served with."""

    html: str
    headers: dict[str, str]

    @classmethod
    def load(cls) -> _Page:
        """Inline `registry/ui/` into one document and pin its script and style in a CSP by hash."""
        ui = resources.files("registry") / "ui"
        style, script = (ui / "app.css").read_text("utf-8"), (ui / "app.js").read_text("utf-8")
        for name, text in (("app.css", style), ("app.js", script)):
            if "</" in text:
                raise RuntimeError(f"registry/ui/{name} is inlined into the page: it must not contain '</'")
        html = (ui / "index.html").read_text("utf-8")
        html = html.replace("/*@style@*/", style).replace("/*@script@*/", script)
        policy = (
            f"default-src 'none'; script-src {_digest(script)}; style-src {_digest(style)}; img-src data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
        headers = {
            "Content-Security-Policy": policy,
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        }
        return cls(html, headers)


def _signed_in(request: Request, keys: MeshKeys) -> Claims:
    """The signed-in person's claims, from the session cookie; IdentityError (one line) if nobody is."""
    token = session_token(request.headers.get("cookie", ""))
    if token is None:
        raise IdentityError("not signed in: sign in on the page with a person's approver token")
    try:
        claims = keys.verify(token, audience=REGISTRY_AUDIENCE)
    except IdentityError as exc:
        raise IdentityError(f"not signed in: the session is not valid ({exc}); sign in again") from exc
    why = _cannot_sign_in(claims)
    if why is not None:
        raise IdentityError(f"not signed in: {why}")
    return claims


def _cannot_sign_in(claims: Claims) -> str | None:
    """Why a token cannot be a session on the page (only people who may decide sign in), or None."""
    if claims.role not in _PEOPLE_ROLES:
        return (
            f"a token of role '{claims.role}' cannot sign in; a person's approver token can "
            "(`mesh token --person NAME --role approver`)"
        )
    if not claims.person:
        return "this token names no person; mint one with `mesh token --person NAME --role approver`"
    return None


def _who(claims: Claims) -> dict[str, Any]:
    return {
        "person": claims.person,
        "groups": list(claims.groups),
        "role": claims.role,
        "expires_at": claims.expires_at,
    }


def _cookie(token: str, max_age: int) -> str:
    """The session cookie: script cannot read it, no other site's request carries it."""
    return f"{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}"


def _refusal(request: Request, *, lan: bool) -> str | None:
    """Why a write from a browser is refused, or None if it comes from this registry's own page.

    The request must be same-origin (its Origin is our own, or, without an Origin, the browser's
    Sec-Fetch-Site says same-origin). Unless the registry serves the LAN, the client must also be
    on loopback and the Host must name loopback (so a rebinding DNS name cannot pose as us).
    """
    host = request.headers.get("host", "")
    if not lan:
        client = request.client.host if request.client else ""
        if not is_loopback(client):
            return "the web page accepts writes from this machine only (loopback); start the registry with --lan"
        if not host or not is_loopback(urlsplit(f"//{host}").hostname or ""):
            return "the page must be opened through a loopback address (127.0.0.1, ::1 or localhost)"
    origin = request.headers.get("origin")
    if origin is None:
        if request.headers.get("sec-fetch-site") != "same-origin":
            return "cross-site request refused: no Origin and no Sec-Fetch-Site: same-origin"
    elif not host or origin.lower() != f"{request.url.scheme}://{host}".lower():
        return f"cross-origin request refused (Origin {origin!r})"
    return None


def _digest(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


async def _json_body(request: Request) -> bytes | Response:
    """The request's JSON body, or the error response (415, 413) that refuses it."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        return _error(415, "send the body as application/json")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_DECISION_BYTES:
        return _error(413, f"a body is at most {MAX_DECISION_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_DECISION_BYTES:
            return _error(413, f"a body is at most {MAX_DECISION_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _invalid(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())


def _json(status: int, body: Any) -> Response:
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def _error(status: int, message: str) -> Response:
    return _json(status, {"error": message})
