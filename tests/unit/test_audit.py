"""The governance record: its MAC chain (`mesh.audit`) and its log on SQLite and PostgreSQL (`registry.audit`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.audit import GENESIS, canonical, head_of, seal, verify_chain, verify_head, verify_seen
from mesh.errors import ConfigError
from mesh.identity import MeshKeys
from mesh.wire import AuditRecord
from registry.stores import AuditStore
from tests.unit.store_backends import BACKENDS, Backend, opened

KEYS = MeshKeys(b"correct horse battery staple", "acme")
NOW = 1_700_000_000.0


def chain(*records: dict[str, Any], keys: MeshKeys = KEYS) -> list[AuditRecord]:
    entries: list[AuditRecord] = []
    for seq, record in enumerate(records, start=1):
        prev = entries[-1].mac if entries else GENESIS
        entries.append(seal(keys, seq, NOW + seq, "approval", record, prev))
    return entries


FIVE = chain(*({"event": "approved", "id": f"a{n}", "by": {"person": "alice"}} for n in range(5)))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with opened(request, tmp_path) as backend:
        yield backend


@pytest.fixture
def audit_log(backend: Backend) -> AuditStore:
    return backend.audit(KEYS, clock=lambda: NOW)


# --- the chain ---


def test_an_untouched_chain_verifies() -> None:
    assert verify_chain(FIVE, KEYS) is None
    assert verify_chain([], KEYS) is None


def test_an_edited_record_is_named() -> None:
    edited = FIVE[2].model_copy(update={"record": {**FIVE[2].record, "by": {"person": "mallory"}}})
    assert verify_chain([*FIVE[:2], edited, *FIVE[3:]], KEYS) == "record #3 was altered"


def test_an_edited_time_or_kind_is_named_too() -> None:
    later = FIVE[1].model_copy(update={"at": FIVE[1].at + 1})
    other = FIVE[3].model_copy(update={"kind": "policy"})
    assert verify_chain([FIVE[0], later, *FIVE[2:]], KEYS) == "record #2 was altered"
    assert verify_chain([*FIVE[:3], other, FIVE[4]], KEYS) == "record #4 was altered"


def test_a_deleted_middle_record_is_named() -> None:
    assert verify_chain([*FIVE[:2], *FIVE[3:]], KEYS) == "record #3 is missing"
    assert verify_chain([FIVE[0], FIVE[4]], KEYS) == "records #2-#4 are missing"
    assert verify_chain(FIVE[1:], KEYS) == "record #1 is missing"


def test_a_reordered_pair_is_named() -> None:
    assert verify_chain([*FIVE[:2], FIVE[3], FIVE[2], FIVE[4]], KEYS) == "record #4 is out of order"


def test_a_record_renumbered_to_fill_a_gap_is_altered() -> None:
    moved = FIVE[3].model_copy(update={"seq": 3})
    assert verify_chain([*FIVE[:2], moved, FIVE[4]], KEYS) == "record #3 was altered"


def test_a_record_signed_with_another_secret_fails() -> None:
    forged = chain(*(e.record for e in FIVE), keys=MeshKeys(b"another secret", "acme"))
    assert verify_chain([*FIVE[:2], forged[2], *FIVE[3:]], KEYS) == "record #3 was altered"
    same_secret_other_mesh = chain(*(e.record for e in FIVE), keys=MeshKeys(b"correct horse battery staple", "b"))
    assert verify_chain(same_secret_other_mesh, KEYS) == "record #1 was altered"


def test_a_valid_record_from_another_chain_breaks_the_link() -> None:
    other = chain(*({"event": "denied", "id": f"x{n}"} for n in range(5)))
    assert verify_chain([*FIVE[:3], other[3], FIVE[4]], KEYS) == "the chain breaks after #3"


def test_the_head_shows_a_cut_off_end() -> None:
    head = head_of(KEYS, 5, FIVE[4].mac)
    assert verify_head(FIVE, KEYS, head) is None
    assert verify_head(FIVE[:3], KEYS, head) == (
        "the record ends at #3 but the registry's head says #5: its end was cut off or an older copy restored"
    )
    assert verify_head(FIVE, KEYS, None) == "the record's head is missing"
    assert verify_head([], KEYS, None) is None


def test_a_head_not_signed_with_the_mesh_secret_is_altered() -> None:
    moved = head_of(KEYS, 5, FIVE[4].mac).model_copy(update={"seq": 3, "mac": FIVE[2].mac})
    forged = head_of(MeshKeys(b"another secret", "acme"), 3, FIVE[2].mac)
    assert verify_head(FIVE[:3], KEYS, moved) == "the record's head was altered"
    assert verify_head(FIVE[:3], KEYS, forged) == "the record's head was altered"


def test_the_head_this_machine_verified_must_still_be_there() -> None:
    assert verify_seen(FIVE, (5, FIVE[4].mac)) is None
    assert verify_seen(FIVE, None) is None
    assert "the record ends at #4 but this machine verified it up to #5 before" in (
        verify_seen(FIVE[:4], (5, FIVE[4].mac)) or ""
    )
    other = chain(*({"event": "denied", "id": f"x{n}"} for n in range(5)))
    assert verify_seen(other, (5, FIVE[4].mac)) == (
        "record #5 was replaced: this machine verified it up to #5 before, with another MAC"
    )


def test_canonical_json_is_sorted_compact_ascii_and_refuses_what_is_not_json() -> None:
    assert canonical({"b": 1, "a": ["é", 2.5]}) == '{"a":["\\u00e9",2.5],"b":1}'
    with pytest.raises(ValueError, match="plain JSON"):
        canonical({"at": float("nan")})
    with pytest.raises(ValueError, match="plain JSON"):
        canonical({"when": object()})


records = st.dictionaries(
    st.text(max_size=8),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=8,
    ),
    max_size=5,
)


@given(st.lists(records, min_size=2, max_size=8), st.data())
def test_any_chain_survives_a_json_round_trip_and_any_deletion_is_found(
    contents: list[dict[str, Any]], data: st.DataObject
) -> None:
    entries = chain(*contents)
    # What the CLI does with the registry's JSON Lines: the stdlib parser, floats bit for bit.
    received = [AuditRecord.model_validate(json.loads(json.dumps(e.model_dump()))) for e in entries]
    assert verify_chain(received, KEYS) is None
    gone = data.draw(st.integers(min_value=0, max_value=len(entries) - 2))
    assert verify_chain(received[:gone] + received[gone + 1 :], KEYS) == f"record #{gone + 1} is missing"


# --- the log ---


def test_appended_records_form_a_chain_that_verifies(audit_log: AuditStore) -> None:
    audit_log.append("approval", {"event": "requested", "id": "a1"})
    audit_log.append("approval", {"event": "approved", "id": "a1", "decided_by": {"person": "alice"}})
    audit_log.append_many([{"key": "t/s/0", "event": "policy deny"}], kind="policy")
    entries = audit_log.read()
    assert [(e.seq, e.kind, e.record.get("event")) for e in entries] == [
        (1, "approval", "requested"),
        (2, "approval", "approved"),
        (3, "policy", "policy deny"),
    ]
    assert entries[1].record["decided_by"] == {"person": "alice"}
    assert verify_chain(entries, KEYS) is None
    assert verify_head(entries, KEYS, audit_log.head()) is None


def test_a_redelivered_record_with_a_stored_key_is_skipped(audit_log: AuditStore) -> None:
    span = [{"key": "t/s/0", "event": "policy deny"}, {"key": "t/s/1", "event": "policy approval"}]
    audit_log.append_many(span, kind="policy")
    audit_log.append_many([*span, {"key": "t/s/2", "event": "policy deny"}], kind="policy")
    audit_log.append("policy", span[0])
    entries = audit_log.read()
    assert [e.record["key"] for e in entries] == ["t/s/0", "t/s/1", "t/s/2"]
    assert verify_chain(entries, KEYS) is None


def test_reads_page_by_seq_and_filter_by_time(backend: Backend) -> None:
    clock = iter([NOW, NOW + 10, NOW + 20])
    log = backend.audit(KEYS, clock=lambda: next(clock))
    for n in range(3):
        log.append("approval", {"n": n})
    assert [e.seq for e in log.read(after=1, limit=1)] == [2]
    assert [e.seq for e in log.read(since=NOW + 10)] == [2, 3]


def test_appends_from_many_threads_keep_one_chain(audit_log: AuditStore) -> None:
    def append(n: int) -> None:
        audit_log.append("approval", {"n": n})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(append, range(64)))
    entries = audit_log.read(limit=100)
    assert len(entries) == 64
    assert verify_chain(entries, KEYS) is None


def test_an_edited_row_is_named_and_an_unreadable_one_too(audit_log: AuditStore, backend: Backend) -> None:
    for n in range(4):
        audit_log.append("approval", {"n": n})
    backend.edit("UPDATE audit SET record = ? WHERE seq = 2", '{"n":99}')
    assert verify_chain(audit_log.read(), KEYS) == "record #2 was altered"
    backend.edit("UPDATE audit SET record = 'not json' WHERE seq = 1")
    if backend.kind == "sqlite":  # a column that holds whatever it is given
        backend.edit("UPDATE audit SET at = 'soon' WHERE seq = 1")
    assert verify_chain(audit_log.read(), KEYS) == "record #1 was altered"


def test_records_cut_off_the_end_stay_missing_after_the_next_append(audit_log: AuditStore, backend: Backend) -> None:
    for n in range(5):
        audit_log.append("approval", {"n": n})
    backend.edit("DELETE FROM audit WHERE seq >= 4")
    assert "the record ends at #3 but the registry's head says #5" in (
        verify_head(audit_log.read(), KEYS, audit_log.head()) or ""
    )
    audit_log.append("approval", {"n": 5})
    assert verify_chain(audit_log.read(), KEYS) == "records #4-#5 are missing"


def test_a_deleted_head_leaves_a_break_the_next_append_does_not_heal(audit_log: AuditStore, backend: Backend) -> None:
    for n in range(5):
        audit_log.append("approval", {"n": n})
    backend.edit("DELETE FROM audit WHERE seq >= 4")
    backend.edit("DELETE FROM audit_head")
    assert verify_head(audit_log.read(), KEYS, audit_log.head()) == "the record's head is missing"
    audit_log.append("approval", {"n": 5})
    assert verify_chain(audit_log.read(), KEYS) == "the chain breaks after #3"


def test_a_record_that_is_not_json_is_refused(audit_log: AuditStore) -> None:
    with pytest.raises(ValueError, match="plain JSON"):
        audit_log.append("approval", {"when": object()})
    with pytest.raises(ValueError, match="kind"):
        audit_log.append("", {"n": 1})
    assert audit_log.read() == []


def test_appends_through_two_replicas_keep_one_chain(backend: Backend) -> None:
    replicas = [backend.audit(KEYS), backend.audit(KEYS)]

    def append(n: int) -> None:
        replicas[n % 2].append_many([{"key": f"k{n}", "n": n}, {"n": -n}], kind="policy")
        replicas[(n + 1) % 2].append_many([{"key": f"k{n}", "n": n}], kind="policy")  # a redelivery elsewhere

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(append, range(40)))
    entries = replicas[0].read(limit=1000)
    assert len(entries) == 80
    assert sorted(e.record["n"] for e in entries if "key" in e.record) == list(range(40))
    assert verify_chain(entries, KEYS) is None
    assert verify_head(entries, KEYS, replicas[1].head()) is None


def test_a_record_written_by_a_newer_agentplex_is_refused_in_one_line(backend: Backend) -> None:
    backend.audit(KEYS)
    backend.edit("UPDATE schema_version SET version = 2 WHERE component = 'audit'")
    with pytest.raises(
        ConfigError, match=r"the audit tables in .* were written by a newer agentplex \(layout 2; this one"
    ):
        backend.audit(KEYS)
