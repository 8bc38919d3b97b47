"""Rows of the `agents` table as records, or as the JSON of a listing: the same on either backend.

Owns the row layout both inventory stores select (`name, instance, url, version, tools, metadata,
lease_seconds, authenticated, first_seen, last_seen, expires_at`, tools and metadata as JSON text)
and what it means: `record_from_row`, and `RowReader`, which gives the same records and bytes from
caches. It runs no SQL.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Final, TypeVar, final

from pydantic import TypeAdapter
from pydantic_core import to_json

from mesh.wire import AgentRecord, Governance, ToolInfo

__all__ = ["Listing", "RowReader", "record_from_row"]

Row = Sequence[Any]
"""One row of the `agents` columns, in the order above."""

_tools_adapter: Final = TypeAdapter(list[ToolInfo])
_record_adapter: Final = TypeAdapter(AgentRecord)
_LAST_SEEN: Final = b',"last_seen":'
_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


@final
class Listing(bytes):
    """A listing's JSON bytes, with a tag of its records' content and the earliest lease expiry among them.

    `tag` leaves out `last_seen` and `expires_at`, the columns every heartbeat changes, so it only moves
    when the set of records or what one of them says moves (a lapsed lease drops a record: that moves
    it). What the tag leaves out, a client that holds the listing needs only as `lease_floor`: every
    record listed is leased at least until then (None: no records). A bytes subclass so that stores
    hand it through `find_json` unchanged.
    """

    tag: str
    lease_floor: float | None

    def __new__(cls, body: bytes, tag: str, lease_floor: float | None) -> Listing:
        listing = super().__new__(cls, body)
        listing.tag = tag
        listing.lease_floor = lease_floor
        return listing


def record_from_row(row: Row) -> AgentRecord:
    """The record `row` holds, every column validated afresh."""
    (name, instance, url, version, tools, metadata, lease, authenticated, first, last, expires) = row
    return AgentRecord(
        name=name,
        instance=instance,
        url=url,
        version=version,
        tools=_tools_adapter.validate_json(tools),
        metadata=Governance.model_validate_json(metadata),
        lease_seconds=lease,
        authenticated=bool(authenticated),
        first_seen=first,
        last_seen=last,
        expires_at=expires,
    )


@final
class RowReader:
    """Rows as records equal to `record_from_row`'s, or as the bytes `TypeAdapter(list[AgentRecord]).dump_json` gives.

    Many instances share a handful of tool lists and governance facts: each distinct text is parsed
    once and the records share the parsed (frozen) models. A row that differs from the one last listed
    for its (name, instance) only in its lease times reuses that row's JSON up to them: between two
    listings mostly heartbeats change rows, and they change only those. Each
    cache keeps at most `size` entries, oldest out first. Thread-safe.
    """

    def __init__(self, size: int = 16384) -> None:
        if size < 1:
            raise ValueError(f"a RowReader keeps at least one entry per cache, not {size}")
        self._size = size
        self._lock = threading.Lock()
        self._tools: dict[str, list[ToolInfo]] = {}
        self._metadata: dict[str, Governance] = {}
        self._json: dict[tuple[str, str], tuple[Row, bytes, bytes]] = {}
        """Per (name, instance): its columns but the lease times, its JSON up to them, their digest."""

    def record(self, row: Row) -> AgentRecord:
        """The record `row` holds."""
        (name, instance, url, version, tools, metadata, lease, authenticated, first, last, expires) = row
        return AgentRecord(
            name=name,
            instance=instance,
            url=url,
            version=version,
            tools=self._cached(self._tools, tools, _tools_adapter.validate_json),
            metadata=self._cached(self._metadata, metadata, Governance.model_validate_json),
            lease_seconds=lease,
            authenticated=bool(authenticated),
            first_seen=first,
            last_seen=last,
            expires_at=expires,
        )

    def listing(self, rows: Iterable[Row]) -> Listing:
        """The JSON array of the records `rows` hold, in their order, tagged (see `Listing`)."""
        texts: list[bytes] = []
        tag = hashlib.blake2b(digest_size=16)
        floor: float | None = None
        for row in rows:
            text, digest = self._row_json(row)
            texts.append(text)
            tag.update(digest)
            expires = float(row[10])
            floor = expires if floor is None or expires < floor else floor
        return Listing(b"[" + b",".join(texts) + b"]", f'"{tag.hexdigest()}"', floor)

    def _row_json(self, row: Row) -> tuple[bytes, bytes]:
        key, content = (row[0], row[1]), tuple(row[:9])
        known = self._json.get(key)  # one dict read: safe beside another thread's write
        if known is not None and known[0] == content and known[1]:
            return known[1] + _time_tail(row[9], row[10]), known[2]
        text = _record_adapter.dump_json(self.record(row))
        digest = hashlib.blake2b(repr(content).encode(), digest_size=16).digest()
        self._remember(self._json, key, (content, _head_of(text, row), digest))
        return text, digest

    def _cached(self, cache: dict[str, _V], text: str, parse: Callable[[str], _V]) -> _V:
        found = cache.get(text)
        if found is None:
            found = parse(text)
            self._remember(cache, text, found)
        return found

    def _remember(self, cache: dict[_K, _V], key: _K, value: _V) -> None:
        with self._lock:
            cache.pop(key, None)
            while len(cache) >= self._size:
                del cache[next(iter(cache))]
            cache[key] = value


def _time_tail(last: Any, expires: Any) -> bytes:
    """The end of a record's JSON from its `last_seen` value on: the two columns a heartbeat changes."""
    return to_json(float(last)) + b',"expires_at":' + to_json(float(expires)) + b"}"


def _head_of(text: bytes, row: Row) -> bytes:
    """`text` up to its `last_seen` value, if `_time_tail` of `row` ends it exactly (else b"": not reusable).

    The check keeps the reuse honest should the record's fields ever be reordered or serialized otherwise.
    """
    cut = text.rfind(_LAST_SEEN)
    if cut < 0:
        return b""
    head = text[: cut + len(_LAST_SEEN)]
    return head if head + _time_tail(row[9], row[10]) == text else b""
