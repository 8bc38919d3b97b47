"""The mesh secret, call tokens and signed announcements."""

from __future__ import annotations

import base64
import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh import identity
from mesh.config import mesh_paths
from mesh.errors import ConfigError, IdentityError
from mesh.identity import (
    MAX_TOKEN_TTL,
    Claims,
    MeshKeys,
    Principal,
    StaticToken,
    TokenSource,
    load_secret,
    parse_duration,
)

NOW = 1_700_000_000.0
SECRET = b"correct horse battery staple"
CRM = Principal("crm", "agent")


def keys(mesh: str = "acme", secret: bytes = SECRET) -> MeshKeys:
    return MeshKeys(secret, mesh)


# --- the secret ---


def test_the_secret_is_created_owner_only_on_first_use_and_reused(mesh_env: dict[str, str]) -> None:
    paths = mesh_paths().ensure()
    first = load_secret(paths)
    assert len(first) == 64  # 32 random bytes as hex
    assert stat.S_IMODE(paths.secret.stat().st_mode) == 0o600
    assert load_secret(paths) == first
    assert not [p for p in paths.config_dir.iterdir() if p != paths.secret]  # no temp file left behind


def test_mesh_secret_from_the_environment_wins(mesh_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_SECRET", "from-env")
    paths = mesh_paths().ensure()
    assert load_secret(paths) == b"from-env"
    assert not paths.secret.exists()


def test_a_secret_file_readable_by_others_is_refused(mesh_env: dict[str, str]) -> None:
    paths = mesh_paths().ensure()
    load_secret(paths)
    paths.secret.chmod(0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_secret(paths)


def test_a_secret_file_copied_into_mesh_secret_joins_the_same_mesh(
    mesh_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from_file = MeshKeys.load()
    monkeypatch.setenv("MESH_SECRET", mesh_paths().secret.read_text().strip())  # as `$(cat secret)` does
    assert MeshKeys.load().fingerprint == from_file.fingerprint


def test_an_empty_secret_file_is_refused(mesh_env: dict[str, str]) -> None:
    paths = mesh_paths().ensure()
    fd = os.open(paths.secret, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    with pytest.raises(IdentityError, match="empty"):
        load_secret(paths)


def test_a_secret_file_that_cannot_be_read_is_an_identity_error(mesh_env: dict[str, str]) -> None:
    paths = mesh_paths().ensure()
    paths.secret.mkdir(mode=0o700)
    with pytest.raises(IdentityError, match="cannot read the mesh secret"):
        load_secret(paths)


def test_a_process_that_loses_the_race_to_create_the_secret_keeps_the_winners(
    mesh_env: dict[str, str],
) -> None:
    paths = mesh_paths().ensure()
    winner = load_secret(paths)
    identity._create_secret_file(paths.secret)  # pyright: ignore[reportPrivateUsage] - the losing side of a race
    assert load_secret(paths) == winner
    assert sorted(p.name for p in paths.config_dir.iterdir()) == ["secret"]


def test_threads_loading_a_new_secret_at_once_all_get_the_same_one(mesh_env: dict[str, str]) -> None:
    paths = mesh_paths().ensure()
    with ThreadPoolExecutor(max_workers=8) as pool:
        secrets = set(pool.map(load_secret, [paths] * 32))
    assert len(secrets) == 1


def test_an_empty_secret_makes_no_keys() -> None:
    with pytest.raises(IdentityError, match="empty"):
        MeshKeys(b"", "acme")


def test_keys_show_their_mesh_and_fingerprint_but_not_the_secret() -> None:
    assert repr(keys()) == f"MeshKeys(mesh='acme', fingerprint='{keys().fingerprint}')"


def test_keys_loaded_twice_for_a_mesh_agree(mesh_env: dict[str, str]) -> None:
    first, second = MeshKeys.load(), MeshKeys.load()
    assert first.mesh == mesh_env["MESH_NAME"]
    assert first.fingerprint == second.fingerprint
    assert second.verify(first.mint("crm"), audience="kb").caller == "crm"


def test_the_fingerprint_is_short_hex_and_differs_by_secret() -> None:
    assert len(keys().fingerprint) == 8
    int(keys().fingerprint, 16)
    assert keys().fingerprint != keys(secret=b"another secret").fingerprint


# --- tokens ---


def test_a_minted_token_verifies_with_its_claims() -> None:
    token = keys().mint("crm", "kb", ttl=60, now=NOW)
    assert "=" not in token
    assert keys().verify(token, audience="kb", now=NOW + 1) == Claims("acme", "crm", "kb", NOW, NOW + 60)


def test_an_expired_token_is_rejected_after_the_clock_skew_leeway() -> None:
    mesh = keys()
    token = mesh.mint("crm", "kb", ttl=60, now=NOW)
    mesh.verify(token, audience="kb", now=NOW + 80)  # 20 s late: within the leeway
    with pytest.raises(IdentityError, match="token expired 40s ago"):
        mesh.verify(token, audience="kb", now=NOW + 100)


def test_a_token_issued_far_in_the_future_is_rejected() -> None:
    token = keys().mint("crm", "kb", now=NOW + 3600)
    with pytest.raises(IdentityError, match="future"):
        keys().verify(token, audience="kb", now=NOW)


def test_a_token_for_another_agent_is_rejected() -> None:
    token = keys().mint("crm", "crm-db", now=NOW)
    with pytest.raises(IdentityError, match="token is for agent 'crm-db', not 'kb'"):
        keys().verify(token, audience="kb", now=NOW)


def test_a_token_for_the_registry_is_not_accepted_by_an_agent() -> None:
    token = keys().mint("crm", "registry", now=NOW)
    with pytest.raises(IdentityError, match="token is for the registry"):
        keys().verify(token, audience="kb", now=NOW)


@pytest.mark.parametrize("audience", ["kb", "crm", "registry"])
def test_a_token_for_any_agent_is_accepted_by_every_agent_and_the_registry(audience: str) -> None:
    token = keys().mint("inspector", now=NOW)
    assert keys().verify(token, audience=audience, now=NOW).audience == "*"


def test_a_token_for_another_mesh_is_rejected_even_with_the_same_secret() -> None:
    token = keys(mesh="other").mint("crm", now=NOW)
    with pytest.raises(IdentityError, match="token is for mesh 'other', not 'acme'"):
        keys().verify(token, audience="kb", now=NOW)


def test_a_token_signed_with_another_secret_is_rejected() -> None:
    token = keys(secret=b"someone else").mint("crm", now=NOW)
    with pytest.raises(IdentityError, match="signature does not match"):
        keys().verify(token, audience="kb", now=NOW)


def test_a_token_with_edited_claims_is_rejected() -> None:
    token = keys().mint("crm", "kb", now=NOW)
    payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["c"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(IdentityError, match="signature does not match"):
        keys().verify(f"{forged}.{signature}", audience="kb", now=NOW)


def test_a_token_with_junk_in_its_signature_is_rejected() -> None:
    token = keys().mint("crm", "kb", now=NOW)
    with pytest.raises(IdentityError, match="signature does not match"):
        keys().verify(token[:-3] + "!" + token[-3:], audience="kb", now=NOW)
    with pytest.raises(IdentityError, match="signature does not match"):
        keys().verify(token + "é", audience="kb", now=NOW)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "no-dot",
        "a.b",
        "!!!.???",
        "e30.abc",
        "W10.abc",
        "bnVsbA.x",
        "x" * 5000,
        base64.urlsafe_b64encode(b"[" * 700).decode() + ".x",
    ],
)
def test_a_garbage_token_is_rejected_as_malformed(garbage: str) -> None:
    with pytest.raises(IdentityError, match="malformed token"):
        keys().verify(garbage, audience="kb", now=NOW)


def test_a_cached_token_is_still_checked_for_expiry_and_audience() -> None:
    mesh = keys()
    token = mesh.mint("crm", "kb", ttl=60, now=NOW)
    assert mesh.verify(token, audience="kb", now=NOW) is mesh.verify(token, audience="kb", now=NOW)
    with pytest.raises(IdentityError, match="not 'crm'"):
        mesh.verify(token, audience="crm", now=NOW)
    with pytest.raises(IdentityError, match="expired"):
        mesh.verify(token, audience="kb", now=NOW + 3600)


def test_verification_stays_correct_past_the_cache_size() -> None:
    mesh = keys()
    tokens = [mesh.mint(f"caller-{i}", "kb", now=NOW) for i in range(1100)]
    assert [mesh.verify(t, audience="kb", now=NOW).caller for t in tokens] == [f"caller-{i}" for i in range(1100)]
    assert mesh.verify(tokens[0], audience="kb", now=NOW).caller == "caller-0"


def test_a_token_needs_a_positive_lifetime() -> None:
    with pytest.raises(ConfigError, match="positive"):
        keys().mint("crm", ttl=0)
    with pytest.raises(ConfigError, match="positive"):
        TokenSource(keys(), CRM, ttl=-1)


def test_a_token_source_stays_correct_past_its_cache_size() -> None:
    source = TokenSource(keys(), CRM)
    tokens = [source.token(f"agent-{i}", now=NOW) for i in range(1100)]
    assert keys().verify(tokens[-1], audience="agent-1099", now=NOW).caller == "crm"
    assert keys().verify(source.token("agent-0", now=NOW), audience="agent-0", now=NOW).caller == "crm"


def test_a_token_source_reuses_its_token_then_mints_anew_near_expiry() -> None:
    source = TokenSource(keys(), CRM, ttl=300)
    first = source.token("kb", now=NOW)
    assert source.token("kb", now=NOW + 150) == first  # 150 s of 300 left
    assert source.token("billing", now=NOW + 150) != first
    fresh = source.token("kb", now=NOW + 201)  # 99 s left: under a third
    assert fresh != first
    assert keys().verify(fresh, audience="kb", now=NOW + 201).expires_at == NOW + 501


# --- signed announcements ---

field_keys = st.text(min_size=1, max_size=12).filter(lambda k: "=" not in k and "\n" not in k)
field_values = st.text(max_size=40).filter(lambda v: "\n" not in v)
announcements = st.dictionaries(field_keys, field_values, min_size=1, max_size=8)


def test_a_signature_fits_a_txt_record_and_verifies() -> None:
    fields = {"mesh": "acme", "agent": "crm", "instance": "a1b2", "path": "/mcp"}
    signature = keys().sign(fields)
    assert len(signature) == 22
    assert keys().verify_signature(dict(reversed(fields.items())), signature)


@given(fields=announcements, data=st.data())
def test_changing_any_one_field_breaks_the_signature(fields: dict[str, str], data: st.DataObject) -> None:
    signature = keys().sign(fields)
    key = data.draw(st.sampled_from(sorted(fields)))
    changed = data.draw(field_values.filter(lambda v: v != fields[key]))
    assert keys().verify_signature(fields, signature)
    assert not keys().verify_signature({**fields, key: changed}, signature)


@given(fields=announcements)
def test_adding_or_removing_a_field_breaks_the_signature(fields: dict[str, str]) -> None:
    signature = keys().sign(fields)
    assert not keys().verify_signature({**fields, "extra\0": ""}, signature)
    assert not keys().verify_signature(dict(list(fields.items())[1:]), signature)


def test_a_token_signature_never_passes_as_an_announcement_signature() -> None:
    token = keys().mint("crm", "kb", now=NOW)
    payload, signature = token.split(".")
    assert not keys().verify_signature({"claims": payload}, signature)
    assert not keys().verify_signature({"claims": payload}, signature[:22])


def test_an_announcement_of_another_mesh_does_not_verify() -> None:
    fields = {"agent": "crm"}
    assert not keys().verify_signature(fields, keys(mesh="other").sign(fields))
    assert not keys().verify_signature(fields, keys(secret=b"other").sign(fields))


@pytest.mark.parametrize("fields", [{"a=b": "c"}, {"a\nb": "c"}, {"a": "b\nc=d"}])
def test_fields_that_cannot_be_encoded_unambiguously_are_not_signed(fields: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="cannot sign"):
        keys().sign(fields)


@pytest.mark.parametrize("signature", ["", "x" * 22, "é" * 22, None, 42])
def test_junk_signatures_and_fields_verify_false_without_raising(signature: object) -> None:
    assert not keys().verify_signature({"agent": "crm"}, signature)  # type: ignore[arg-type]
    assert not keys().verify_signature({"agent": None}, "x" * 22)  # type: ignore[dict-item]


# --- durations ---


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10m", 600), ("30s", 30), ("2h", 7200), ("1d", 86400), ("250ms", 0.25), ("90", 90), (" 1.5h ", 5400)],
)
def test_a_duration_reads_in_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "10x", "-5s", "m", "1e3", "inf", "10 m s"])
def test_a_junk_duration_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid duration"):
        parse_duration(text)


# --- roles, people and lifetimes ---


def test_a_person_token_carries_its_role_person_and_groups() -> None:
    token = keys().mint("alice", role="approver", person="alice", groups=["finance", "ops", "finance"], now=NOW)
    claims = keys().verify(token, audience="registry", now=NOW)
    assert (claims.role, claims.person, claims.groups) == ("approver", "alice", ("finance", "ops"))
    assert claims.principal == Principal("alice", "approver", "alice", ("finance", "ops"))


def test_a_token_minted_without_a_role_is_an_agents() -> None:
    assert keys().verify(keys().mint("crm", now=NOW), audience="kb", now=NOW).role == "agent"


def test_an_unknown_role_is_refused_when_minting_and_when_verifying() -> None:
    with pytest.raises(ConfigError, match="unknown role"):
        keys().mint("crm", role="root", now=NOW)  # pyright: ignore[reportArgumentType]
    forged = _resigned({"m": "acme", "c": "crm", "a": "*", "i": NOW, "e": NOW + 60, "r": "root"})
    with pytest.raises(IdentityError, match="malformed"):
        keys().verify(forged, audience="kb", now=NOW)


def test_a_token_lives_thirty_days_at_most() -> None:
    keys().mint("crm", ttl=MAX_TOKEN_TTL, now=NOW)
    with pytest.raises(ConfigError, match="at most 30d"):
        keys().mint("crm", ttl=36500 * 86400.0, now=NOW)
    # Even one signed with the secret by other means is refused.
    forged = _resigned({"m": "acme", "c": "crm", "a": "*", "i": NOW, "e": NOW + 365 * 86400, "r": "agent"})
    with pytest.raises(IdentityError, match="longer than 30d"):
        keys().verify(forged, audience="kb", now=NOW)


def test_a_token_source_mints_for_its_principal() -> None:
    source = TokenSource(keys(), Principal("mesh-cli", "admin", "root"))
    claims = keys().verify(source.token("registry", now=NOW), audience="registry", now=NOW)
    assert (claims.caller, claims.role, claims.person) == ("mesh-cli", "admin", "root")


def test_a_static_token_is_sent_as_given_and_speaks_for_its_claims() -> None:
    token = keys().mint("alice", role="client", person="alice", now=NOW)
    static = StaticToken(token, keys().verify(token, audience="*", now=NOW))
    assert static.token("kb") == static.token("registry") == token
    assert static.principal.person == "alice"


def test_a_service_proof_holds_only_for_its_mesh_kind_and_challenge() -> None:
    proof = keys().prove("c" * 24, "registry")
    assert keys().check_proof("c" * 24, "registry", proof)
    assert not keys().check_proof("c" * 24, "tracer", proof)
    assert not keys().check_proof("d" * 24, "registry", proof)
    assert not keys(mesh="other").check_proof("c" * 24, "registry", proof)
    assert not keys(secret=b"impostor").check_proof("c" * 24, "registry", proof)
    assert not keys().check_proof("c" * 24, "registry", None)
    assert not keys().check_proof("c" * 24, "registry", "é")


def _resigned(claims: dict[str, object]) -> str:
    """A token with these raw claims and a good signature: what a secret holder could make."""
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    mac = keys()._token_mac(payload)  # pyright: ignore[reportPrivateUsage]
    return f"{payload}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
