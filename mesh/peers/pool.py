"""`PeerPool`: calls another agent's tool, peer to peer, with policy, deadlines, retries and failover.

Owns the caller's side of a hop: resolve the agent in the directory, check policy, pick an
instance, send one lean MCP request (`HopClient`), and record every choice as a decision on
the call's client span; the same for a read-only request (`resources/read`, `prompts/get`). One
pooled HTTP client serves every instance. Progress and log messages the callee sends while it runs
go to the caller's own caller, when it asked (`mesh.peers.notices`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, final

import anyio
import httpx2
from opentelemetry import baggage, context, propagate, trace

from mesh.decisions import record_decision
from mesh.errors import (
    DeadlineExceeded,
    DiscoveryError,
    PeerError,
    PeerUnavailable,
    PolicyDenied,
)
from mesh.identity import Credential, MeshKeys, Principal, TokenSource
from mesh.peers.budget import current_deadline, remaining
from mesh.peers.directory import Instance, PeerDirectory
from mesh.peers.failures import NotSent
from mesh.peers.hop import HopClient, HopResult
from mesh.peers.notices import ask_for_notices, sink_var
from mesh.peers.person import Person, person_var
from mesh.peers.questions import sampling_var
from mesh.peers.refusals import refusal
from mesh.peers.rounds import InputNeeded, interactive_var, relay_var
from mesh.peers.routing import Load, RetryBudget, choose, retry_safe
from mesh.policy import CallFacts, Policy
from mesh.tls import client_context
from mesh.tracing.stitch import SENT_ATTRIBUTE
from mesh.wire import (
    BUDGET_META_KEY,
    DATA_CLASS_BAGGAGE,
    INTERACTIVE_META_KEY,
    PERSON_META_KEY,
    SAMPLING_META_KEY,
)

__all__ = ["PeerPool", "stricter"]

log = logging.getLogger(__name__)
SCOPE = "agentplex"
"""The instrumentation scope of the client spans a pool makes."""


_ORDER = ("public", "internal", "confidential", "restricted", "secret")


def stricter(a: str | None, b: str | None) -> str | None:
    """The stricter of two data classifications (unknown ones rank as confidential)."""
    if not a or not b:
        return a or b
    rank = {name: i for i, name in enumerate(_ORDER)}
    return a if rank.get(a, 2) >= rank.get(b, 2) else b


@final
class PeerPool:
    """The mesh as a caller sees it: `await pool.call("crm", "lookup", {...})`."""

    def __init__(
        self,
        *,
        me: str,
        keys: MeshKeys,
        directory: PeerDirectory,
        policy: Policy | None = None,
        metadata: Mapping[str, Any] | None = None,
        default_timeout: float = 30.0,
        max_attempts: int = 3,
        refresh: Callable[[str | None, str], Awaitable[None]] | None = None,
        credential: Credential | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.me = me
        self.directory = directory
        self.policy = policy or Policy.allow_all()
        self.metadata = dict(metadata or {})
        self.default_timeout = default_timeout
        self.max_attempts = max_attempts
        self.load = Load()
        self.attempts: Counter[tuple[str, str]] = Counter()
        """Requests sent, per (agent, instance)."""
        self.after_failure: Counter[tuple[str, str]] = Counter()
        """Requests sent to an instance after it had failed (circuit breaking keeps this at 0)."""
        self._failed: set[tuple[str, str]] = set()
        self._refresh = refresh
        self.credential: Credential = credential or TokenSource(keys, Principal(me, "agent"))
        """Where this pool's bearer tokens come from: minted as agent `me`, or a person's given token."""
        self._retries = RetryBudget()
        self._hops: dict[str, HopClient] = {}
        self._http: httpx2.AsyncClient | None = None
        self._transport = transport
        """Where requests go: None for the network; tests pass an in-process one (`mesh.testing`)."""
        self._entered = False

    async def __aenter__(self) -> PeerPool:
        if self._entered:
            raise RuntimeError("PeerPool is already open; a pool is entered once")
        self._entered = True
        self._http = httpx2.AsyncClient(
            transport=self._transport,
            limits=httpx2.Limits(max_connections=256, max_keepalive_connections=64, keepalive_expiry=30.0),
            timeout=httpx2.Timeout(30.0),
            verify=client_context(),
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._http is not None:
            with anyio.CancelScope(shield=True):
                await self._http.aclose()
            self._http = None

    async def call(
        self,
        agent: str,
        tool: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Call `tool` on `agent`; returns its structured result, raises only MeshError subclasses."""
        return await self._call(agent, tool, arguments, timeout, by_tool=False)

    async def call_tool_anywhere(
        self, tool: str, arguments: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Call `tool` on whichever agent offers it (find by capability)."""
        return await self._call(None, tool, arguments, timeout, by_tool=True)

    async def _call(
        self, agent: str | None, tool: str, arguments: Mapping[str, Any] | None, timeout: float | None, *, by_tool: bool
    ) -> Any:
        deadline = current_deadline(timeout, self.default_timeout)
        target = agent or "*"
        attributes = {
            "mcp.method.name": "tools/call",
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "mesh.peer.agent": target,
            SENT_ATTRIBUTE: False,  # until a request actually goes out
        }
        # The process's tracer, looked up at each call: one taken at import would be OpenTelemetry's
        # `ProxyTracer` (no provider is set that early), whose indirection every call would pay.
        tracer = trace.get_tracer_provider().get_tracer(SCOPE)
        with tracer.start_as_current_span(
            f"tools/call {target}.{tool}", kind=trace.SpanKind.CLIENT, attributes=attributes
        ) as span:
            candidates = await self._candidates(agent, tool, f"call {target}.{tool}", span, by_tool=by_tool)
            name = candidates[0].name
            span.set_attribute("mesh.peer.agent", name)
            relay = relay_var.get()
            answers = relay if relay is not None and (relay.agent, relay.tool) == (name, tool) else None

            async def send(hop: HopClient, meta: dict[str, Any], left: float) -> HopResult:
                on_notice = ask_for_notices(meta, sink_var.get())
                return await hop.call_tool(
                    tool,
                    arguments,
                    meta=meta,
                    timeout=left,
                    input_responses=answers.responses if answers else None,
                    request_state=answers.state if answers else None,
                    on_notice=on_notice,
                )

            safe = retry_safe(tool, candidates[0].tool_info)
            pinned = (answers.instance or "") if answers is not None else None
            result, answered = await self._governed(
                name, tool, "call", candidates, deadline, span, send, safe=safe, pinned=pinned
            )
            if result.input_required:
                record_decision("approval", choice="asked", reason=f"{name}.{tool} needs a person's answer", span=span)
                raise InputNeeded(
                    name,
                    tool,
                    result.raw.get("inputRequests") or {},
                    result.raw.get("requestState"),
                    answered.instance,
                )
            if result.is_error:
                span.set_status(trace.StatusCode.ERROR, result.text[:200])
                raise refusal(result, name, tool)
            return result.value

    async def request(
        self,
        agent: str,
        method: str,
        params: Mapping[str, Any],
        *,
        target: str,
        action: str,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """One read-only request to `agent` (`resources/read`, `prompts/get`); its result, or a MeshError.

        Governed and routed as a tool call is: the caller's end of the policy judges `action` on `target`
        (the URI or prompt name), and, being read-only, it moves on to another instance when one fails.
        """
        deadline = current_deadline(timeout, self.default_timeout)
        attributes = {
            "mcp.method.name": method,
            "mesh.peer.agent": agent,
            _TARGET_ATTRIBUTES.get(action, "mesh.target"): target,
            SENT_ATTRIBUTE: False,
        }
        tracer = trace.get_tracer_provider().get_tracer(SCOPE)
        with tracer.start_as_current_span(
            f"{method} {agent}", kind=trace.SpanKind.CLIENT, attributes=attributes
        ) as span:
            candidates = await self._candidates(agent, target, f"{_VERBS.get(action, action)} {target!r}", span)

            async def send(hop: HopClient, meta: dict[str, Any], left: float) -> HopResult:
                return HopResult(
                    await hop.request(method, {**params, "_meta": hop.envelope(meta)}, name=target, timeout=left)
                )

            result, _ = await self._governed(agent, target, action, candidates, deadline, span, send, safe=True)
            return result.raw

    async def _candidates(
        self, agent: str | None, tool: str, doing: str, span: trace.Span, *, by_tool: bool = False
    ) -> list[Instance]:
        """The instances of `agent` (or, `by_tool`, of any agent offering `tool`); DiscoveryError when none."""
        target = agent or "*"
        candidates = self.directory.offering(tool) if by_tool else self.directory.instances(target)
        if not candidates and self._refresh is not None:
            # Announced but not yet vouched for: ask the instances directly before giving up.
            await self._refresh(agent, tool)
            candidates = self.directory.offering(tool) if by_tool else self.directory.instances(target)
        if not candidates:
            why = "no agent offers that tool" if by_tool else _why_none(target, self.directory.all())
            record_decision("route", choice="none", reason=why, span=span)
            raise DiscoveryError(f"cannot {doing}: {why}")
        return candidates

    async def _governed(
        self,
        name: str,
        target: str,
        action: str,
        candidates: list[Instance],
        deadline: float,
        span: trace.Span,
        send: _Send,
        *,
        safe: bool,
        pinned: str | None = None,
    ) -> tuple[HopResult, Instance]:
        """The caller's end of the policy, then the attempts, with the data class travelling as baggage."""
        data_class = stricter(_baggage_class(), self.metadata.get("data_class"))
        self._check_policy(name, candidates[0], target, data_class, span, action)
        ctx = baggage.set_baggage(DATA_CLASS_BAGGAGE, data_class) if data_class else None
        token = context.attach(ctx) if ctx is not None else None
        try:
            return await self._attempts(name, target, candidates, deadline, span, send, safe=safe, pinned=pinned)
        finally:
            if token is not None:
                context.detach(token)

    def _check_policy(
        self, name: str, inst: Instance, tool: str, data_class: str | None, span: trace.Span, action: str = "call"
    ) -> None:
        person = person_var.get()
        if person is None and self.credential.principal.person:
            mine = self.credential.principal
            person = Person(mine.person or "", mine.groups)
        facts = CallFacts.of(
            self.me,
            self.metadata,
            name,
            inst.metadata,
            tool,
            data_class,
            person=person.name if person else None,
            groups=person.groups if person else (),
            action=action,
        )
        verdict = self.policy.evaluate(facts)
        record_decision(
            "policy",
            choice=verdict.verdict,
            reason=verdict.reason,
            alternatives=("allow", "deny", "approval"),
            attributes={"mesh.policy.side": "caller", "mesh.policy.ids": verdict.policies},
            span=span,
        )
        if verdict.verdict == "deny":
            span.set_status(trace.StatusCode.ERROR, verdict.reason)
            doing = f"call {name}.{tool}" if action == "call" else f"{_VERBS.get(action, action)} {name} {tool!r}"
            raise PolicyDenied(f"{self.me} may not {doing}: {verdict.reason}", policy=",".join(verdict.policies))
        # An "approval" verdict goes ahead: the callee enforces it and asks the person (DESIGN §6).

    async def _attempts(
        self,
        name: str,
        tool: str,
        candidates: list[Instance],
        deadline: float,
        span: trace.Span,
        send: _Send,
        *,
        safe: bool,
        pinned: str | None,
    ) -> tuple[HopResult, Instance]:
        """Send to one instance after another until one answers; `pinned` (not None) carries answers: no others."""
        if pinned:
            # An answer is honoured once, by the instance that asked: send it there or nowhere.
            candidates = [c for c in self.directory.instances(name) if c.instance == pinned]
        self._retries.on_call()
        tried: set[tuple[str, str]] = set()
        last: Exception | None = None
        for attempt in range(1, self.max_attempts + 1):
            pool = [c for c in candidates if c.key not in tried] or [
                c for c in self.directory.instances(name) if c.key not in tried and pinned is None
            ]
            if not pool:
                break
            choice = choose(pool, self.load)
            inst = choice.instance
            tried.add(inst.key)
            record_decision(
                "route", choice=inst.instance, alternatives=choice.alternatives, reason=choice.reason, span=span
            )
            left = remaining(deadline)
            if left <= 0:
                break
            meta: dict[str, Any] = {BUDGET_META_KEY: int(left * 1000)}
            if interactive_var.get():
                meta[INTERACTIVE_META_KEY] = True
            if sampling_var.get():
                meta[SAMPLING_META_KEY] = True
            person = person_var.get()
            if person is not None:
                meta[PERSON_META_KEY] = person.meta()
            propagate.inject(meta)
            hop = self.hop(inst)
            span.set_attribute(SENT_ATTRIBUTE, True)
            self.attempts[inst.key] += 1
            if inst.key in self._failed:
                self.after_failure[inst.key] += 1
            self.load.started(inst.key)
            started = time.perf_counter()
            try:
                with anyio.fail_after(left):
                    result = await send(hop, meta, left)
            except NotSent as exc:
                self.load.finished(inst.key, None)
                self._mark_failed(inst)
                last = exc
                record_decision("fallback", choice="next instance", reason=f"{inst.instance}: {exc}", span=span)
                continue
            except (TimeoutError, DeadlineExceeded) as exc:
                self.load.finished(inst.key, None)
                self._mark_failed(inst)
                span.set_status(trace.StatusCode.ERROR, "deadline exceeded")
                raise DeadlineExceeded(
                    f"{name}.{tool} on {inst.instance} gave no answer within its deadline", agent=name, tool=tool
                ) from exc
            except PeerUnavailable as exc:
                self.load.finished(inst.key, None)
                self._mark_failed(inst)
                last = exc
                if safe and attempt < self.max_attempts and self._retries.try_spend():
                    record_decision(
                        "retry", choice="another instance", reason=f"{tool} is retry-safe; {exc}", span=span
                    )
                    continue
                span.set_status(trace.StatusCode.ERROR, str(exc))
                raise
            except PeerError:  # the instance answered with an error (a bad URI, say): not its failure
                self.load.finished(inst.key, (time.perf_counter() - started) * 1000)
                raise
            self.load.finished(inst.key, (time.perf_counter() - started) * 1000)
            self._failed.discard(inst.key)
            self.directory.succeeded(*inst.key)
            span.set_attribute("mesh.peer.instance", inst.instance)
            return result, inst
        span.set_status(trace.StatusCode.ERROR, str(last) if last else "no instance left")
        if remaining(deadline) <= 0:
            raise DeadlineExceeded(
                f"{name}.{tool}: the deadline passed before any instance answered", agent=name, tool=tool
            )
        raise PeerUnavailable(f"no instance of {name} could take {tool!r}: {last}", agent=name, tool=tool)

    def _mark_failed(self, inst: Instance) -> None:
        self._failed.add(inst.key)
        self.directory.failed(*inst.key)

    def hop(self, inst: Instance) -> HopClient:
        """The lean client for `inst` (one per URL, sharing the pool's connections)."""
        hop = self._hops.get(inst.url)
        if hop is None:
            if self._http is None:
                raise RuntimeError("PeerPool used outside `async with`")
            audience = inst.name
            hop = HopClient(
                inst.url,
                http=self._http,
                token=(lambda: self.credential.token(audience)) if inst.auth else None,
                agent=inst.name,
                client_name=self.me,
            )
            self._hops[inst.url] = hop
        return hop


_Send = Callable[[HopClient, dict[str, Any], float], Awaitable[HopResult]]
"""Sends one attempt's request to an instance: its `_meta` (budget, trace, person) and its time left."""
_VERBS = {"read_resource": "read", "get_prompt": "get the prompt"}
_TARGET_ATTRIBUTES = {"read_resource": "mcp.resource.uri", "get_prompt": "gen_ai.prompt.name"}


def _baggage_class() -> str | None:
    value = baggage.get_baggage(DATA_CLASS_BAGGAGE)
    return str(value) if value else None


def _why_none(name: str, known: list[Instance]) -> str:
    mine = [i for i in known if i.name == name]
    if not mine:
        return f"no agent named {name!r} is known in this mesh"
    reasons = {i.reason for i in mine if i.reason and not i.verified}
    if reasons:
        return f"no trusted instance of {name!r} ({'; '.join(sorted(reasons))})"
    return f"no healthy instance of {name!r} ({len(mine)} known, none answering)"
