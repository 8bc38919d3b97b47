"""Proving a registry or tracer: it answers a fresh challenge with a MAC only the mesh secret makes.

Owns the client side of the `/healthz?challenge=` exchange and the challenge format. The MAC is
`MeshKeys.prove` / `check_proof`; the service side is the registry's `/healthz`. Which URL to
prove, and when, is the node's business.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any, Final

import anyio
import httpx2

from mesh.identity import MeshKeys

__all__ = ["SERVICE_KINDS", "bound", "is_challenge", "new_challenge", "prove_service"]

SERVICE_KINDS: Final = ("registry", "tracer")
"""The kinds of service that prove themselves."""

_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{16,128}")
_MAX_BODY: Final = 64 * 1024


def new_challenge() -> str:
    """A fresh random challenge: 43 URL-safe characters (256 bits)."""
    return secrets.token_urlsafe(32)


def bound(challenge: str, port: int) -> str:
    """What is proved: the challenge and the port the answering socket listens on.

    Binding the port means an impostor cannot relay our challenge to the real service from
    another port of this host and pass its answer off as its own.
    """
    return f"{challenge}@{port}"


def is_challenge(text: str) -> bool:
    """True when `text` is a well-formed challenge: 16 to 128 characters of A-Z a-z 0-9 _ -."""
    return _CHALLENGE.fullmatch(text) is not None


async def prove_service(
    http: httpx2.AsyncClient, base_url: str, keys: MeshKeys, *, kind: str | None = None, timeout: float = 1.0
) -> str | None:
    """The kind of service ("registry", "tracer") at `base_url` that proved it holds `keys`' secret, or None.

    With `kind`, only that kind counts. Never raises: down, slow, foreign or garbage is None.
    """
    challenge = new_challenge()
    try:
        url = httpx2.URL(base_url)
        port = url.port or (443 if url.scheme == "https" else 80)
    except (httpx2.InvalidURL, ValueError):
        return None
    health: Any = None
    with anyio.move_on_after(timeout):
        try:
            health = await _health(http, f"{base_url.rstrip('/')}/healthz", challenge, timeout)
        except (httpx2.HTTPError, httpx2.InvalidURL, httpx2.StreamError, ValueError, RecursionError):
            return None  # UnicodeError and JSONDecodeError are ValueErrors
    if not isinstance(health, dict):
        return None
    name: object = health.get("name")  # pyright: ignore[reportUnknownMemberType]
    if (
        health.get("mesh") == keys.mesh  # pyright: ignore[reportUnknownMemberType]
        and name in SERVICE_KINDS
        and (kind is None or name == kind)
        and keys.check_proof(bound(challenge, port), str(name), health.get("proof"))  # pyright: ignore[reportUnknownMemberType]
    ):
        return str(name)
    return None


async def _health(http: httpx2.AsyncClient, url: str, challenge: str, timeout: float) -> Any:
    """The JSON `/healthz` answers to `challenge`, or None when it is not a 200 of a bounded size."""
    # No redirects: a service that sends us elsewhere has proved nothing about itself.
    request = http.build_request("GET", url, params={"challenge": challenge}, timeout=timeout)
    request.headers.pop("authorization", None)  # nothing that carries a token goes to an unproven service
    response = await http.send(request, stream=True, auth=None, follow_redirects=False)
    try:
        if response.status_code != 200:
            return None
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > _MAX_BODY:
                return None
    finally:
        await response.aclose()
    return json.loads(body)
