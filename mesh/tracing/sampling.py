"""The mesh's default sampling: every trace, except one that a mesh probe would start.

Children follow their parent's decision; a root span is sampled unless it is one of the MCP
methods the mesh sends to keep itself informed (`HOUSEKEEPING`): a trace per probe would bury the
work. The lean provider inlines this rule; `MeshSampler` is the same rule as an SDK `Sampler`, for
the stock provider (`MESH_TRACING=sdk`). OTEL_TRACES_SAMPLER replaces both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes

__all__ = ["HOUSEKEEPING", "MeshSampler", "is_housekeeping"]

HOUSEKEEPING: Final = frozenset({"tools/list", "server/discover", "initialize", "ping", "notifications/initialized"})
"""MCP methods that, as the root of a trace, are the mesh keeping itself informed (probes), not work."""


def is_housekeeping(attributes: Attributes) -> bool:
    """True when a span's attributes name a housekeeping MCP method."""
    return bool(attributes) and attributes.get("mcp.method.name") in HOUSEKEEPING  # pyright: ignore[reportOptionalMemberAccess]


@final
class MeshSampler(Sampler):
    """The parent's decision for a child; for a root, sampled unless a housekeeping method."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        """Sample as the lean provider does (`ParentBased`'s rule for children, as the SDK's default)."""
        parent = trace.get_current_span(parent_context).get_span_context()
        if parent.is_valid:
            sampled, state = parent.trace_flags.sampled, parent.trace_state
        else:
            sampled, state = not is_housekeeping(attributes), None
        if sampled:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, state)
        return SamplingResult(Decision.DROP, None, state)

    def get_description(self) -> str:
        """The sampler's name, as OpenTelemetry samplers describe themselves."""
        return "MeshSampler{ParentBased, root: all but housekeeping}"
