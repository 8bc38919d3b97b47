"""An approval as a row of the `approvals` table, the same on SQLite and PostgreSQL.

Owns the column order and the mapping both ways: who decided is two columns (person, groups),
groups are comma-joined text, the call's arguments are JSON text (NULL when not given).
"""

from __future__ import annotations

import json
from typing import Any, Final, LiteralString

from mesh.wire import Approval, Decider

__all__ = ["COLUMNS", "SELECT", "approval_from_row", "row_of"]

COLUMNS: Final[tuple[LiteralString, ...]] = (
    "id", "agent", "tool", "caller", "arguments_digest", "requested_at", "expires_at", "status", "trace_id",
    "decided_by", "decided_at", "reason", "summary", "requested_by", "approvers", "decided_groups", "arguments",
)  # fmt: skip
SELECT: Final[LiteralString] = ", ".join(COLUMNS)


def row_of(approval: Approval, summary: str | None) -> tuple[Any, ...]:
    """The values of COLUMNS for `approval`."""
    by = approval.decided_by
    arguments = None if approval.arguments is None else json.dumps(approval.arguments, separators=(",", ":"))
    return (
        approval.id, approval.agent, approval.tool, approval.caller, approval.arguments_digest,
        approval.requested_at, approval.expires_at, approval.status, approval.trace_id,
        by.person if by else None, approval.decided_at, approval.reason, summary, approval.requested_by,
        ",".join(approval.approvers), ",".join(by.groups) if by else None, arguments,
    )  # fmt: skip


def approval_from_row(row: tuple[Any, ...]) -> Approval:
    """The approval a row of COLUMNS holds."""
    fields = dict(zip(COLUMNS, row, strict=True))
    person, groups = fields.pop("decided_by"), fields.pop("decided_groups")
    fields["decided_by"] = Decider(person=person, groups=groups.split(",") if groups else []) if person else None
    fields["approvers"] = fields["approvers"].split(",") if fields["approvers"] else []
    fields["arguments"] = json.loads(fields["arguments"]) if fields["arguments"] else None
    return Approval.model_validate(fields)
