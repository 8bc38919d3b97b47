"""Wire models: the JSON the registry, the tracer, the CLI and agents exchange, and the `_meta` keys of hops.

Pydantic models, and the keys the mesh writes into MCP messages (`_meta`, input-required rounds) as
named constants; the registry's HTTP contract lives here so that client and service share one
definition (DESIGN §1). The MCP SDK's own keys are imported from `mcp_types`, not repeated here.
No I/O, no logic beyond validation.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

__all__ = [
    "APPROVAL_INPUT_KEY",
    "APPROVAL_META_KEY",
    "ASK_INPUT_KEY",
    "BAGGAGE_META_KEY",
    "BUDGET_META_KEY",
    "DATA_CLASS_BAGGAGE",
    "ERROR_META_KEY",
    "GOVERNANCE_META_KEY",
    "INTERACTIVE_META_KEY",
    "LEASE_FLOOR_HEADER",
    "PERSON_META_KEY",
    "PROGRESS_TOKEN_META_KEY",
    "SAMPLING_META_KEY",
    "TRACEPARENT_META_KEY",
    "TRACESTATE_META_KEY",
    "AgentRecord",
    "Approval",
    "ApprovalDecision",
    "ApprovalRequest",
    "ApprovalStatus",
    "AuditHead",
    "AuditRecord",
    "Decider",
    "Decision",
    "ErrorBody",
    "Governance",
    "PeerView",
    "Registration",
    "SpanEventRecord",
    "SpanKind",
    "SpanRecord",
    "SpanStatus",
    "ToolInfo",
    "TraceNode",
    "TraceRoot",
    "TraceSummary",
    "TraceTree",
]


# -- keys in MCP messages ------------------------------------------------------------------------
# Changing a value breaks every agent of an older version on the same mesh: they are wire contract.

GOVERNANCE_META_KEY: Final = "agentplex/governance"
"""`tools/list` result `_meta` key where a mesh agent states its governance metadata, for mDNS-only peers."""
APPROVAL_META_KEY: Final = "agentplex/approval"
"""Tool `_meta` flag (in `tools/list`): the tool pauses for a person's approval before it runs (DESIGN §6)."""
APPROVAL_INPUT_KEY: Final = APPROVAL_META_KEY
"""Prefix of an approval question's key in an input-required round, `agentplex/approval/<agent>`."""
ASK_INPUT_KEY: Final = "agentplex/ask"
"""Prefix of a tool's own question's key in an input-required round, `agentplex/ask/<agent>/<n>`."""
INTERACTIVE_META_KEY: Final = "agentplex/interactive"
"""Request `_meta` flag: a person can answer elicitations at the origin of this call chain."""
SAMPLING_META_KEY: Final = "agentplex/sampling"
"""Request `_meta` flag: the client at the origin of this call chain answers `sampling/createMessage`."""
ERROR_META_KEY: Final = "agentplex/error"
"""Result `_meta` key (or JSON-RPC error `data` key) naming a mesh error raised on the callee's side."""
BUDGET_META_KEY: Final = "agentplex/budget_ms"
"""Request `_meta` key: the caller's remaining time budget in milliseconds, the callee's deadline."""
PERSON_META_KEY: Final = "agentplex/person"
"""Request `_meta` key: `{"name": ..., "groups": [...]}`, the person an agent's onward call runs for."""
DATA_CLASS_BAGGAGE: Final = "mesh.data_class"
"""The W3C baggage entry carrying the classification of the data travelling with a call."""
TRACEPARENT_META_KEY: Final = "traceparent"
"""Request `_meta` key of the W3C trace context's parent, as OpenTelemetry's propagator writes it."""
TRACESTATE_META_KEY: Final = "tracestate"
"""Request `_meta` key of the W3C trace state, beside `traceparent` when the parent has one."""
BAGGAGE_META_KEY: Final = "baggage"
"""Request `_meta` key of the W3C baggage (the data class among its entries)."""
PROGRESS_TOKEN_META_KEY: Final = "progressToken"
"""Request `_meta` key by which MCP asks for progress notifications (the SDK names no constant for it)."""
LEASE_FLOOR_HEADER: Final = "Mesh-Lease-Floor"
"""HTTP header of a live registry listing (200 or 304): every record listed is leased at least until then (epoch s)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# -- inventory ---------------------------------------------------------------------------------


class Governance(_Model):
    """The asset-inventory facts about an agent; any extra key is kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    owner: str | None = None
    jurisdiction: str | None = None
    data_class: str | None = None
    description: str | None = None


class ToolInfo(_Model):
    """One tool an agent serves, as the inventory and the gateway see it."""

    name: str
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=dict)
    output_schema: dict[str, Any] | None = None
    annotations: dict[str, Any] = Field(default_factory=dict)
    approval: bool = False


class Registration(_Model):
    """What an agent sends the registry to (re)register; the lease starts then."""

    name: str
    instance: str
    url: str
    version: str = ""
    tools: list[ToolInfo] = Field(default_factory=list)
    metadata: Governance = Field(default_factory=Governance)
    lease_seconds: float = 10.0
    authenticated: bool = True


class AgentRecord(Registration):
    """A registration as the registry keeps it: when first and last seen, when the lease ends."""

    first_seen: float
    last_seen: float
    expires_at: float


class ErrorBody(_Model):
    """The body of every error answer of the registry's HTTP API: one line saying what is wrong."""

    error: str


class PeerView(_Model):
    """One instance in `mesh ls --json` (DESIGN §4)."""

    name: str
    instance: str
    url: str
    tools: list[str]
    sources: list[Literal["mdns", "registry"]]
    healthy: bool
    metadata: dict[str, Any] = Field(default_factory=dict)
    verified: bool = True
    reason: str | None = None
    spans: dict[str, int] | None = None
    """The instance's span export counters from its /healthz (exported, spooled, dropped...), when it answered."""

    @computed_field
    @property
    def governed(self) -> bool:
        """False when nobody owns it (no `owner` in its metadata): `mesh ls` and the web page flag it ungoverned."""
        return bool(self.metadata.get("owner"))


# -- traces ------------------------------------------------------------------------------------

SpanKind = Literal["internal", "server", "client", "producer", "consumer"]
SpanStatus = Literal["unset", "ok", "error"]


class SpanEventRecord(_Model):
    """A span event as stored (decisions are events named `mesh.decision`)."""

    name: str
    time_ns: int
    attributes: dict[str, Any] = Field(default_factory=dict)


class SpanRecord(_Model):
    """One span as the tracer stores it: OTLP flattened, `agent` is the resource's service.name."""

    trace_id: str
    span_id: str
    parent_id: str | None = None
    name: str
    kind: SpanKind = "internal"
    agent: str = "unknown"
    instance: str | None = None
    start_ns: int
    end_ns: int
    status: SpanStatus = "unset"
    status_message: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    events: list[SpanEventRecord] = Field(default_factory=list)


class Decision(_Model):
    """A `mesh.decision` event, lifted out of the span for people to read."""

    kind: str
    choice: str | None = None
    reason: str | None = None
    confidence: float | None = None
    alternatives: list[str] = Field(default_factory=list)
    time: float
    attributes: dict[str, Any] = Field(default_factory=dict)


class TraceNode(_Model):
    """One span in a stitched trace (DESIGN §4 `NODE`)."""

    span_id: str
    parent_id: str | None
    agent: str
    name: str
    kind: SpanKind
    start: float
    end: float
    status: SpanStatus
    attributes: dict[str, Any]
    decisions: list[Decision]
    children: list[TraceNode]
    status_message: str | None = None
    orphan: bool = False
    skew_ms: float = 0.0


class TraceTree(_Model):
    """`mesh traces show --json`: the stitched decision trace."""

    trace_id: str
    complete: bool
    root: TraceNode
    incomplete_reasons: list[str] = Field(default_factory=list)
    span_count: int = 0
    denied: int = 0
    """Calls refused beside the root (a policy's deny, a person's no); every span's while the root is missing."""
    errors: int = 0
    """Other spans that failed beside the root; every span's while the root is missing."""
    in_progress: bool = False
    """Incomplete, but its latest span arrived moments ago: more are probably on their way."""


class TraceRoot(_Model):
    """The root call of a trace: which agent, which tool."""

    agent: str
    tool: str | None


class TraceSummary(_Model):
    """One row of `mesh traces ls --json`."""

    trace_id: str
    root: TraceRoot
    agents: list[str]
    span_count: int
    start: float
    duration_ms: float
    status: SpanStatus
    """The root span's outcome: `ok` (OpenTelemetry's `unset` too) or `error`; what failed beside it is counted."""
    denied: int = 0
    """Spans beside the root where a call was refused: a policy's deny, a person's no (`mesh.tracing.outcome`)."""
    errors: int = 0
    """Other spans beside the root that failed (a failure the caller may well have handled)."""
    in_progress: bool = False
    """Its root span has not arrived, and its latest span arrived moments ago: the call is probably still running."""


# -- approvals ---------------------------------------------------------------------------------

ApprovalStatus = Literal["pending", "approved", "denied", "expired", "cancelled"]
"""`cancelled`: the call stopped waiting (refused, its budget spent, the agent gone); nothing will run."""


class Decider(_Model):
    """Who answered an approval: a person (from their token, never from what they say) and their groups."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    person: str
    groups: list[str] = Field(default_factory=list[str])

    def __str__(self) -> str:
        return f"{self.person} ({', '.join(self.groups)})" if self.groups else self.person


class Approval(_Model):
    """A human decision bound to one exact call (`mesh approvals ls --json`)."""

    id: str
    agent: str
    tool: str
    caller: str
    arguments_digest: str
    requested_at: float
    expires_at: float
    status: ApprovalStatus
    trace_id: str | None = None
    decided_by: Decider | None = None
    decided_at: float | None = None
    reason: str | None = None
    requested_by: str | None = None
    """The person on whose behalf the call runs, if any: they may not decide it."""
    approvers: list[str] = Field(default_factory=list[str])
    """Groups whose members may decide (the policy's `@approval("finance")`); empty: any approver or admin."""
    arguments: dict[str, Any] | None = None
    """The call's arguments, secret fields masked; shown to approvers only (None for anyone else)."""


class ApprovalRequest(_Model):
    """What an agent files: the exact call, why, and until when a human may answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str
    tool: str
    caller: str
    arguments_digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    expires_at: float
    trace_id: str | None = None
    summary: str | None = Field(default=None, max_length=2000)
    status: ApprovalStatus = "pending"
    """`pending` to ask; an already decided status records an answer given elsewhere (elicitation)."""
    decided_by: Decider | None = None
    reason: str | None = None
    requested_by: str | None = None
    approvers: list[str] = Field(default_factory=list[str])
    arguments: dict[str, Any] | None = None
    """The call's arguments with secret fields already masked by the agent (`"***"`)."""


class ApprovalDecision(_Model):
    """A person's answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decision: Literal["approve", "deny"]
    reason: str | None = Field(default=None, max_length=500)


# -- governance record -------------------------------------------------------------------------


class AuditRecord(_Model):
    """One entry of the governance record (`mesh audit`), chained to the one before by a keyed MAC."""

    seq: int
    at: float
    """When the registry appended it (epoch seconds)."""
    kind: str
    """What it records: "approval", "decision" (a policy verdict or a denied call from a span), ..."""
    record: dict[str, Any]
    prev: str
    """The MAC of entry `seq - 1` (a fixed genesis value for the first)."""
    mac: str
    """HMAC of this entry and `prev` under the mesh's audit key (`mesh.audit`)."""


class AuditHead(_Model):
    """The registry's last entry, MACed apart from the chain, so that a cut-off end is found."""

    seq: int
    mac: str
    sig: str
