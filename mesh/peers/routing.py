"""Pure routing: which instance takes a call, and whether a failed call may be tried again.

No I/O and no clocks of its own: callers pass `now`. Least outstanding requests first,
ties broken by observed latency (EWMA), then by name so a choice is reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, final

from mesh.peers.directory import Instance

__all__ = ["Choice", "Load", "RetryBudget", "choose", "retry_safe"]


@dataclass(frozen=True, slots=True)
class Choice:
    """The instance picked, the ones passed over, and why."""

    instance: Instance
    alternatives: tuple[str, ...]
    reason: str


@final
class Load:
    """Outstanding requests and latency per instance, as this process has seen them."""

    def __init__(self, alpha: float = 0.2) -> None:
        self.outstanding: dict[tuple[str, str], int] = {}
        self.latency_ms: dict[tuple[str, str], float] = {}
        self._alpha = alpha

    def started(self, key: tuple[str, str]) -> None:
        """A request to `key` went out."""
        self.outstanding[key] = self.outstanding.get(key, 0) + 1

    def finished(self, key: tuple[str, str], elapsed_ms: float | None) -> None:
        """A request to `key` ended; `elapsed_ms` is None when it failed."""
        self.outstanding[key] = max(0, self.outstanding.get(key, 1) - 1)
        if elapsed_ms is not None:
            old = self.latency_ms.get(key)
            self.latency_ms[key] = elapsed_ms if old is None else old + self._alpha * (elapsed_ms - old)


def choose(candidates: Sequence[Instance], load: Load) -> Choice:
    """Least outstanding requests, then lowest latency, then name; `candidates` must not be empty."""
    if not candidates:
        raise ValueError("choose() needs at least one candidate")
    ranked = sorted(
        candidates,
        key=lambda i: (load.outstanding.get(i.key, 0), load.latency_ms.get(i.key, 0.0), i.instance),
    )
    best = ranked[0]
    others = tuple(f"{i.name}/{i.instance}" for i in ranked[1:])
    if not others:
        reason = "only healthy instance"
    else:
        reason = f"least outstanding ({load.outstanding.get(best.key, 0)} in flight)"
    return Choice(instance=best, alternatives=others, reason=reason)


def retry_safe(tool: str, tool_info: Sequence[Mapping[str, Any]]) -> bool:
    """True when the tool's MCP annotations say a repeat cannot harm: read-only or idempotent."""
    for info in tool_info:
        if info.get("name") == tool:
            annotations: Mapping[str, Any] = info.get("annotations") or {}
            return bool(annotations.get("readOnlyHint") or annotations.get("idempotentHint"))
    return False


@final
class RetryBudget:
    """Retries allowed as a fraction of calls (plus a small floor), so a failing peer cannot cause a storm."""

    def __init__(self, ratio: float = 0.2, floor: float = 10.0, cap: float = 100.0) -> None:
        self._ratio = ratio
        self._cap = cap
        self._tokens = floor

    def on_call(self) -> None:
        """Each first attempt earns a fraction of a retry."""
        self._tokens = min(self._cap, self._tokens + self._ratio)

    def try_spend(self) -> bool:
        """Take one retry if the budget has one."""
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
