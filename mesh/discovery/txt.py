"""The signed announcement and its DNS-SD TXT record (RFC 6763 §6): pure, no networking.

Owns the `Announcement` value, its TXT encoding, its DNS-SD instance label and the trust check
(`verify`). Does not own keys (signing is injected as callables) nor sockets (`mdns` moves bytes).

Rules:
- The signature covers every field a forger could change, host and port included, although
  those travel in the SRV/A records rather than the TXT.
- A host bound to a wildcard (0.0.0.0) is signed as such and sent as `h=0.0.0.0`; it binds no
  address, so a LAN peer that announces a wildcard relies on per-call tokens alone.
- Every TXT key is always present (but `h`). With a short mesh name and the default path, a
  63-character agent name stays under RFC 6763's 200 bytes; the worst case (63-character mesh
  *and* agent names) is 213, inside the 400 that §6.2 still calls fine.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final, Literal

from mesh.errors import DiscoveryError
from mesh.naming import is_name

__all__ = [
    "Kind",
    "Announcement",
    "BadAnnouncement",
    "TXT_VERSION",
    "service_type",
    "instance_label",
    "fields_to_sign",
    "signed",
    "verify",
    "encode_txt",
    "decode_txt",
    "txt_size",
]

Kind = Literal["agent", "registry", "tracer"]
"""What an announcement offers: an agent's MCP endpoint, a registry, or a sidecar tracer."""

TXT_VERSION: Final = "1"
"""The `txtvers` this module writes and the only one it reads (RFC 6763 §6.7)."""

_SERVICE_TYPES: Final[Mapping[str, str]] = {
    "agent": "_mcp._tcp.local.",
    "registry": "_mcp-registry._tcp.local.",
    "tracer": "_mcp-tracer._tcp.local.",
}
_INSTANCE = re.compile(r"[0-9a-z]{4,16}")
_PATH = re.compile(r"/[\x21-\x7e]{0,63}")
_FINGERPRINT = re.compile(r"(?:[0-9a-f]{8})?")
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{0,86}")
_EPOCH = re.compile(r"[0-9]{1,12}")
_LABEL_MAX: Final = 63  # one DNS label (RFC 1035 §2.3.4)


class BadAnnouncement(DiscoveryError, ValueError):
    """An announcement or TXT record is missing a field or carries a garbled one."""


@dataclass(frozen=True, slots=True)
class Announcement:
    """One signed claim: `kind` `name` of `mesh` serves at host:port+path until `expires`."""

    kind: Kind
    mesh: str
    name: str
    instance: str
    """Random per announcement (4-16 of [0-9a-z]); a process announcing two kinds uses two."""
    host: str
    port: int
    path: str
    expires: int
    """Epoch seconds after which the signature no longer vouches for anything."""
    auth: bool
    """False when the agent runs with --no-auth (loopback only)."""
    fingerprint: str = ""
    """8 hex of the mesh key that signed it; empty when unsigned."""
    signature: str = ""
    """Signature over `fields_to_sign(self)`; empty when unsigned."""
    addresses: tuple[str, ...] = field(default=(), compare=False)
    """Unsigned hint: the A records a browser saw; where to connect when `host` is a wildcard."""

    def __post_init__(self) -> None:
        if self.kind not in _SERVICE_TYPES:
            raise BadAnnouncement(f"invalid kind {_show(self.kind)}: expected agent, registry or tracer")
        if not is_name(self.mesh):
            raise BadAnnouncement(f"invalid mesh name {_show(self.mesh)}: not a DNS label")
        if not is_name(self.name):
            raise BadAnnouncement(f"invalid name {_show(self.name)}: not a DNS label")
        if not _INSTANCE.fullmatch(self.instance):
            raise BadAnnouncement(f"invalid instance {_show(self.instance)}: expected 4-16 of [0-9a-z]")
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            raise BadAnnouncement(f"invalid host {_show(self.host)}: not an IP address") from None
        if not 0 < self.port < 65536:
            raise BadAnnouncement(f"invalid port {self.port}: expected 1-65535")
        if not _PATH.fullmatch(self.path):
            raise BadAnnouncement(f"invalid path {_show(self.path)}: expected '/' and up to 63 visible chars")
        if not 0 <= self.expires < 10**12:
            raise BadAnnouncement(f"invalid expiry {self.expires}: expected epoch seconds")
        if not _FINGERPRINT.fullmatch(self.fingerprint):
            raise BadAnnouncement(f"invalid key fingerprint {_show(self.fingerprint)}: expected 8 hex")
        if not _SIGNATURE.fullmatch(self.signature):
            raise BadAnnouncement(f"invalid signature {_show(self.signature)}: expected base64url")

    @property
    def wildcard(self) -> bool:
        """True when the service is bound to every address (0.0.0.0 or ::)."""
        return ipaddress.ip_address(self.host).is_unspecified

    @property
    def reachable_host(self) -> str:
        """The address to connect to: `host`, or the first announced address for a wildcard."""
        if self.wildcard and self.addresses:
            return self.addresses[0]
        return self.host


def service_type(kind: Kind) -> str:
    """The DNS-SD service type that announcements of `kind` use."""
    return _SERVICE_TYPES[kind]


def instance_label(a: Announcement) -> str:
    """The DNS-SD instance name `name-instance-mesh`, shortened with a hash to fit one label."""
    full = f"{a.name}-{a.instance}-{a.mesh}"
    if len(full) <= _LABEL_MAX:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:10]
    return f"{full[: _LABEL_MAX - len(digest) - 1]}-{digest}"


def fields_to_sign(a: Announcement) -> dict[str, str]:
    """Every field a forger could change, as strings, plus a purpose tag against cross-use."""
    return {
        "purpose": f"mesh-announcement/{TXT_VERSION}",
        "kind": a.kind,
        "mesh": a.mesh,
        "name": a.name,
        "instance": a.instance,
        "host": a.host,
        "port": str(a.port),
        "path": a.path,
        "expires": str(a.expires),
        "auth": "1" if a.auth else "0",
        "fingerprint": a.fingerprint,
    }


def signed(a: Announcement, sign: Callable[[Mapping[str, str]], str]) -> Announcement:
    """`a` with its signature set by `sign` (e.g. `MeshKeys.sign`); set the fingerprint first."""
    return replace(a, signature=sign(fields_to_sign(a)))


def verify(
    a: Announcement,
    verify_signature: Callable[[Mapping[str, str], str], bool],
    *,
    mesh: str,
    now: float,
) -> str | None:
    """None when `a` is trusted in `mesh` at `now`, else a one-line reason why not."""
    if a.mesh != mesh:
        return f"announced for mesh {a.mesh!r}, not {mesh!r}"
    if not a.signature:
        return "unsigned announcement"
    if not verify_signature(fields_to_sign(a), a.signature):
        key = a.fingerprint or "none"
        return f"bad signature (another mesh key or tampered; key fingerprint {key})"
    if a.expires < now:
        return f"expired {int(now - a.expires)} s ago"
    return None


def encode_txt(a: Announcement) -> dict[str, str]:
    """The TXT record of `a` (host and port travel in SRV/A, except a wildcard host as `h`)."""
    txt = {
        "txtvers": TXT_VERSION,
        "m": a.mesh,
        "n": a.name,
        "i": a.instance,
        "p": a.path,
        "e": str(a.expires),
        "a": "1" if a.auth else "0",
        "f": a.fingerprint,
        "s": a.signature,
    }
    if a.wildcard:
        txt["h"] = a.host
    return txt


def decode_txt(
    props: Mapping[bytes, bytes | None] | Mapping[str, str | None] | Mapping[bytes | str, bytes | str | None],
    *,
    host: str,
    port: int,
    kind: Kind,
) -> Announcement:
    """Rebuild an announcement from its TXT and SRV/A data; raise BadAnnouncement if garbled."""
    txt = _strings(props)
    version = txt.get("txtvers")
    if version != TXT_VERSION:
        what = "missing" if version is None else f"unsupported ({_show(version)})"
        raise BadAnnouncement(f"TXT txtvers is {what}: expected {TXT_VERSION}")

    def need(key: str, meaning: str) -> str:
        value = txt.get(key)
        if value is None:
            raise BadAnnouncement(f"TXT key {key!r} ({meaning}) is missing or has no value")
        return value

    expires = need("e", "expiry")
    if not _EPOCH.fullmatch(expires):
        raise BadAnnouncement(f"TXT key 'e' (expiry) is not epoch seconds: {_show(expires)}")
    auth = need("a", "auth")
    if auth not in ("0", "1"):
        raise BadAnnouncement(f"TXT key 'a' (auth) is not 0 or 1: {_show(auth)}")
    signed_host = host
    if "h" in txt:
        signed_host = need("h", "wildcard host")
        if signed_host not in ("0.0.0.0", "::"):
            raise BadAnnouncement(f"TXT key 'h' carries only a wildcard host, not {_show(signed_host)}")
    return Announcement(
        kind=kind,
        mesh=need("m", "mesh"),
        name=need("n", "name"),
        instance=need("i", "instance"),
        host=signed_host,
        port=port,
        path=need("p", "path"),
        expires=int(expires),
        auth=auth == "1",
        fingerprint=need("f", "key fingerprint"),
        signature=need("s", "signature"),
        addresses=(host,),
    )


def txt_size(txt: Mapping[str, str]) -> int:
    """Bytes the TXT record takes on the wire: one length byte plus `key=value` per string."""
    return sum(1 + len(f"{key}={value}".encode()) for key, value in txt.items())


def _strings(
    props: Mapping[bytes, bytes | None] | Mapping[str, str | None] | Mapping[bytes | str, bytes | str | None],
) -> dict[str, str | None]:
    """TXT keys lowercased (RFC 6763 §6.4) and values as text; garbled UTF-8 raises."""
    out: dict[str, str | None] = {}
    for raw_key, raw_value in props.items():
        try:
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            value = raw_value.decode() if isinstance(raw_value, bytes) else raw_value
        except UnicodeDecodeError:
            raise BadAnnouncement(f"TXT entry {_show(raw_key)} is not UTF-8") from None
        out.setdefault(key.lower(), value)
    return out


def _show(value: object, limit: int = 40) -> str:
    """A short one-line repr of untrusted input for error messages."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."
