"""The time budget of a call chain: a deadline that travels with every hop (DESIGN §5, §7).

The caller sends what is left (milliseconds, immune to clock skew between hosts) in
`_meta`; the callee turns it back into a local deadline that its own calls inherit.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from mesh.wire import BUDGET_META_KEY

__all__ = ["budget_from_meta", "current_deadline", "remaining", "deadline_var"]

deadline_var: ContextVar[float | None] = ContextVar("mesh_deadline", default=None)
"""The monotonic deadline of the request being served, if it came with a budget."""


def current_deadline(timeout: float | None, default: float) -> float:
    """The earlier of `now + timeout` (or `default`) and the inherited deadline, as monotonic time."""
    own = time.monotonic() + (timeout if timeout is not None else default)
    inherited = deadline_var.get()
    return own if inherited is None else min(own, inherited)


def remaining(deadline: float) -> float:
    """Seconds left until `deadline` (negative when passed)."""
    return deadline - time.monotonic()


def budget_from_meta(meta: Mapping[str, Any] | None) -> float | None:
    """The budget a caller sent, in seconds, or None if it sent none (or junk)."""
    if not meta:
        return None
    value = meta.get(BUDGET_META_KEY)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) / 1000.0
    return None
