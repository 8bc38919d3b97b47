"""The registry's storage seam: one Protocol per store, and the errors every backend raises.

Owns the contracts the inventory API, the approvals queue and the governance record's routes rely
on, so SQLite (the embedded default) and PostgreSQL (several replicas on one database) are
interchangeable. It holds no implementation: `registry.storage.open_stores` chooses one.

MeshError
├── StoreUnavailable     a store's database cannot be reached now (the HTTP API answers 503)
└── ConfigError          a database written by a newer agentplex, or another mesh's
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from anyio.abc import TaskStatus

from mesh.errors import ConfigError, MeshError
from mesh.wire import AgentRecord, Approval, ApprovalStatus, AuditHead, AuditRecord, Decider, Registration

__all__ = [
    "ApprovalStore",
    "AuditStore",
    "InventoryStore",
    "Pending",
    "StoreUnavailable",
    "Wake",
    "refuse_newer",
]


class StoreUnavailable(MeshError):
    """A store's database (inventory, approvals, audit, traces) cannot be reached now: 503, never a guess."""


@dataclass(frozen=True, slots=True)
class Pending:
    """A pending approval as the expiry sweep sees it."""

    id: str
    requested_at: float
    expires_at: float
    polled_at: float | None
    """When a call last said it waits on it, through any replica (None: never)."""


Wake = Callable[[str | None], None]
"""Told that approval `id` changed (None: anything may have changed, re-read them all)."""


class InventoryStore(Protocol):
    """Registrations keyed by (name, instance), each with a lease; durable when a write returns.

    Its calls block (a database round trip, an fsync): the registry makes them through
    `registry.store_calls.StoreCalls`, off the event loop. So do the other stores'.
    """

    def upsert(self, reg: Registration, now: float) -> AgentRecord:
        """Store `reg` with a lease from `now`; a known (name, instance) keeps its first_seen."""
        ...

    def renew(self, name: str, instance: str, now: float) -> AgentRecord | None:
        """Extend the lease of (name, instance) from `now`; None if unknown (the agent must register)."""
        ...

    def remove(self, name: str, instance: str) -> bool:
        """Forget (name, instance); True if it was known."""
        ...

    def alive(self, now: float) -> list[AgentRecord]:
        """Registrations whose lease has not lapsed at `now`, by name and instance."""
        ...

    def all(self) -> list[AgentRecord]:
        """Every registration, lapsed ones included (the asset view, with last seen)."""
        ...

    def count(self, now: float) -> int:
        """How many registrations are alive at `now`."""
        ...

    def find(
        self,
        now: float | None,
        *,
        tool: str | None = None,
        owner: str | None = None,
        jurisdiction: str | None = None,
        data_class: str | None = None,
        name: str | None = None,
    ) -> list[AgentRecord]:
        """Registrations matching every given filter, alive at `now` (None: lapsed ones too)."""
        ...

    def find_json(
        self,
        now: float | None,
        *,
        tool: str | None = None,
        owner: str | None = None,
        jurisdiction: str | None = None,
        data_class: str | None = None,
        name: str | None = None,
    ) -> bytes:
        """What `find` gives, as a JSON array (the bytes `TypeAdapter(list[AgentRecord]).dump_json` makes).

        The body of `GET /api/agents`: built from the rows without making records where it can be.
        """
        ...

    def close(self) -> None:
        """Release the database."""
        ...


class ApprovalStore(Protocol):
    """The approvals table: rows, the conditional writes that decide or close them, and change notices.

    Every write that ends a pending approval succeeds for exactly one writer, on any replica, and
    tells `watch`ers everywhere (after it is durable) that it changed.
    """

    def insert(self, approval: Approval, summary: str | None) -> None:
        """Store a new approval."""
        ...

    def get(self, approval_id: str) -> Approval | None:
        """One approval, or None."""
        ...

    def list(self, *, status: str | None, limit: int) -> list[Approval]:
        """Approvals, newest first, optionally of one status."""
        ...

    def pending(self) -> list[Pending]:
        """The pending approvals, for the expiry sweep."""
        ...

    def decide(self, approval_id: str, status: ApprovalStatus, by: Decider, reason: str | None, now: float) -> bool:
        """Record a person's answer if the approval is still pending; False if it is not."""
        ...

    def close_pending(self, ids: Sequence[str], status: ApprovalStatus, reason: str, now: float) -> list[Approval]:
        """Close those of `ids` still pending; exactly the approvals this call closed.

        Sweeps run one replica at a time, so two never race on the same expiry.
        """
        ...

    def touch(self, approval_id: str, now: float) -> None:
        """Note that a call still waits on `approval_id` (so no replica cancels it as abandoned)."""
        ...

    async def watch(self, wake: Wake, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Call `wake` for every approval that changes through another replica, until cancelled."""
        ...

    def close(self) -> None:
        """Release the database."""
        ...


class AuditStore(Protocol):
    """The governance record: appends chained by a keyed MAC into one chain, whichever replica writes."""

    def append(self, kind: str, record: Mapping[str, Any]) -> None:
        """Append one entry; a record whose "key" is already stored is skipped (a redelivery)."""
        ...

    def append_many(self, records: Iterable[Mapping[str, Any]], *, kind: str) -> None:
        """Append `records` of one kind in one transaction, skipping those whose "key" is already stored."""
        ...

    def read(self, *, since: float | None = None, after: int = 0, limit: int = 1000) -> list[AuditRecord]:
        """Entries after seq `after` (and appended at or after `since`), oldest first, at most `limit`."""
        ...

    def head(self) -> AuditHead | None:
        """The stored head, as it is, or None when there is none."""
        ...

    def close(self) -> None:
        """Release the database."""
        ...


def refuse_newer(component: str, found: int, supported: int, where: str) -> None:
    """ConfigError (one line) when `where` holds `component` in a layout newer than this agentplex reads."""
    if found > supported:
        raise ConfigError(
            f"the {component} tables in {where} were written by a newer agentplex (layout {found}; this one reads"
            f" up to {supported}): upgrade agentplex, or point --db elsewhere"
        )
