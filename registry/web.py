"""The registry's web page at `/`, and the one write the page may make: an approval decision.

Owns the page (assembled once from the `registry/ui/` package data into one self-contained
document whose Content-Security-Policy pins its inline script and style by hash) and
`POST /ui/approvals/{id}/decision`, which records a decision without a mesh token, for loopback,
same-origin browsers only. The data it shows comes from the JSON routes other modules own.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import time
from dataclasses import dataclass
from importlib import resources
from typing import Final, final
from urllib.parse import urlsplit

from mcp.server.mcpserver import MCPServer
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from mesh.wire import ApprovalDecision
from registry.approvals import ApprovalQueue

__all__ = ["install_web"]

MAX_DECISION_BYTES: Final = 4096
"""Largest decision body the page may send (413 beyond)."""


def install_web(server: MCPServer, *, queue: ApprovalQueue) -> None:
    """Serve the page at `/` and the browser's decision route `POST /ui/approvals/{id}/decision`."""
    page = _Page.load()

    async def index(request: Request) -> Response:
        del request
        return HTMLResponse(page.html, headers=page.headers)

    async def decide(request: Request) -> Response:
        refusal = _refusal(request)
        if refusal is not None:
            return _error(403, refusal)
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return _error(415, "send the decision as application/json")
        body = await _body(request)
        if body is None:
            return _error(413, f"a decision body is at most {MAX_DECISION_BYTES} bytes")
        try:
            decision = ApprovalDecision.model_validate_json(body)
        except ValidationError as exc:
            return _error(422, "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()))
        approval_id = str(request.path_params["approval_id"])
        client = request.client.host if request.client else "unknown"
        now = time.time()
        decided = queue.decide(approval_id, decision, f"web@{client}", now)
        if decided is None:
            current = queue.get(approval_id, now)
            if current is None:
                return _error(404, f"no approval {approval_id}")
            return _error(409, f"approval {approval_id} is already {current.status}")
        return JSONResponse(decided.model_dump(mode="json"))

    server.custom_route("/", methods=["GET"])(index)
    server.custom_route("/ui/approvals/{approval_id}/decision", methods=["POST"])(decide)


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


def _refusal(request: Request) -> str | None:
    """Why a tokenless write from a browser is refused, or None if it comes from this machine's own page.

    The client must be on loopback; the Host must name loopback (so a rebinding DNS name cannot pose
    as us); and the request must be same-origin (its Origin is our own, or, without an Origin, the
    browser's Sec-Fetch-Site says same-origin).
    """
    client = request.client.host if request.client else ""
    if not _is_loopback(client):
        return "decisions from the web page are accepted from this machine only (loopback)"
    host = request.headers.get("host", "")
    if not host or not _is_loopback(urlsplit(f"//{host}").hostname or ""):
        return "the page must be opened through a loopback address (127.0.0.1, ::1 or localhost)"
    origin = request.headers.get("origin")
    if origin is None:
        if request.headers.get("sec-fetch-site") != "same-origin":
            return "cross-site request refused: no Origin and no Sec-Fetch-Site: same-origin"
    elif origin.lower() != f"{request.url.scheme}://{host}".lower():
        return f"cross-origin request refused (Origin {origin!r})"
    return None


def _digest(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


async def _body(request: Request) -> bytes | None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_DECISION_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_DECISION_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)
