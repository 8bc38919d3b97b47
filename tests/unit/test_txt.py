"""The signed announcement and its TXT record: round trip, tamper evidence, size, garbled input."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.discovery.txt import (
    Announcement,
    BadAnnouncement,
    decode_txt,
    encode_txt,
    fields_to_sign,
    instance_label,
    service_type,
    signed,
    txt_size,
    verify,
)
from mesh.errors import DiscoveryError

Signer = Callable[[Mapping[str, str]], str]
Verifier = Callable[[Mapping[str, str], str], bool]
NOW = 1_750_000_000


def hmac_keys(secret: bytes) -> tuple[Signer, Verifier]:
    """A stand-in for MeshKeys: a 22-char HMAC-SHA256 signature over canonical JSON."""

    def sign(fields: Mapping[str, str]) -> str:
        message = json.dumps(dict(fields), sort_keys=True, separators=(",", ":")).encode()
        digest = hmac.new(secret, message, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def check(fields: Mapping[str, str], signature: str) -> bool:
        return hmac.compare_digest(sign(fields), signature)

    return sign, check


SIGN, CHECK = hmac_keys(b"our mesh secret")
OTHER_SIGN, _ = hmac_keys(b"someone else's secret")

labels = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True)
announcements = st.builds(
    Announcement,
    kind=st.sampled_from(["agent", "registry", "tracer"]),
    mesh=labels,
    name=labels,
    instance=st.from_regex(r"[0-9a-z]{4,16}", fullmatch=True),
    host=st.one_of(st.ip_addresses(v=4).map(str), st.just("0.0.0.0")),
    port=st.integers(1, 65535),
    path=st.from_regex(r"/[\x21-\x7e]{0,63}", fullmatch=True),
    expires=st.integers(0, 10**12 - 1),
    auth=st.booleans(),
    fingerprint=st.one_of(st.just(""), st.from_regex(r"[0-9a-f]{8}", fullmatch=True)),
    signature=st.from_regex(r"[A-Za-z0-9_-]{0,86}", fullmatch=True),
)


def announcement(**changes: object) -> Announcement:
    """A typical signed agent announcement, with `changes` applied before signing."""
    base = Announcement(
        kind="agent",
        mesh="default",
        name="crm",
        instance="1a2b3c4d",
        host="127.0.0.1",
        port=51234,
        path="/mcp",
        expires=NOW + 120,
        auth=True,
        fingerprint="0badc0de",
    )
    return signed(replace(base, **changes), SIGN)  # pyright: ignore[reportArgumentType]


def as_zeroconf(txt: Mapping[str, str]) -> dict[bytes, bytes | None]:
    """The TXT as zeroconf's ServiceInfo.properties hands it over."""
    return {key.encode(): value.encode() for key, value in txt.items()}


def decoded(a: Announcement, address: str = "192.0.2.7") -> Announcement:
    """Send `a` through its TXT and back, as a browser resolving `address` would."""
    host = address if a.wildcard else a.host
    return decode_txt(as_zeroconf(encode_txt(a)), host=host, port=a.port, kind=a.kind)


@given(announcements)
def test_every_valid_announcement_survives_the_txt_round_trip(a: Announcement) -> None:
    assert decoded(a) == a


@given(announcements)
def test_a_wildcard_host_is_reached_through_the_announced_address(a: Announcement) -> None:
    back = decoded(a, address="192.0.2.7")
    assert back.reachable_host == ("192.0.2.7" if a.wildcard else a.host)


def test_the_signature_covers_every_field_but_itself_and_the_unsigned_addresses() -> None:
    signed_names = set(fields_to_sign(announcement())) - {"purpose"}
    all_names = {f.name for f in dataclasses.fields(Announcement)}
    assert signed_names == all_names - {"signature", "addresses"}


def _other(value: str, *choices: str) -> str:
    """The first of `choices` that differs from `value`."""
    return next(choice for choice in choices if choice != value)


TAMPERS: dict[str, Callable[[Announcement], Announcement]] = {
    "kind": lambda a: replace(a, kind="registry" if a.kind != "registry" else "agent"),
    "mesh": lambda a: replace(a, mesh=_other(a.mesh, "other", "another")),
    "name": lambda a: replace(a, name=_other(a.name, "billing", "crm")),
    "instance": lambda a: replace(a, instance=_other(a.instance, "ffffffff", "eeeeeeee")),
    "host": lambda a: replace(a, host=_other(a.host, "10.9.8.7", "10.9.8.6")),
    "port": lambda a: replace(a, port=a.port % 65535 + 1),
    "path": lambda a: replace(a, path=_other(a.path, "/evil", "/mcp")),
    "expires": lambda a: replace(a, expires=(a.expires + 3600) % 10**12),
    "auth": lambda a: replace(a, auth=not a.auth),
    "fingerprint": lambda a: replace(a, fingerprint=_other(a.fingerprint, "12345678", "87654321")),
}


def test_a_genuine_announcement_is_trusted() -> None:
    assert verify(announcement(), CHECK, mesh="default", now=NOW) is None


@pytest.mark.parametrize("field", sorted(TAMPERS))
def test_changing_any_signed_field_breaks_the_signature(field: str) -> None:
    forged = TAMPERS[field](announcement())
    reason = verify(forged, CHECK, mesh=forged.mesh, now=NOW)
    assert reason is not None
    assert reason.startswith("bad signature")


@given(announcements, st.sampled_from(sorted(TAMPERS)))
def test_no_tamper_of_any_announcement_verifies(a: Announcement, field: str) -> None:
    genuine = signed(a, SIGN)
    forged = TAMPERS[field](genuine)
    assert forged != genuine
    assert verify(forged, CHECK, mesh=forged.mesh, now=0) is not None


def test_an_announcement_signed_with_another_key_is_untrusted() -> None:
    forged = signed(announcement(fingerprint="deadbeef"), OTHER_SIGN)
    assert verify(forged, CHECK, mesh="default", now=NOW) == (
        "bad signature (another mesh key or tampered; key fingerprint deadbeef)"
    )


def test_untrusted_announcements_say_why_in_one_line() -> None:
    a = announcement()
    assert verify(a, CHECK, mesh="other", now=NOW) == "announced for mesh 'default', not 'other'"
    assert verify(replace(a, signature=""), CHECK, mesh="default", now=NOW) == "unsigned announcement"
    assert verify(a, CHECK, mesh="default", now=a.expires + 30) == "expired 30 s ago"


def test_the_unsigned_address_hint_does_not_affect_trust() -> None:
    a = replace(announcement(), addresses=("10.0.0.1",))
    assert verify(a, CHECK, mesh="default", now=NOW) is None


def test_a_63_character_agent_name_keeps_the_txt_under_200_bytes() -> None:
    a = announcement(name="a" * 63, mesh="m" * 40, expires=9_999_999_999)
    assert txt_size(encode_txt(a)) < 200


def test_the_worst_case_txt_stays_well_inside_one_packet() -> None:
    a = announcement(name="a" * 63, mesh="m" * 63, expires=9_999_999_999)
    assert txt_size(encode_txt(a)) == 213  # RFC 6763 §6.2: under 400 is still fine


@given(announcements)
def test_no_valid_announcement_needs_more_than_400_txt_bytes(a: Announcement) -> None:
    assert txt_size(encode_txt(a)) <= 400


@given(announcements)
def test_instance_labels_fit_one_dns_label(a: Announcement) -> None:
    label = instance_label(a)
    assert 0 < len(label.encode()) <= 63


@given(announcements, announcements)
def test_instance_labels_differ_when_mesh_name_or_instance_differ(a: Announcement, b: Announcement) -> None:
    if (a.mesh, a.name, a.instance) != (b.mesh, b.name, b.instance):
        assert instance_label(a) != instance_label(b)


def test_a_short_label_reads_as_name_instance_mesh() -> None:
    assert instance_label(announcement()) == "crm-1a2b3c4d-default"


def test_each_kind_has_its_own_service_type() -> None:
    assert service_type("agent") == "_mcp._tcp.local."
    assert service_type("registry") == "_mcp-registry._tcp.local."
    assert service_type("tracer") == "_mcp-tracer._tcp.local."


GOOD = as_zeroconf(encode_txt(announcement()))
GARBLED: dict[str, tuple[dict[bytes, bytes | None], str]] = {
    "no txtvers": ({k: v for k, v in GOOD.items() if k != b"txtvers"}, "txtvers is missing"),
    "future txtvers": ({**GOOD, b"txtvers": b"2"}, "txtvers is unsupported ('2')"),
    "no mesh": ({k: v for k, v in GOOD.items() if k != b"m"}, "'m' (mesh) is missing"),
    "valueless name": ({**GOOD, b"n": None}, "'n' (name) is missing or has no value"),
    "bad expiry": ({**GOOD, b"e": b"soon"}, "'e' (expiry) is not epoch seconds: 'soon'"),
    "sneaky expiry": ({**GOOD, b"e": b" 1_0\n"}, "'e' (expiry) is not epoch seconds"),
    "bad auth": ({**GOOD, b"a": b"yes"}, "'a' (auth) is not 0 or 1"),
    "not utf-8": ({**GOOD, b"n": b"\xff\xfe"}, "is not UTF-8"),
    "bad name": ({**GOOD, b"n": b"Bad_Name"}, "invalid name 'Bad_Name'"),
    "bad fingerprint": ({**GOOD, b"f": b"xyz"}, "invalid key fingerprint"),
    "h not wildcard": ({**GOOD, b"h": b"10.0.0.1"}, "'h' carries only a wildcard host"),
    "multi-line path": ({**GOOD, b"p": b"/mcp\nx"}, "invalid path '/mcp\\nx'"),
}


@pytest.mark.parametrize("case", sorted(GARBLED))
def test_a_garbled_txt_is_rejected_with_a_one_line_reason(case: str) -> None:
    props, expected = GARBLED[case]
    with pytest.raises(BadAnnouncement) as caught:
        decode_txt(props, host="127.0.0.1", port=5000, kind="agent")
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message
    assert isinstance(caught.value, DiscoveryError)
    assert isinstance(caught.value, ValueError)


@given(st.dictionaries(st.binary(max_size=12), st.one_of(st.none(), st.binary(max_size=80)), max_size=12))
def test_arbitrary_txt_bytes_decode_or_fail_with_one_line(props: dict[bytes, bytes | None]) -> None:
    try:
        decode_txt({**GOOD, **props}, host="127.0.0.1", port=5000, kind="agent")
    except BadAnnouncement as error:
        message = str(error)
    else:
        message = ""
    assert "\n" not in message


def test_txt_keys_are_case_insensitive() -> None:
    props = {key.upper(): value for key, value in GOOD.items()}
    assert decode_txt(props, host="127.0.0.1", port=51234, kind="agent") == announcement()


INVALID: dict[str, dict[str, object]] = {
    "kind": {"kind": "gateway"},
    "mesh": {"mesh": "Default"},
    "name": {"name": "-crm"},
    "instance": {"instance": "x"},
    "host": {"host": "localhost"},
    "port": {"port": 0},
    "path": {"path": "mcp"},
    "expires": {"expires": -1},
    "fingerprint": {"fingerprint": "0BADC0DE"},
    "signature": {"signature": "not base64!"},
}


@pytest.mark.parametrize("field", sorted(INVALID))
def test_an_announcement_cannot_hold_an_invalid_field(field: str) -> None:
    base = announcement()
    with pytest.raises(BadAnnouncement, match=r"^invalid "):
        replace(base, **INVALID[field])  # pyright: ignore[reportArgumentType]


def test_a_long_label_is_shortened_with_a_hash_of_the_whole() -> None:
    label = instance_label(announcement(name="n" * 63))
    assert len(label) == 63
    assert label.startswith("n" * 52 + "-")
