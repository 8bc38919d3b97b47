"""Decisions: what an agent or the mesh chose, recorded as `mesh.decision` span events.

The one place that knows the event's name and attribute keys (DESIGN §5). Uses the
OpenTelemetry API only: with no tracer provider set, recording costs next to nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

__all__ = ["DECISION_EVENT", "DECISION_KINDS", "record_decision"]

DECISION_EVENT = "mesh.decision"
DECISION_KINDS = ("route", "policy", "retry", "fallback", "approval", "escalation")
"""The kinds the mesh itself records; agents may use their own."""


def record_decision(
    kind: str,
    *,
    choice: str | None = None,
    reason: str | None = None,
    confidence: float | None = None,
    alternatives: Sequence[str] = (),
    attributes: Mapping[str, AttributeValue] | None = None,
    span: trace.Span | None = None,
) -> None:
    """Add a `mesh.decision` event to `span` (default: the current span)."""
    attrs: dict[str, AttributeValue] = {"mesh.decision.kind": kind}
    if choice is not None:
        attrs["mesh.decision.choice"] = choice
    if reason is not None:
        attrs["mesh.decision.reason"] = reason
    if confidence is not None:
        if not 0.0 <= confidence <= 1.0:
            raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
        attrs["mesh.decision.confidence"] = float(confidence)
    if alternatives:
        attrs["mesh.decision.alternatives"] = [str(a) for a in alternatives]
    if attributes:
        attrs.update(attributes)
    (span or trace.get_current_span()).add_event(DECISION_EVENT, attrs)
