"""Identity: the mesh secret, the short-lived call tokens minted from it, and signed announcements.

Owns key derivation (one HMAC key per purpose, so a token signature never passes as an
announcement signature), the token format and its checks, and the secret file. It does not
read HTTP headers or TXT records (the server middleware and the discovery adapter do).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, final

from mesh.config import MeshPaths, mesh_name, mesh_paths
from mesh.errors import ConfigError, IdentityError

__all__ = ["ANY_AGENT", "Claims", "MeshKeys", "TokenSource", "load_secret", "parse_duration"]

ANY_AGENT: Final = "*"
"""The audience of a token any agent of the mesh (and its registry) accepts."""

_CLOCK_SKEW: Final = 30.0  # seconds of clock difference between hosts that verify() forgives

_CACHE_SIZE: Final = 1024
_MAX_TOKEN_LENGTH: Final = 1024


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says: who calls whom, in which mesh, and until when."""

    mesh: str
    caller: str
    audience: str
    issued_at: float
    expires_at: float


def load_secret(paths: MeshPaths) -> bytes:
    """The mesh secret: `MESH_SECRET` if non-empty, else the secret file, created (0600) on first use."""
    from_env = os.environ.get("MESH_SECRET")
    if from_env:
        return from_env.encode()
    path = paths.secret
    try:
        if not path.exists():
            _create_secret_file(path)
        fd = os.open(path, os.O_RDONLY)
        with os.fdopen(fd, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            if os.name != "nt" and mode & 0o077:
                raise IdentityError(
                    f"mesh secret {path} is open to other users (mode {mode & 0o777:o}): chmod 600 {path}"
                )
            secret = file.read().strip()
    except OSError as exc:
        raise IdentityError(f"cannot read the mesh secret {path}: {exc.strerror or exc}") from exc
    if not secret:
        raise IdentityError(f"mesh secret {path} is empty; delete it to make a new one")
    return secret


@final
class MeshKeys:
    """The keys one mesh derives from its secret: mint and verify tokens, sign announcements."""

    __slots__ = ("_announce_key", "_token_key", "_verified", "fingerprint", "mesh")

    def __init__(self, secret: bytes, mesh: str) -> None:
        if not secret:
            raise IdentityError("the mesh secret is empty")
        self.mesh = mesh
        self._token_key = _derive(secret, b"agentplex/token/v1")
        self._announce_key = _derive(secret, b"agentplex/announce/v1")
        self.fingerprint = hashlib.sha256(_derive(secret, b"agentplex/fingerprint/v1")).hexdigest()[:8]
        self._verified: dict[str, Claims] = {}

    @classmethod
    def load(cls, mesh: str | None = None) -> MeshKeys:
        """The keys of mesh `mesh` (default: `MESH_NAME`), from its secret on this host."""
        name = mesh_name(mesh)
        return cls(load_secret(mesh_paths(name).ensure()), name)

    def __repr__(self) -> str:
        return f"MeshKeys(mesh={self.mesh!r}, fingerprint={self.fingerprint!r})"

    def mint(self, caller: str, audience: str = ANY_AGENT, ttl: float = 600.0, *, now: float | None = None) -> str:
        """A token saying `caller` may call `audience` ("*": any agent) for `ttl` seconds."""
        if not ttl > 0:
            raise ConfigError(f"a token's lifetime must be positive, not {ttl}")
        issued = time.time() if now is None else now
        expires = round(issued + ttl, 3)
        claims = {"m": self.mesh, "c": caller, "a": audience, "i": round(issued, 3), "e": expires}
        payload = _b64encode(json.dumps(claims, separators=(",", ":")).encode())
        return f"{payload}.{_b64encode(self._token_mac(payload))}"

    def verify(self, token: str, *, audience: str, now: float | None = None) -> Claims:
        """The claims of a live token of this mesh for `audience` or "*" (any agent, and the registry too).

        Anything else raises IdentityError with a one-line reason.
        """
        claims = self._verified.get(token)
        if claims is None:
            claims = self._check_signed(token)
            if len(self._verified) >= _CACHE_SIZE:
                self._verified.pop(next(iter(self._verified)), None)
            self._verified[token] = claims
        at = time.time() if now is None else now
        if at > claims.expires_at + _CLOCK_SKEW:
            self._verified.pop(token, None)
            raise IdentityError(f"token expired {at - claims.expires_at:.0f}s ago")
        if claims.issued_at > at + _CLOCK_SKEW:
            raise IdentityError(f"token is issued {claims.issued_at - at:.0f}s in the future; check clocks")
        if claims.audience not in (audience, ANY_AGENT):
            raise IdentityError(f"token is for {_whom(claims.audience)}, not '{audience}'")
        return claims

    def sign(self, fields: Mapping[str, str]) -> str:
        """A 22-character signature of `fields` (an announcement), small enough for an mDNS TXT record."""
        for key, value in fields.items():
            if "=" in key or "\n" in key or "\n" in value:
                raise ValueError(f"cannot sign field {key!r}: keys hold no '=' or newline, values no newline")
        return _b64encode(self._announce_mac(fields))

    def verify_signature(self, fields: Mapping[str, str], signature: str) -> bool:
        """True when `signature` is this mesh's signature of exactly `fields`; never raises."""
        try:
            return hmac.compare_digest(self.sign(fields), signature)
        except (TypeError, ValueError, AttributeError):
            return False

    def _token_mac(self, payload: str) -> bytes:
        return hmac.digest(self._token_key, payload.encode("ascii"), "sha256")

    def _announce_mac(self, fields: Mapping[str, str]) -> bytes:
        # The mesh name leads (a DNS label, so no NUL): the same secret shared by two meshes
        # still gives different signatures.
        canonical = "\n".join(f"{key}={fields[key]}" for key in sorted(fields))
        message = f"{self.mesh}\0{canonical}".encode()
        return hmac.digest(self._announce_key, message, "sha256")[:16]

    def _check_signed(self, token: str) -> Claims:
        """The claims of a well-formed token of this mesh with a good signature; expiry not checked."""
        payload, dot, signature = token.partition(".")
        if not dot or len(token) > _MAX_TOKEN_LENGTH:
            raise IdentityError("malformed token: expected <claims>.<signature>")
        try:
            raw = json.loads(_b64decode(payload))
        except (ValueError, RecursionError) as exc:  # binascii.Error and JSONDecodeError are ValueErrors
            raise IdentityError("malformed token: its claims are not base64url JSON") from exc
        claims = _claims_of(raw)
        if claims.mesh != self.mesh:
            raise IdentityError(f"token is for mesh '{claims.mesh}', not '{self.mesh}'")
        # Compare the text, not decoded bytes: base64 decoding skips stray characters.
        expected = _b64encode(self._token_mac(payload))
        if not (signature.isascii() and hmac.compare_digest(expected, signature)):
            raise IdentityError("token signature does not match this mesh's secret")
        return claims


@final
class TokenSource:
    """Caches one token per (caller, audience); mints a new one when less than a third of its TTL remains."""

    __slots__ = ("_keys", "_tokens", "_ttl")

    def __init__(self, keys: MeshKeys, *, ttl: float = 300.0) -> None:
        if not ttl > 0:
            raise ConfigError(f"a token's lifetime must be positive, not {ttl}")
        self._keys = keys
        self._ttl = ttl
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}

    def token(self, caller: str, audience: str, *, now: float | None = None) -> str:
        """A live token for `caller` to call `audience`, reused while more than a third of its TTL remains."""
        at = time.time() if now is None else now
        cached = self._tokens.get((caller, audience))
        if cached is not None and cached[1] - at > self._ttl / 3:
            return cached[0]
        if len(self._tokens) >= _CACHE_SIZE:
            self._tokens.clear()
        token = self._keys.mint(caller, audience, self._ttl, now=at)
        self._tokens[caller, audience] = (token, at + self._ttl)
        return token


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in `text`: "250ms", "30s", "10m", "2h", "1d", or a plain number of seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ConfigError(f"invalid duration {text!r}: use a number and a unit ms, s, m, h or d, as in 10m")
    number, unit = match.groups()
    return float(number) * _UNIT_SECONDS[unit or "s"]


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return hmac.digest(secret, purpose, "sha256")


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _claims_of(raw: object) -> Claims:
    if isinstance(raw, dict):
        mesh, caller, audience = raw.get("m"), raw.get("c"), raw.get("a")
        issued, expires = raw.get("i"), raw.get("e")
        if (
            isinstance(mesh, str)
            and isinstance(caller, str)
            and isinstance(audience, str)
            and isinstance(issued, int | float)
            and isinstance(expires, int | float)
            and not isinstance(issued, bool)
            and not isinstance(expires, bool)
        ):
            return Claims(mesh, caller, audience, float(issued), float(expires))
    raise IdentityError("malformed token: the claims lack mesh, caller, audience or times")


def _whom(audience: str) -> str:
    if audience == "registry":
        return "the registry"
    return f"agent '{audience}'"


def _create_secret_file(path: Path) -> None:
    """Write a fresh secret beside `path`, then link it into place: whoever links first wins, whole."""
    text = secrets.token_hex(32) + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    _write_new(tmp, text)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process won the race; the caller reads theirs
    except OSError:  # pragma: no cover - no hard links here: plain O_EXCL (a racer may read it empty)
        with contextlib.suppress(FileExistsError):
            _write_new(path, text)
    finally:
        tmp.unlink()


def _write_new(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
