"""Decisions: what an agent or the mesh chose, recorded as `mesh.decision` span events.

The one place that knows the event's name and attribute keys (DESIGN §5). On the mesh's own spans
a decision is recorded as its arguments, and its attributes are made when the span is exported,
off the call path (`MeshSpan.add_deferred_event`), a fraction of building and cleaning them in
place, and a hop records three. On any
other OpenTelemetry span it is an ordinary event; with no tracer provider set, recording costs
next to nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from mesh.tracing.spans import MeshSpan, current_span

__all__ = ["DECISION_EVENT", "DECISION_KINDS", "decision_attributes", "record_decision"]

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
    """Add a `mesh.decision` event to `span` (default: the current span).

    `alternatives` and `attributes` are copied as they are now, so changing them afterwards
    changes nothing recorded; a list held in `attributes` is not copied (pass a tuple).
    """
    if confidence is not None and not 0.0 <= confidence <= 1.0:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    target = span or current_span()
    if type(target) is MeshSpan:
        args = (kind, choice, reason, confidence, tuple(alternatives), dict(attributes) if attributes else None)
        target.add_deferred_event(DECISION_EVENT, decision_attributes, args)
    elif type(target) is not trace.NonRecordingSpan:  # whose add_event does nothing: nothing to build
        attrs = decision_attributes(kind, choice, reason, confidence, alternatives, attributes)
        target.add_event(DECISION_EVENT, attrs)


def decision_attributes(
    kind: str,
    choice: str | None,
    reason: str | None,
    confidence: float | None,
    alternatives: Sequence[str],
    attributes: Mapping[str, AttributeValue] | None,
) -> dict[str, AttributeValue]:
    """A decision event's attributes (DESIGN §5)."""
    attrs: dict[str, AttributeValue] = {"mesh.decision.kind": kind}
    if choice is not None:
        attrs["mesh.decision.choice"] = choice
    if reason is not None:
        attrs["mesh.decision.reason"] = reason
    if confidence is not None:
        attrs["mesh.decision.confidence"] = float(confidence)
    if alternatives:
        attrs["mesh.decision.alternatives"] = [str(a) for a in alternatives]
    if attributes:
        attrs.update(attributes)
    return attrs
