"""A span's outcome for its trace's summary: ok, an error, or a call the mesh's governance refused.

A trace's status is its root span's outcome; what failed beside the root is counted apart, the
refusals apart from other errors (DESIGN §4 `mesh traces ls`). The rules read one span alone, so
a store can fold them batch by batch as spans arrive:
1. A span whose status is not `error` is ok (OpenTelemetry's `unset` too).
2. A failed span carrying a refusal verdict is `denied`: a `policy` decision `deny`, or an
   `approval` decision `denied`, `expired` or `refused`. That is the span where the call was refused.
3. A failed CLIENT span whose status message starts with a refusal's kind (`PolicyDenied: `) is the
   caller's copy of a refusal the callee decided, and counted there: `relayed`, counted as neither.
4. Any other failed span is an `error`.
Pure: no I/O, no clock. Owns no stitching (`mesh.tracing.stitch`) and no storage.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

from mesh.errors import ApprovalDenied, PolicyDenied
from mesh.wire import SpanRecord, SpanStatus

__all__ = [
    "DECISION_CHOICE",
    "DECISION_EVENT",
    "DECISION_KIND",
    "OUTCOMES",
    "REFUSALS",
    "REFUSING_CHOICES",
    "Outcome",
    "beside_root",
    "counted",
    "failed_outcome",
    "outcome_of",
]

Outcome = Literal["ok", "error", "denied", "relayed"]

DECISION_EVENT: Final = "mesh.decision"
"""The span event that carries a decision (`mesh.decisions`), and the attributes read of it."""
DECISION_KIND: Final = "mesh.decision.kind"
DECISION_CHOICE: Final = "mesh.decision.choice"

OUTCOMES: Final[tuple[Outcome, ...]] = ("ok", "error", "denied", "relayed")
"""Every outcome; its index is the small integer the trace stores keep for it."""

REFUSALS: Final[dict[str, frozenset[str]]] = {
    "policy": frozenset({"deny"}),
    "approval": frozenset({"denied", "expired", "refused"}),
}
"""Per decision kind, the choices that refuse the call (rule 2)."""
REFUSING_CHOICES: Final = frozenset().union(*REFUSALS.values())
"""Every choice that refuses a call, whatever the decision's kind: a quick look before a closer one."""


def outcome_of(span: SpanRecord) -> Outcome:
    """The span's outcome by the rules above."""
    if span.status != "error":
        return "ok"
    verdicts = (
        (event.attributes.get(DECISION_KIND), event.attributes.get(DECISION_CHOICE))
        for event in span.events
        if event.name == DECISION_EVENT
    )
    return failed_outcome(span.kind == "client", span.status_message, verdicts)


def failed_outcome(client: bool, message: str | None, verdicts: Iterable[tuple[object, object]]) -> Outcome:
    """The outcome of a failed span, from its kind, its status message and its decisions' (kind, choice).

    For readers that have the span in another shape than a `SpanRecord` (a store reading OTLP).
    """
    if any(str(choice) in REFUSALS.get(str(kind), ()) for kind, choice in verdicts):
        return "denied"
    if client and (message or "").startswith(_RELAYED):
        return "relayed"
    return "error"


def beside_root(root: Outcome, outcomes: Iterable[Outcome]) -> tuple[SpanStatus, int, int]:
    """(status, denied, errors) of a trace: its root's outcome, and what `outcomes` (every span's,
    the root's among them) count beside it."""
    denied = errors = 0
    for outcome in outcomes:
        if outcome == "denied":
            denied += 1
        elif outcome == "error":
            errors += 1
    return counted(root, denied, errors)


def counted(root: Outcome, denied: int, errors: int) -> tuple[SpanStatus, int, int]:
    """(status, denied, errors) from the root's outcome and the counts over every span, the root's among them."""
    return (
        "ok" if root == "ok" else "error",
        denied - (root == "denied"),
        errors - (root == "error"),
    )


# -- private helpers ---------------------------------------------------------------------------

_RELAYED: Final = tuple(f"{kind.__name__}: " for kind in (PolicyDenied, ApprovalDenied))
"""How a refusal's text starts as the callee answers it (`mesh.runtime.guard`), which the caller's span keeps."""
