"""Whom the CLI and the gateway act for: a person's token, or this host's operator.

`MESH_TOKEN` (or the token saved by `mesh login`) makes the process act as the person it names,
with that token's role and groups. Without one, a process that can read the mesh secret acts
as the local operator: the OS user, role `admin`. Owns that choice and the saved login file; the
tokens themselves are `mesh.identity`'s.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path

from mesh.config import mesh_paths
from mesh.errors import IdentityError
from mesh.identity import Credential, MeshKeys, Principal, StaticToken, TokenSource

__all__ = ["acting_credential", "forget_login", "login_file", "operator", "save_login"]


def operator(name: str) -> Principal:
    """The local operator, calling as `name`: the OS user, with role admin."""
    return Principal(name, "admin", person=_os_user())


def acting_credential(keys: MeshKeys, name: str) -> Credential:
    """`MESH_TOKEN`, else the saved login, else the local operator (as `name`); a bad token is an IdentityError."""
    given = os.environ.get("MESH_TOKEN", "").strip()
    source = "MESH_TOKEN"
    if not given:
        path = login_file(keys.mesh)
        given = path.read_text(encoding="utf-8").strip() if path.exists() else ""
        source = f"the login saved in {path}"
    if not given:
        return TokenSource(keys, operator(name), ttl=120)
    try:
        claims = keys.verify(given, audience="*")
    except IdentityError as exc:
        raise IdentityError(f"{source} is not usable: {exc}") from exc
    return StaticToken(given, claims)


def login_file(mesh: str) -> Path:
    """Where `mesh login` keeps the token of mesh `mesh` (owner-only)."""
    return mesh_paths(mesh).config_dir / "login"


def save_login(keys: MeshKeys, token: str) -> Principal:
    """Check `token` against this mesh and keep it for later commands; returns whom it names."""
    claims = keys.verify(token.strip(), audience="*")
    path = login_file(keys.mesh)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(token.strip() + "\n")
    return claims.principal


def forget_login(mesh: str) -> bool:
    """Remove the saved login; True if there was one."""
    path = login_file(mesh)
    if not path.exists():
        return False
    path.unlink()
    return True


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no passwd entry (a container's bare uid)
        return f"uid-{os.getuid()}" if hasattr(os, "getuid") else "operator"
