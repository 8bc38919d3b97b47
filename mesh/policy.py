"""Policy: Cedar decides whether one agent may call another's tool, read its resource or get its prompt (DESIGN §6).

The Cedar model: principal `Agent::"<caller>"` and resource `Agent::"<callee>"`, each with its
metadata as string attributes (`name`, `owner`, `jurisdiction`, `data_class` always present, ""
when unknown); action `Action::"call"` (tools/call), `Action::"read_resource"` (resources/read) or
`Action::"get_prompt"` (prompts/get); context `{tool, uri, prompt, data_class, person, groups}` (the
target in the key its action names, "" in the others; the call's classification, and the person it
runs for with their groups). Allow -> "allow"; a deny whose
determining policies all carry `@approval` -> "approval" (`@approval("finance")` names the group
whose members decide); any other deny (no permit matched included) -> "deny". Owns evaluation
only; enforcing a verdict, asking a human and recording the decision event belong to the runtime.
See docs/policy.md.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, TypeAlias, final

import cedarpy

from mesh.errors import PolicyError
from mesh.text import one_line

__all__ = ["CallFacts", "Policy", "PolicyDecision", "Verdict", "policy_from_env"]

Verdict: TypeAlias = Literal["allow", "deny", "approval"]

_APPROVAL: Final = "approval"  # `@approval forbid(...)`: only with a human's approval
_CACHE_SIZE: Final = 4096
_ALWAYS_PRESENT: Final = ("owner", "jurisdiction", "data_class")
_TARGET_KEY: Final = {"call": "tool", "read_resource": "uri", "get_prompt": "prompt"}
"""Each action, and the context key that names its target (the others are "")."""
_VERB: Final = {"call": "call", "read_resource": "read", "get_prompt": "get the prompt"}

_log = logging.getLogger(__name__)

_Meta: TypeAlias = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class CallFacts:
    """Everything a policy may look at for one call: who, whom, which tool (or resource, or prompt), what data."""

    caller: str
    caller_meta: tuple[tuple[str, str], ...]
    callee: str
    callee_meta: tuple[tuple[str, str], ...]
    tool: str
    """The action's target: a tool's name, a resource's URI (`read_resource`) or a prompt's name (`get_prompt`)."""
    data_class: str = ""
    person: str = ""
    groups: tuple[str, ...] = ()
    action: str = "call"

    @classmethod
    def of(
        cls,
        caller: str,
        caller_meta: Mapping[str, object],
        callee: str,
        callee_meta: Mapping[str, object],
        tool: str,
        data_class: str | None = None,
        *,
        person: str | None = None,
        groups: tuple[str, ...] = (),
        action: str = "call",
    ) -> CallFacts:
        """Facts from raw metadata, keeping str, int and bool values as strings (bools as "true"/"false")."""
        if action not in _TARGET_KEY:
            raise ValueError(f"unknown policy action {action!r}; one of {', '.join(_TARGET_KEY)}")
        return cls(
            caller, _meta(caller_meta), callee, _meta(callee_meta), tool, data_class or "", person or "", groups, action
        )


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """A verdict, the policies that determined it, and a one-line reason for humans."""

    verdict: Verdict
    policies: tuple[str, ...]
    reason: str
    approvers: tuple[str, ...] = ()
    """For "approval": the groups whose members may decide (empty: any approver, or the origin's person)."""


@final
class Policy:
    """A parsed Cedar policy set with a bounded decision cache; or allow-all; or broken (denies all)."""

    __slots__ = ("_approval", "_cache", "_names", "_policies", "broken", "source")
    _approval: dict[str, str]

    def __init__(
        self,
        *,
        source: str,
        policies: cedarpy.PolicySet | None = None,
        names: Mapping[str, str] | None = None,
        approval: Mapping[str, str] | None = None,
        broken: str | None = None,
    ) -> None:
        """Use allow_all(), from_text() or load()."""
        self.source = source
        self.broken = broken
        self._policies = policies
        self._names = dict(names or {})
        self._approval = dict(approval or {})
        self._cache: dict[CallFacts, PolicyDecision] = {}

    @classmethod
    def allow_all(cls) -> Policy:
        """The policy when none is configured: every call is allowed."""
        return cls(source="<allow-all>")

    @classmethod
    def from_text(cls, text: str, *, source: str = "<policy>") -> Policy:
        """Parse Cedar `text` once; PolicyError (one line) if it does not parse."""
        try:
            policies = cedarpy.PolicySet.from_str(text)
            parsed = json.loads(cedarpy.policies_to_json_str(text))
        except ValueError as exc:
            raise PolicyError(f"{source}: {one_line(str(exc))}") from exc
        names: dict[str, str] = {}
        approval: dict[str, str] = {}
        for policy_id, policy in parsed.get("staticPolicies", {}).items():
            annotations = policy.get("annotations") or {}
            names[policy_id] = annotations.get("id") or policy_id
            if _APPROVAL in annotations:
                approval[policy_id] = str(annotations[_APPROVAL] or "").strip()
        return cls(source=source, policies=policies, names=names, approval=approval)

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """The policy in file `path`; never raises: an unusable file gives a Policy that denies every call."""
        source = str(path)
        try:
            return cls.from_text(Path(path).read_text(encoding="utf-8"), source=source)
        except PolicyError as exc:
            cause = str(exc).removeprefix(f"{source}: ")
        except (OSError, UnicodeDecodeError) as exc:
            cause = f"cannot read it: {getattr(exc, 'strerror', None) or exc}"
        _log.error("policy file %s is broken, every call will be denied: %s", source, cause)
        return cls(source=source, broken=cause)

    def __repr__(self) -> str:
        state = f", broken={self.broken!r}" if self.broken else ""
        return f"Policy(source={self.source!r}{state})"

    def evaluate(self, facts: CallFacts) -> PolicyDecision:
        """The verdict for `facts`, from the cache when this exact call was decided before."""
        decision = self._cache.get(facts)
        if decision is None:
            decision = self._decide(facts)
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)), None)
            self._cache[facts] = decision
        return decision

    def _decide(self, facts: CallFacts) -> PolicyDecision:
        if self.broken is not None:
            return PolicyDecision("deny", (), f"policy file {self.source} is broken: {self.broken}")
        if self._policies is None:
            return PolicyDecision("allow", (), "no policy configured: every call is allowed")
        request = {
            "principal": {"type": "Agent", "id": facts.caller},
            "action": {"type": "Action", "id": facts.action},
            "resource": {"type": "Agent", "id": facts.callee},
            "context": {
                **dict.fromkeys(_TARGET_KEY.values(), ""),
                _TARGET_KEY[facts.action]: facts.tool,
                "data_class": facts.data_class,
                "person": facts.person,
                "groups": list(facts.groups),
            },
        }
        entities = {facts.callee: _entity(facts.callee, facts.callee_meta)}
        entities[facts.caller] = _entity(facts.caller, facts.caller_meta)
        try:
            result = cedarpy.is_authorized(request, self._policies, json.dumps(list(entities.values())))
        except ValueError as exc:  # fail closed: a request cedar cannot even build is denied
            return PolicyDecision("deny", (), f"policy evaluation failed: {one_line(str(exc))}")
        determining = [str(policy_id) for policy_id in result.diagnostics.reasons]
        named = tuple(self._names.get(policy_id, policy_id) for policy_id in determining)
        approvers: tuple[str, ...] = ()
        if result.allowed:
            verdict: Verdict = "allow"
            reason = f"allowed by {_listing(named)}"
        elif not determining:
            verdict = "deny"
            reason = f"no policy permits '{facts.caller}' to {_VERB[facts.action]} '{facts.tool}' on '{facts.callee}'"
        elif all(policy_id in self._approval for policy_id in determining):
            verdict = "approval"
            approvers = tuple(sorted({self._approval[p] for p in determining} - {""}))
            who = f"a member of {' or '.join(approvers)}" if approvers else "a human"
            reason = f"needs {who}'s approval by {_listing(named)}"
        else:
            verdict = "deny"
            hard = [self._names.get(p, p) for p in determining if p not in self._approval]
            reason = f"denied by {_listing(hard)}"
        errors = [str(error) for error in result.diagnostics.errors]
        if errors:
            reason += f" ({len(errors)} policy evaluation error(s), first: {one_line(errors[0])})"
        return PolicyDecision(verdict, named, reason, approvers if verdict == "approval" else ())


def policy_from_env(explicit: str | Path | None = None) -> Policy:
    """The policy in `explicit` (`--policy FILE`), else in `MESH_POLICY`, else allow-all."""
    path = explicit or os.environ.get("MESH_POLICY")
    return Policy.load(path) if path else Policy.allow_all()


def _meta(raw: Mapping[str, object]) -> _Meta:
    kept: dict[str, str] = {}
    for key, value in raw.items():
        if isinstance(value, bool):
            kept[key] = "true" if value else "false"
        elif isinstance(value, str | int):
            kept[key] = str(value)
    return tuple(sorted(kept.items()))


def _entity(name: str, meta: _Meta) -> dict[str, object]:
    attrs = dict.fromkeys(_ALWAYS_PRESENT, "") | dict(meta) | {"name": name}
    return {"uid": {"type": "Agent", "id": name}, "attrs": attrs, "parents": []}


def _listing(names: tuple[str, ...] | list[str]) -> str:
    quoted = ", ".join(f"'{name}'" for name in names)
    return f"policies {quoted}" if len(names) > 1 else f"policy {quoted}"
