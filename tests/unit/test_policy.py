"""Cedar policy evaluation: three verdicts, the policies behind them, and a broken file that denies."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mesh.errors import PolicyError
from mesh.policy import CallFacts, Policy, PolicyDecision, policy_from_env

GOVERNANCE = """
@id("everyone-may-call")
permit(principal, action == Action::"call", resource);

@id("no-confidential-abroad")
forbid(principal, action, resource) when {
  principal.jurisdiction == "eu" && resource.jurisdiction == "us" && context.data_class == "confidential"
};

@id("deleting-needs-a-human")
@approval
forbid(principal, action, resource) when { context.tool == "delete_customer" };

@approval("finance signs off")
forbid(principal, action, resource) when { resource.owner == "finance" && context.tool like "pay*" };
"""


def call(
    tool: str = "lookup",
    data_class: str | None = None,
    *,
    caller: dict[str, object] | None = None,
    callee: dict[str, object] | None = None,
) -> CallFacts:
    caller_meta = {"jurisdiction": "eu", "owner": "sales"} if caller is None else caller
    callee_meta = {"jurisdiction": "eu", "owner": "support"} if callee is None else callee
    return CallFacts.of("crm", caller_meta, "kb", callee_meta, tool, data_class)


@pytest.fixture
def governance() -> Policy:
    return Policy.from_text(GOVERNANCE, source="governance.cedar")


def test_a_call_a_permit_covers_is_allowed_and_names_the_permit(governance: Policy) -> None:
    assert governance.evaluate(call()) == PolicyDecision(
        "allow", ("everyone-may-call",), "allowed by policy 'everyone-may-call'"
    )


def test_confidential_data_from_eu_to_us_is_denied_by_the_policy_naming_it(governance: Policy) -> None:
    decision = governance.evaluate(call(data_class="confidential", callee={"jurisdiction": "us"}))
    assert decision == PolicyDecision("deny", ("no-confidential-abroad",), "denied by policy 'no-confidential-abroad'")


def test_public_data_from_eu_to_us_is_allowed(governance: Policy) -> None:
    decision = governance.evaluate(call(data_class="public", callee={"jurisdiction": "us"}))
    assert decision.verdict == "allow"


def test_an_approval_forbid_asks_for_a_human(governance: Policy) -> None:
    decision = governance.evaluate(call("delete_customer"))
    assert decision == PolicyDecision(
        "approval", ("deleting-needs-a-human",), "needs a human's approval by policy 'deleting-needs-a-human'"
    )


def test_an_approval_forbid_without_an_id_is_named_by_cedar(governance: Policy) -> None:
    decision = governance.evaluate(call("pay_invoice", callee={"owner": "finance"}))
    assert decision.verdict == "approval"
    assert decision.policies == ("policy3",)


def test_a_hard_forbid_beats_an_approval_forbid(governance: Policy) -> None:
    facts = call("delete_customer", "confidential", callee={"jurisdiction": "us"})
    decision = governance.evaluate(facts)
    assert decision.verdict == "deny"
    assert set(decision.policies) == {"no-confidential-abroad", "deleting-needs-a-human"}
    assert decision.reason == "denied by policy 'no-confidential-abroad'"


def test_a_call_no_permit_covers_is_denied() -> None:
    policy = Policy.from_text('permit(principal, action, resource) when { resource.owner == "support" };')
    decision = policy.evaluate(call(callee={"owner": "finance"}))
    assert decision == PolicyDecision("deny", (), "no policy permits 'crm' to call 'lookup' on 'kb'")


def test_absent_metadata_reads_as_empty_strings_so_policies_need_no_has() -> None:
    policy = Policy.from_text(
        'permit(principal, action, resource) when { principal.name == "crm" && resource.data_class == "" };'
    )
    assert policy.evaluate(call(caller={}, callee={})).verdict == "allow"


def test_metadata_keeps_strings_ints_and_bools_as_strings() -> None:
    facts = CallFacts.of("crm", {"tier": 2, "pii": True, "tags": ["x"], "gone": None}, "kb", {}, "t")
    assert facts.caller_meta == (("pii", "true"), ("tier", "2"))
    policy = Policy.from_text('permit(principal, action, resource) when { principal.pii == "true" };')
    assert policy.evaluate(facts).verdict == "allow"


def test_a_policy_that_fails_to_evaluate_is_noted_in_the_reason() -> None:
    policy = Policy.from_text(
        "permit(principal, action, resource);\n"
        'forbid(principal, action, resource) when { principal.clearance == "none" };'
    )
    decision = policy.evaluate(call())
    assert decision.verdict == "allow"
    assert "1 policy evaluation error(s)" in decision.reason
    assert "clearance" in decision.reason


def test_an_agent_calling_itself_is_one_entity() -> None:
    policy = Policy.from_text("permit(principal, action, resource) when { principal == resource };")
    assert policy.evaluate(CallFacts.of("kb", {}, "kb", {}, "lookup")).verdict == "allow"


def test_allow_all_allows_every_call() -> None:
    decision = Policy.allow_all().evaluate(call("delete_customer", "secret"))
    assert decision.verdict == "allow"
    assert Policy.allow_all().broken is None


def test_a_repeated_call_is_answered_from_the_cache(governance: Policy) -> None:
    assert governance.evaluate(call("delete_customer")) is governance.evaluate(call("delete_customer"))


def test_text_that_does_not_parse_raises_a_one_line_policy_error() -> None:
    with pytest.raises(PolicyError, match=r"^team\.cedar: ") as caught:
        Policy.from_text("permit(principal, action, resource) when {\n principal.x == };", source="team.cedar")
    assert "\n" not in str(caught.value)


def test_a_broken_policy_file_denies_every_call_loudly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "mesh.cedar"
    path.write_text("permit(principal, action, resource")
    with caplog.at_level(logging.ERROR, logger="mesh.policy"):
        policy = Policy.load(path)
    assert policy.broken is not None
    assert str(path) in caplog.text
    decision = policy.evaluate(call())
    assert decision.verdict == "deny"
    assert decision.reason.startswith(f"policy file {path} is broken: ")


@pytest.mark.parametrize("content", [None, b"\xff\xfe not utf-8"])
def test_a_missing_or_unreadable_policy_file_denies_every_call(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "mesh.cedar"
    if content is not None:
        path.write_bytes(content)
    policy = Policy.load(path)
    assert policy.broken is not None
    assert "cannot read it" in policy.broken
    assert policy.evaluate(call()).verdict == "deny"


def test_a_good_policy_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "mesh.cedar"
    path.write_text(GOVERNANCE)
    policy = Policy.load(path)
    assert (policy.broken, policy.source) == (None, str(path))
    assert policy.evaluate(call("delete_customer")).verdict == "approval"


def test_policy_from_env_honours_mesh_policy(
    mesh_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "env.cedar"
    path.write_text("forbid(principal, action, resource);")
    assert policy_from_env().evaluate(call()).verdict == "allow"
    monkeypatch.setenv("MESH_POLICY", str(path))
    assert policy_from_env().source == str(path)
    assert policy_from_env().evaluate(call()).verdict == "deny"


def test_an_explicit_policy_file_beats_mesh_policy(
    mesh_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESH_POLICY", str(tmp_path / "env.cedar"))
    explicit = tmp_path / "flag.cedar"
    explicit.write_text(GOVERNANCE)
    assert policy_from_env(explicit).source == str(explicit)


def test_a_request_cedar_cannot_build_is_denied() -> None:
    facts = CallFacts.of("lone-surrogate-\ud800", {}, "kb", {}, "lookup")
    decision = Policy.from_text("permit(principal, action, resource);").evaluate(facts)
    assert decision.verdict == "deny"
    assert decision.reason.startswith("policy evaluation failed: ")


def test_decisions_stay_correct_past_the_cache_size() -> None:
    policy = Policy.allow_all()
    for i in range(4100):
        assert policy.evaluate(call(f"tool-{i}")).verdict == "allow"


def test_a_policy_shows_where_it_came_from_and_whether_it_is_broken(tmp_path: Path) -> None:
    assert repr(Policy.allow_all()) == "Policy(source='<allow-all>')"
    broken = Policy.load(tmp_path / "missing.cedar")
    assert repr(broken).startswith(f"Policy(source='{tmp_path / 'missing.cedar'}', broken='cannot read it: ")


# -- resources and prompts: their own Cedar actions ----------------------------------------------

READS = """
@id("agents-may-call-read-and-prompt")
permit(principal, action in [Action::"call", Action::"read_resource", Action::"get_prompt"], resource);

@id("no-refund-articles-for-crm")
forbid(principal == Agent::"crm", action == Action::"read_resource", resource == Agent::"kb")
  when { context.uri like "kb://articles/KB-2*" };

@id("drafting-prompts-need-a-human")
@approval
forbid(principal, action == Action::"get_prompt", resource) when { context.prompt == "draft" };
"""


def read(uri: str, caller: str = "crm") -> CallFacts:
    return CallFacts.of(caller, {}, "kb", {}, uri, action="read_resource")


def test_a_read_is_its_own_action_and_its_uri_is_in_context_uri() -> None:
    policy = Policy.from_text(READS)
    assert policy.evaluate(read("kb://articles/KB-101")).verdict == "allow"
    denied = policy.evaluate(read("kb://articles/KB-201"))
    assert denied == PolicyDecision(
        "deny", ("no-refund-articles-for-crm",), "denied by policy 'no-refund-articles-for-crm'"
    )
    assert policy.evaluate(read("kb://articles/KB-201", caller="triage")).verdict == "allow"


def test_a_prompt_get_is_its_own_action_with_the_prompt_in_context_prompt() -> None:
    policy = Policy.from_text(READS)
    assert policy.evaluate(CallFacts.of("crm", {}, "kb", {}, "answer", action="get_prompt")).verdict == "allow"
    assert policy.evaluate(CallFacts.of("crm", {}, "kb", {}, "draft", action="get_prompt")).verdict == "approval"
    # A tool of the same name is a different target: the prompt rule does not touch it.
    assert policy.evaluate(call("draft")).verdict == "allow"


def test_a_policy_that_permits_only_calls_denies_reads_and_prompts_it_never_mentioned() -> None:
    policy = Policy.from_text('permit(principal, action == Action::"call", resource);')
    assert policy.evaluate(call()).verdict == "allow"
    assert policy.evaluate(read("kb://articles/KB-101")) == PolicyDecision(
        "deny", (), "no policy permits 'crm' to read 'kb://articles/KB-101' on 'kb'"
    )
    prompt = policy.evaluate(CallFacts.of("crm", {}, "kb", {}, "answer", action="get_prompt"))
    assert prompt.reason == "no policy permits 'crm' to get the prompt 'answer' on 'kb'"


def test_every_context_key_is_present_so_a_rule_on_another_action_needs_no_has() -> None:
    policy = Policy.from_text(
        "permit(principal, action, resource);\n"
        'forbid(principal, action, resource) when { context.tool == "wipe" || context.uri == "kb://secret" };'
    )
    decision = policy.evaluate(read("kb://articles/KB-101"))
    assert decision.verdict == "allow"
    assert "error" not in decision.reason
    assert policy.evaluate(read("kb://secret")).verdict == "deny"


def test_an_unknown_action_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown policy action 'write'"):
        CallFacts.of("crm", {}, "kb", {}, "x", action="write")
