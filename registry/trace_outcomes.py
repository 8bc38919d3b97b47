"""What each stored span adds to its trace's outcome figures, by the rules of `mesh.tracing.outcome`.

Both trace stores fold per trace: the root's outcome (as a small integer, `OUTCOMES`' index), and
counts of denied and of failed spans over all of them; `listed` turns those into what a summary
shows. Only a failed span is read further (its body parsed): the others, nearly all, are ok by
their status alone, so ingest pays for the rules only where something failed. Owns no storage.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from mesh.tracing.outcome import (
    DECISION_CHOICE,
    DECISION_EVENT,
    DECISION_KIND,
    OUTCOMES,
    REFUSING_CHOICES,
    Outcome,
    counted,
    failed_outcome,
)
from mesh.wire import SpanStatus
from registry.otlp import SpanRow

__all__ = ["DENIED", "ERROR", "OK", "listed", "outcome_code", "stored_outcome"]

OK: Final = OUTCOMES.index("ok")
ERROR: Final = OUTCOMES.index("error")
DENIED: Final = OUTCOMES.index("denied")


def outcome_code(row: SpanRow) -> int:
    """The outcome of the row's span, as its index in `OUTCOMES`."""
    if row[7] != _OTLP_ERROR:
        return OK
    return stored_outcome(row[9])


def stored_outcome(body: bytes | bytearray) -> int:
    """The outcome of a stored span (the OTLP Span message as received), as its index in `OUTCOMES`.

    Reads the protobuf as it is (a `SpanRecord` would build every attribute the rules never look
    at), and walks its events only when a refusing choice is among its bytes: that walk costs more
    than the parse.
    """
    data = bytes(body)
    span = Span.FromString(data)
    if span.status.code != _OTLP_ERROR:
        return OK
    refusing = _REFUSING_MARKERS.search(data) is not None
    verdicts = (_verdict(e.attributes) for e in span.events if e.name == DECISION_EVENT) if refusing else ()
    return _CODES[failed_outcome(span.kind == _OTLP_CLIENT, span.status.message, verdicts)]


def listed(root: int, denied: int, failed: int) -> tuple[SpanStatus, int, int]:
    """(status, denied, errors) of a summary, from the root's outcome code and the counts over every span."""
    return counted(OUTCOMES[root], denied, failed)


# -- private helpers ---------------------------------------------------------------------------

_OTLP_ERROR: Final = 2  # Status.code: 0 unset, 1 ok, 2 error
_CODES: Final[dict[Outcome, int]] = {outcome: code for code, outcome in enumerate(OUTCOMES)}
_OTLP_CLIENT: Final = 3  # Span.kind
_REFUSING_MARKERS: Final = re.compile(
    b"|".join(
        re.escape(KeyValue(key=DECISION_CHOICE, value=AnyValue(string_value=choice)).SerializeToString())
        for choice in sorted(REFUSING_CHOICES)
    )
)
"""The bytes of a decision's refusing choice: encoders write a pair's key, then its value, so a span
holding one holds exactly these (as `registry.otlp.governance_records` finds verdicts). One pattern
looks for them all in one pass, where `in` would take one pass each."""


def _verdict(attributes: Iterable[KeyValue]) -> tuple[str | None, str | None]:
    """(kind, choice) of a decision event's attributes."""
    kind = choice = None
    for pair in attributes:
        if pair.key == DECISION_KIND:
            kind = pair.value.string_value
        elif pair.key == DECISION_CHOICE:
            choice = pair.value.string_value
    return kind, choice
