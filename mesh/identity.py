"""Identity: the mesh secret, the role-bearing tokens minted from it, and signed announcements.

Owns key derivation (one HMAC key per purpose, so a token signature never passes as an
announcement signature or a registry's proof), the token format and its checks (role, person,
groups, a capped lifetime), and the secret file. It does not read HTTP headers or TXT records
(the server middleware and the discovery adapter do). docs/security.md says who holds what.
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
from typing import Final, Literal, Protocol, TypeAlias, TypeGuard, final, get_args

from mesh.config import MeshPaths, mesh_name, mesh_paths
from mesh.errors import ConfigError, IdentityError

__all__ = [
    "ANY_AGENT",
    "CLOCK_SKEW",
    "MAX_TOKEN_TTL",
    "ROLES",
    "Claims",
    "Credential",
    "MeshKeys",
    "Principal",
    "Role",
    "StaticToken",
    "TokenSource",
    "load_secret",
    "parse_duration",
]

ANY_AGENT: Final = "*"
"""The audience of a token any agent of the mesh (and its registry) accepts."""

Role: TypeAlias = Literal["agent", "client", "approver", "admin"]
"""What a token may do: serve and register itself, call tools, decide its groups' approvals, or all of it."""
ROLES: Final[tuple[Role, ...]] = get_args(Role)

CLOCK_SKEW: Final = 30.0
"""Seconds of clock difference between hosts that `verify` forgives, at both ends of a token's life."""

MAX_TOKEN_TTL: Final = 30 * 86400.0
"""The longest a token may live (30 days): a leaked token stops working within that, whatever it says."""

_CACHE_SIZE: Final = 1024
_MAX_TOKEN_LENGTH: Final = 1024


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a process acts as: its caller name, its role, and for people their name and groups."""

    name: str
    role: Role
    person: str | None = None
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says: who calls whom, in which mesh, as what, and until when."""

    mesh: str
    caller: str
    audience: str
    issued_at: float
    expires_at: float
    role: Role = "agent"
    person: str | None = None
    groups: tuple[str, ...] = ()

    @property
    def principal(self) -> Principal:
        """The principal the token speaks for."""
        return Principal(self.caller, self.role, self.person, self.groups)


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

    __slots__ = ("_announce_key", "_audit_key", "_proof_key", "_token_key", "_verified", "fingerprint", "mesh")

    def __init__(self, secret: bytes, mesh: str) -> None:
        if not secret:
            raise IdentityError("the mesh secret is empty")
        self.mesh = mesh
        self._token_key = _derive(secret, b"agentplex/token/v1")
        self._announce_key = _derive(secret, b"agentplex/announce/v1")
        self._proof_key = _derive(secret, b"agentplex/service-proof/v1")
        self._audit_key = _derive(secret, b"agentplex/audit/v1")
        self.fingerprint = hashlib.sha256(_derive(secret, b"agentplex/fingerprint/v1")).hexdigest()[:8]
        self._verified: dict[str, Claims] = {}

    @classmethod
    def load(cls, mesh: str | None = None) -> MeshKeys:
        """The keys of mesh `mesh` (default: `MESH_NAME`), from its secret on this host."""
        name = mesh_name(mesh)
        return cls(load_secret(mesh_paths(name).ensure()), name)

    def __repr__(self) -> str:
        return f"MeshKeys(mesh={self.mesh!r}, fingerprint={self.fingerprint!r})"

    def mint(
        self,
        caller: str,
        audience: str = ANY_AGENT,
        ttl: float = 600.0,
        *,
        role: Role = "agent",
        person: str | None = None,
        groups: tuple[str, ...] | list[str] = (),
        now: float | None = None,
    ) -> str:
        """A token saying `caller` may call `audience` ("*": any agent) as `role` for `ttl` seconds."""
        if not ttl > 0:
            raise ConfigError(f"a token's lifetime must be positive, not {ttl}")
        if ttl > MAX_TOKEN_TTL:
            raise ConfigError(f"a token lives at most 30d, not {ttl / 86400:.0f}d: mint a new one when it expires")
        if role not in ROLES:
            raise ConfigError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
        issued = time.time() if now is None else now
        expires = round(issued + ttl, 3)
        claims: dict[str, object] = {"m": self.mesh, "c": caller, "a": audience, "i": round(issued, 3), "e": expires}
        claims["r"] = role
        if person:
            claims["p"] = person
        if groups:
            claims["g"] = sorted(set(groups))
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
        if at > claims.expires_at + CLOCK_SKEW:
            self._verified.pop(token, None)
            raise IdentityError(f"token expired {at - claims.expires_at:.0f}s ago")
        if claims.issued_at > at + CLOCK_SKEW:
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

    def prove(self, challenge: str, kind: str) -> str:
        """Proof that a `kind` service ("registry", "tracer") holds this mesh's secret, for `challenge`."""
        message = f"{self.mesh}\0{kind}\0{challenge}".encode()
        return _b64encode(hmac.digest(self._proof_key, message, "sha256"))

    def check_proof(self, challenge: str, kind: str, proof: object) -> bool:
        """True when `proof` is `prove(challenge, kind)`; never raises."""
        return isinstance(proof, str) and proof.isascii() and hmac.compare_digest(self.prove(challenge, kind), proof)

    def audit_mac(self, message: bytes) -> str:
        """The hex HMAC of `message` (an entry of the governance record) under this mesh's audit key."""
        return hmac.new(self._audit_key, self.mesh.encode() + b"\0" + message, "sha256").hexdigest()

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
        if claims.expires_at - claims.issued_at > MAX_TOKEN_TTL + 1:
            raise IdentityError("token lives longer than 30d, which no token of this mesh may")
        if claims.mesh != self.mesh:
            raise IdentityError(f"token is for mesh '{claims.mesh}', not '{self.mesh}'")
        # Compare the text, not decoded bytes: base64 decoding skips stray characters.
        expected = _b64encode(self._token_mac(payload))
        if not (signature.isascii() and hmac.compare_digest(expected, signature)):
            raise IdentityError("token signature does not match this mesh's secret")
        return claims


class Credential(Protocol):
    """Where a caller's bearer tokens come from, one per audience."""

    @property
    def principal(self) -> Principal:
        """Who the tokens speak for."""
        ...

    def token(self, audience: str) -> str:
        """A live token for `audience`."""
        ...


@final
class TokenSource:
    """Mints `principal`'s tokens, one cached per audience, anew when less than a third of the TTL remains."""

    __slots__ = ("_keys", "_tokens", "_ttl", "principal")

    def __init__(self, keys: MeshKeys, principal: Principal, *, ttl: float = 300.0) -> None:
        if not ttl > 0:
            raise ConfigError(f"a token's lifetime must be positive, not {ttl}")
        self._keys = keys
        self._ttl = ttl
        self.principal = principal
        self._tokens: dict[str, tuple[str, float]] = {}

    def token(self, audience: str, *, now: float | None = None) -> str:
        """A live token for `audience`, reused while more than a third of its TTL remains."""
        at = time.time() if now is None else now
        cached = self._tokens.get(audience)
        if cached is not None and cached[1] - at > self._ttl / 3:
            return cached[0]
        if len(self._tokens) >= _CACHE_SIZE:
            self._tokens.clear()
        p = self.principal
        token = self._keys.mint(p.name, audience, self._ttl, role=p.role, person=p.person, groups=p.groups, now=at)
        self._tokens[audience] = (token, at + self._ttl)
        return token


@final
class StaticToken:
    """A token given from outside (`MESH_TOKEN`, `mesh login`): the same one for every audience."""

    __slots__ = ("principal", "value")

    def __init__(self, value: str, claims: Claims) -> None:
        self.value = value
        self.principal = claims.principal

    def token(self, audience: str) -> str:
        """The given token, whatever the audience (it names its own)."""
        del audience
        return self.value


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
        issued, expires, role = raw.get("i"), raw.get("e"), raw.get("r")
        person, groups = raw.get("p"), raw.get("g", [])
        if (
            isinstance(mesh, str)
            and isinstance(caller, str)
            and isinstance(audience, str)
            and _is_time(issued)
            and _is_time(expires)
            and role in ROLES
            and (person is None or isinstance(person, str))
            and isinstance(groups, list)
            and all(isinstance(g, str) for g in groups)  # pyright: ignore[reportUnknownVariableType]
        ):
            return Claims(
                mesh,
                caller,
                audience,
                float(issued),
                float(expires),
                role,
                person or None,
                tuple(groups),  # pyright: ignore[reportArgumentType]
            )
    raise IdentityError("malformed token: the claims lack mesh, caller, audience, role or times")


def _is_time(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
