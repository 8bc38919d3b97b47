"""An approver sees a call's arguments with the values of secret fields masked, at any depth."""

from __future__ import annotations

from typing import Any

import anyio
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, SecretStr

from mesh import Agent
from mesh.masking import MASK, mask_arguments
from mesh.runtime.tools import build_server


class Card(BaseModel):
    holder: str
    pin: SecretStr


agent = Agent("bank")


@agent.tool(approval=True)
async def pay(
    account: str,
    amount: int,
    password: SecretStr,
    card: Card | None = None,
    keys: list[SecretStr] | None = None,
    cards: list[Card] | None = None,
) -> str:
    del password, card, keys, cards
    return f"paid {amount} from {account}"


def schema_of(tool: str) -> dict[str, Any]:
    async def listed() -> dict[str, Any]:
        tools = await build_server(agent, peers=None).list_tools()
        return next(t.input_schema for t in tools if t.name == tool)

    return anyio.run(listed)


PAY = schema_of("pay")


def test_a_secretstr_argument_is_masked_and_the_plain_ones_are_shown() -> None:
    shown = mask_arguments({"account": "DE44", "amount": 120, "password": "hunter2"}, PAY)

    assert shown == {"account": "DE44", "amount": 120, "password": MASK}


def test_a_secret_inside_a_nested_model_behind_a_ref_and_an_optional_is_masked() -> None:
    arguments = {"account": "DE44", "amount": 1, "password": "x", "card": {"holder": "Ann", "pin": "1234"}}

    assert mask_arguments(arguments, PAY)["card"] == {"holder": "Ann", "pin": MASK}


def test_secrets_in_arrays_are_masked_item_by_item() -> None:
    arguments = {"keys": ["k1", "k2"], "cards": [{"holder": "Ann", "pin": "1"}, {"holder": "Bo", "pin": "2"}]}

    shown = mask_arguments(arguments, PAY)

    assert shown["keys"] == [MASK, MASK]
    assert shown["cards"] == [{"holder": "Ann", "pin": MASK}, {"holder": "Bo", "pin": MASK}]


def test_a_missing_secret_stays_null_and_an_unknown_field_is_shown() -> None:
    shown = mask_arguments({"card": None, "note": "hello"}, PAY)

    assert shown == {"card": None, "note": "hello"}


def test_format_password_alone_marks_a_field_secret_as_does_write_only() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string", "format": "password"}, "b": {"writeOnly": True}, "c": {}},
    }

    assert mask_arguments({"a": "1", "b": {"deep": "2"}, "c": "3"}, schema) == {"a": MASK, "b": MASK, "c": "3"}


def test_additional_and_pattern_properties_carry_secrecy_to_the_keys_they_cover() -> None:
    schema = {
        "type": "object",
        "properties": {"headers": {"type": "object", "additionalProperties": {"type": "string", "writeOnly": True}}},
        "patternProperties": {"^secret_": {"format": "password"}},
    }

    shown = mask_arguments({"headers": {"Authorization": "Bearer x"}, "secret_key": "k", "name": "n"}, schema)

    assert shown == {"headers": {"Authorization": MASK}, "secret_key": MASK, "name": "n"}


def test_a_ref_the_schema_does_not_define_is_masked() -> None:
    schema = {"properties": {"creds": {"$ref": "https://example.com/creds.json"}, "who": {"type": "string"}}}

    assert mask_arguments({"creds": {"user": "u"}, "who": "me"}, schema) == {"creds": MASK, "who": "me"}


def test_a_recursive_model_is_followed_as_deep_as_the_value_goes() -> None:
    schema = {
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "token": {"type": "string", "writeOnly": True},
                    "child": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]},
                },
            }
        },
        "properties": {"tree": {"$ref": "#/$defs/Node"}},
    }
    value = {"tree": {"token": "a", "child": {"token": "b", "child": {"token": "c", "child": None}}}}

    shown = mask_arguments(value, schema)

    assert shown == {"tree": {"token": MASK, "child": {"token": MASK, "child": {"token": MASK, "child": None}}}}


def test_a_long_string_is_cut_and_says_how_much_was_left_out() -> None:
    shown = mask_arguments({"text": "x" * 1200}, {}, shown_string=1000)

    assert shown["text"] == "x" * 1000 + "… (200 more characters)"


def test_a_long_array_is_cut_and_counts_the_rest() -> None:
    shown = mask_arguments({"ids": list(range(105))}, {})

    assert shown["ids"] == [*range(100), "… (5 more items)"]


def test_no_schema_shows_the_arguments_as_they_are() -> None:
    assert mask_arguments({"a": [1, {"b": None}]}, None) == {"a": [1, {"b": None}]}
    assert mask_arguments(None, PAY) == {}


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=8), _JSON, max_size=6))
def test_without_secrets_in_the_schema_nothing_changes(arguments: dict[str, Any]) -> None:
    assert mask_arguments(arguments, {"type": "object", "additionalProperties": True}) == arguments


@given(st.dictionaries(st.text(max_size=8), _JSON, max_size=6))
def test_when_every_field_is_secret_no_value_but_null_survives(arguments: dict[str, Any]) -> None:
    shown = mask_arguments(arguments, {"additionalProperties": {"writeOnly": True}})

    assert shown == {key: None if value is None else MASK for key, value in arguments.items()}
