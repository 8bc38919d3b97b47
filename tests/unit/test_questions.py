"""A tool's own questions across input-required rounds: asked once, answered from the round, used by the asker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mesh.errors import ApprovalRequired
from mesh.peers.questions import Questions
from mesh.peers.rounds import InputNeeded, Relay, interactive_var
from mesh.wire import ASK_INPUT_KEY

SCHEMA: dict[str, Any] = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
ADA = {"action": "accept", "content": {"name": "Ada"}}


@pytest.fixture(autouse=True)
def interactive() -> Iterator[None]:
    token = interactive_var.set(True)
    yield
    interactive_var.reset(token)


def _asked(questions: Questions, message: str = "Your name?") -> InputNeeded:
    with pytest.raises(InputNeeded) as caught:
        questions.ask(message, SCHEMA)
    return caught.value


def _next_round(need: InputNeeded, responses: dict[str, Any]) -> Relay:
    """What the guard hands the same tool on the next round: the state it asked with, and the answers."""
    return Relay(need.agent, need.tool, need.request_state, responses, need.instance)


def test_a_first_question_goes_up_as_an_elicitation_form_keyed_by_agent_and_place() -> None:
    need = _asked(Questions("desk", "greet"))
    assert (need.agent, need.tool) == ("desk", "greet")
    [(key, request)] = need.input_requests.items()
    assert key == f"{ASK_INPUT_KEY}/desk/1"
    assert request["method"] == "elicitation/create"
    assert request["params"]["message"] == "Your name?"
    assert request["params"]["requestedSchema"] == SCHEMA


def test_the_next_round_answers_the_same_question_and_leaves_nothing_for_callees() -> None:
    need = _asked(Questions("desk", "greet"))
    questions, left = Questions.of_round("desk", "greet", _next_round(need, {f"{ASK_INPUT_KEY}/desk/1": ADA}))
    assert left is None
    assert questions.ask("Your name?", SCHEMA) == ADA


def test_a_second_question_keeps_the_first_answer_for_the_round_after() -> None:
    first = _asked(Questions("desk", "greet"))
    round2, _ = Questions.of_round("desk", "greet", _next_round(first, {f"{ASK_INPUT_KEY}/desk/1": ADA}))
    assert round2.ask("Your name?", SCHEMA) == ADA
    second = _asked(round2, "Your town?")
    assert list(second.input_requests) == [f"{ASK_INPUT_KEY}/desk/2"]
    town = {"action": "accept", "content": {"name": "Paris"}}
    round3, _ = Questions.of_round("desk", "greet", _next_round(second, {f"{ASK_INPUT_KEY}/desk/2": town}))
    assert round3.ask("Your name?", SCHEMA) == ADA
    assert round3.ask("Your town?", SCHEMA) == town


def test_a_different_question_in_the_same_place_is_asked_again() -> None:
    need = _asked(Questions("desk", "greet"))
    questions, _ = Questions.of_round("desk", "greet", _next_round(need, {f"{ASK_INPUT_KEY}/desk/1": ADA}))
    again = _asked(questions, "Your town?")
    assert list(again.input_requests) == [f"{ASK_INPUT_KEY}/desk/1"]


def test_a_callees_question_carries_this_runs_answers_and_its_own_state_down_next_round() -> None:
    need = _asked(Questions("desk", "greet"))
    questions, _ = Questions.of_round("desk", "greet", _next_round(need, {f"{ASK_INPUT_KEY}/desk/1": ADA}))
    questions.ask("Your name?", SCHEMA)
    callee = InputNeeded("vault", "withdraw", {"agentplex/approval/vault": {}}, "vault-state", "v1")
    carried = questions.carry(callee)
    assert (carried.agent, carried.tool, carried.instance) == ("vault", "withdraw", "v1")
    assert carried.input_requests == callee.input_requests
    yes = {"agentplex/approval/vault": {"action": "accept", "content": {"approve": True}}}
    after, left = Questions.of_round("desk", "greet", _next_round(carried, yes))
    assert left == Relay("vault", "withdraw", "vault-state", yes, "v1")
    assert after.ask("Your name?", SCHEMA) == ADA


def test_without_answers_a_callees_question_passes_up_unchanged() -> None:
    callee = InputNeeded("vault", "withdraw", {}, "vault-state", "v1")
    assert Questions("desk", "greet").carry(callee) is callee


def test_a_relay_for_a_callee_is_left_alone() -> None:
    relay = Relay("vault", "withdraw", "vault-state", {"k": {}}, "v1")
    questions, left = Questions.of_round("desk", "greet", relay)
    assert left is relay
    _asked(questions)  # nothing was answered


def test_junk_state_is_a_fresh_run_not_a_crash() -> None:
    relay = Relay("desk", "greet", "ask1:not base64 json!", {}, None)
    questions, left = Questions.of_round("desk", "greet", relay)
    assert left is relay
    _asked(questions)


def test_with_nobody_to_ask_the_question_is_a_clear_refusal() -> None:
    token = interactive_var.set(False)
    try:
        with pytest.raises(ApprovalRequired, match="asks a person"):
            Questions("desk", "greet").ask("Your name?", SCHEMA)
    finally:
        interactive_var.reset(token)
