"""The governance record's chain: canonical entries, their keyed MACs, and the checks that find a break.

Each entry's MAC covers its seq, time, kind, canonical record and the MAC of the entry before,
under a key derived from the mesh secret: whoever can edit the registry's database but does not
hold the secret cannot recompute the chain. A chain alone cannot show that its last entries were
cut off, so the registry also keeps a MACed head (`verify_head`) and the CLI remembers the head it
verified last (`verify_seen`). Pure: the registry's `AuditLog` stores entries, the CLI fetches them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from mesh.identity import MeshKeys
from mesh.wire import AuditHead, AuditRecord

__all__ = [
    "GENESIS",
    "canonical",
    "entry_mac",
    "head_of",
    "seal",
    "verify_chain",
    "verify_head",
    "verify_seen",
]

GENESIS: Final = "0" * 64
"""The `prev` of the first entry."""


def canonical(value: Mapping[str, Any]) -> str:
    """`value` as canonical JSON: sorted keys, no spaces, ASCII only; ValueError if it is not JSON."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"an audit record must be plain JSON: {exc}") from exc


def entry_mac(keys: MeshKeys, seq: int, at: float, kind: str, record_text: str, prev: str) -> str:
    """The MAC of one entry whose record is the canonical text `record_text`."""
    fields = canonical({"seq": seq, "at": at, "kind": kind, "prev": prev})
    # JSON escapes NUL, so the separators cannot be forged from inside a field.
    return keys.audit_mac(f"entry\0{fields}\0{record_text}".encode())


def seal(keys: MeshKeys, seq: int, at: float, kind: str, record: Mapping[str, Any], prev: str) -> AuditRecord:
    """The entry `seq` recording `record`, chained to `prev` and MACed."""
    text = canonical(record)
    mac = entry_mac(keys, seq, at, kind, text, prev)
    return AuditRecord(seq=seq, at=at, kind=kind, record=json.loads(text), prev=prev, mac=mac)


def head_of(keys: MeshKeys, seq: int, mac: str) -> AuditHead:
    """The signed head naming entry `seq` (whose MAC is `mac`) as the last one."""
    return AuditHead(seq=seq, mac=mac, sig=_head_sig(keys, seq, mac))


def verify_chain(records: Sequence[AuditRecord], keys: MeshKeys) -> str | None:
    """None when `records`, the whole chain in order, are intact; else the first bad entry, in one line."""
    present = {r.seq for r in records}
    expected, prev = 1, GENESIS
    for record in records:
        if record.mac != _mac_of(keys, record):
            return f"record #{record.seq} was altered"
        if record.seq < expected or (record.seq > expected and expected in present):
            return f"record #{record.seq} is out of order"
        if record.seq > expected:
            last = record.seq - 1
            return f"record #{expected} is missing" if last == expected else f"records #{expected}-#{last} are missing"
        if record.prev != prev:
            return f"the chain breaks after #{expected - 1}" if expected > 1 else "record #1 does not start a chain"
        expected, prev = record.seq + 1, record.mac
    return None


def verify_head(records: Sequence[AuditRecord], keys: MeshKeys, head: AuditHead | None) -> str | None:
    """None when the intact chain `records` reaches the registry's `head` (fetched before them), else why not."""
    if head is None:
        return "the record's head is missing" if records else None
    if head.sig != _head_sig(keys, head.seq, head.mac):
        return "the record's head was altered"
    return _reaches(records, head.seq, head.mac, f"the registry's head says #{head.seq}")


def verify_seen(records: Sequence[AuditRecord], seen: tuple[int, str] | None) -> str | None:
    """None when the intact chain `records` still holds entry `seen` (seq, MAC) verified before, else why not."""
    if seen is None:
        return None
    seq, mac = seen
    return _reaches(records, seq, mac, f"this machine verified it up to #{seq} before")


def _reaches(records: Sequence[AuditRecord], seq: int, mac: str, claim: str) -> str | None:
    last = records[-1].seq if records else 0
    if seq < 1:
        return None
    if last < seq:
        return f"the record ends at #{last} but {claim}: its end was cut off or an older copy restored"
    if records[seq - 1].mac != mac:  # an intact chain holds entry n at index n - 1
        return f"record #{seq} was replaced: {claim}, with another MAC"
    return None


def _mac_of(keys: MeshKeys, record: AuditRecord) -> str:
    try:
        text = canonical(record.record)
    except ValueError:
        return ""
    return entry_mac(keys, record.seq, record.at, record.kind, text, record.prev)


def _head_sig(keys: MeshKeys, seq: int, mac: str) -> str:
    return keys.audit_mac(f"head\0{canonical({'seq': seq, 'mac': mac})}".encode())
