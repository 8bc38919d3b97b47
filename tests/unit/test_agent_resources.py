"""`@agent.resource`, `@agent.prompt` and `@agent.tool(input_schema=...)`, served in process by the SDK's `Client`."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import TextContent, TextResourceContents

from mesh import Agent, ConfigError, Context, PeerUnavailable
from mesh.runtime.tools import build_server

pytestmark = pytest.mark.anyio

SIZES = {
    "type": "object",
    "properties": {
        "size": {"enum": ["S", "M", "L"]},
        "count": {"type": "integer", "minimum": 1, "maximum": 10},
    },
    "required": ["size"],
    "additionalProperties": False,
}


def shop() -> Agent:
    agent = Agent("shop", owner="retail", data_class="internal")

    @agent.resource("shop://catalog", name="catalog", mime_type="text/plain")
    def catalog(ctx: Context) -> str:
        """Every item, one per line."""
        return f"socks\nhats\n(read by {ctx.caller or 'nobody'} as {ctx.tool} of {ctx.agent})"

    @agent.resource("shop://items/{sku}", name="item", title="One item", mime_type="application/json")
    async def item(sku: str, ctx: Context) -> dict[str, Any]:
        """One item by SKU."""
        if sku == "gone":
            raise PeerUnavailable("the warehouse is down")
        return {"sku": sku, "uri": ctx.tool, "class": ctx.metadata["data_class"]}

    @agent.resource("shop://logo", mime_type="image/png")
    async def logo() -> bytes:
        return b"\x89PNG"

    @agent.prompt(title="Pitch", description="A sales pitch for one item.")
    def pitch(item: str, tone: str = "warm", *, ctx: Context) -> str:
        return f"Write a {tone} pitch for {item} (prompt {ctx.tool} of {ctx.agent})."

    @agent.prompt
    async def checklist() -> list[dict[str, Any]]:
        """Two messages: the question and a start of the answer."""
        return [
            {"role": "user", "content": "What do I check before shipping?"},
            {"role": "assistant", "content": "First, the address."},
        ]

    @agent.tool(input_schema=SIZES, read_only=True)
    async def order(arguments: dict[str, Any], ctx: Context) -> str:
        """Order socks in a size."""
        return f"{arguments.get('count', 1)} x {arguments['size']} for {ctx.caller or 'nobody'}"

    return agent


@pytest.fixture
async def client() -> AsyncGenerator[Client]:
    async with Client(build_server(shop(), peers=None)) as connected:
        yield connected


async def test_static_resources_are_listed_and_templates_listed_apart(client: Client) -> None:
    resources = {r.uri: r for r in (await client.list_resources()).resources}
    templates = {t.uri_template: t for t in (await client.list_resource_templates()).resource_templates}
    assert sorted(resources) == ["shop://catalog", "shop://logo"]
    assert resources["shop://catalog"].name == "catalog"
    assert resources["shop://catalog"].description == "Every item, one per line."
    assert resources["shop://logo"].mime_type == "image/png"
    assert list(templates) == ["shop://items/{sku}"]
    assert templates["shop://items/{sku}"].title == "One item"
    assert templates["shop://items/{sku}"].mime_type == "application/json"


async def test_a_resource_function_gets_a_mesh_context_naming_the_uri_read(client: Client) -> None:
    static = await client.read_resource("shop://catalog")
    templated = await client.read_resource("shop://items/sock-42")
    [text] = static.contents
    [item] = templated.contents
    assert isinstance(text, TextResourceContents)
    assert text.text.startswith("socks\nhats\n")
    assert "as shop://catalog of shop" in text.text
    assert isinstance(item, TextResourceContents)
    assert item.mime_type == "application/json"
    assert '"uri": "shop://items/sock-42"' in item.text
    assert '"class": "internal"' in item.text


async def test_bytes_are_a_blob(client: Client) -> None:
    [blob] = (await client.read_resource("shop://logo")).contents
    assert blob.mime_type == "image/png"
    assert getattr(blob, "blob", None) == "iVBORw=="


async def test_a_mesh_error_in_a_resource_keeps_its_words_and_an_unknown_uri_is_an_error(client: Client) -> None:
    with pytest.raises(MCPError, match="PeerUnavailable: the warehouse is down"):
        await client.read_resource("shop://items/gone")
    with pytest.raises(MCPError, match="Unknown resource"):
        await client.read_resource("shop://nothing")


async def test_prompts_are_listed_with_their_arguments_and_rendered_with_a_context(client: Client) -> None:
    prompts = {p.name: p for p in (await client.list_prompts()).prompts}
    assert sorted(prompts) == ["checklist", "pitch"]
    assert prompts["pitch"].title == "Pitch"
    assert prompts["pitch"].description == "A sales pitch for one item."
    assert [(a.name, a.required) for a in prompts["pitch"].arguments or []] == [("item", True), ("tone", False)]
    assert prompts["checklist"].description == "Two messages: the question and a start of the answer."
    rendered = await client.get_prompt("pitch", {"item": "socks"})
    [message] = rendered.messages
    assert message.role == "user"
    assert isinstance(message.content, TextContent)
    assert message.content.text == "Write a warm pitch for socks (prompt pitch of shop)."
    two = await client.get_prompt("checklist")
    assert [m.role for m in two.messages] == ["user", "assistant"]


async def test_a_tool_lists_its_declared_schema_and_gets_its_arguments_as_one_dict(client: Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert tools["order"].input_schema == SIZES
    assert tools["order"].output_schema is not None
    result = await client.call_tool("order", {"size": "M", "count": 3})
    assert result.is_error is False
    assert result.structured_content == {"result": "3 x M for nobody"}


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"size": "XL"}, "'size': 'XL' is not one of ['S', 'M', 'L']"),
        ({"size": "S", "count": 11}, "'count': 11 is greater than the maximum of 10"),
        ({}, "'arguments': 'size' is a required property"),
        ({"size": "S", "colour": "red"}, "Additional properties are not allowed ('colour' was unexpected)"),
    ],
)
async def test_arguments_outside_the_declared_schema_get_one_line_naming_the_problem(
    client: Client, arguments: dict[str, Any], problem: str
) -> None:
    result = await client.call_tool("order", arguments)
    assert result.is_error is True
    [block] = result.content
    assert isinstance(block, TextContent)
    assert block.text.startswith("invalid arguments for order: ")
    assert problem in block.text
    assert "\n" not in block.text


def test_a_template_whose_variables_are_not_the_parameters_is_refused_at_import() -> None:
    agent = Agent("shop")
    with pytest.raises(ConfigError, match=r"variables \['sku'\] must be the function's parameters \['id'\]"):

        @agent.resource("shop://items/{sku}")
        def item(id: str) -> str:  # pyright: ignore[reportUnusedFunction]
            return id


def test_a_static_uri_takes_no_parameters_but_may_take_a_context() -> None:
    agent = Agent("shop")
    with pytest.raises(ConfigError, match="has no \\{variables\\}, so its function takes no parameters"):

        @agent.resource("shop://catalog")
        def catalog(page: int) -> str:  # pyright: ignore[reportUnusedFunction]
            return str(page)

    @agent.resource("shop://catalog")
    def fine(ctx: Context) -> str:  # pyright: ignore[reportUnusedFunction]
        return ctx.agent

    assert agent.resources["shop://catalog"].context_param == "ctx"
    assert agent.resources["shop://catalog"].is_template is False


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("shop://items/{sku", "not a valid URI template"),
        ("shop://items{?page}", r"query variables \['page'\] may be left out, so give them defaults"),
    ],
)
def test_a_bad_template_is_one_line_at_import(uri: str, message: str) -> None:
    agent = Agent("shop")
    with pytest.raises(ConfigError, match=message) as caught:

        @agent.resource(uri)
        def listing(page: str) -> str:  # pyright: ignore[reportUnusedFunction]
            return page

    assert "\n" not in str(caught.value)


def test_the_same_uri_or_prompt_name_twice_and_a_decorator_without_its_uri_are_refused() -> None:
    agent = Agent("shop")

    @agent.resource("shop://catalog")
    def one() -> str:  # pyright: ignore[reportUnusedFunction]
        return ""

    @agent.prompt(name="ask")
    def ask() -> str:  # pyright: ignore[reportUnusedFunction]
        return ""

    with pytest.raises(ConfigError, match="already has a resource at 'shop://catalog'"):
        agent.resource("shop://catalog")(one)
    with pytest.raises(ConfigError, match="already has a prompt named 'ask'"):
        agent.prompt(name="ask")(ask)
    with pytest.raises(ConfigError, match="needs the URI"):
        agent.resource(one)  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "array"}, 'input_schema must be a JSON Schema with "type": "object"'),
        ({"type": "object", "properties": {"n": {"type": "integr"}}}, "input_schema is not a valid JSON Schema"),
    ],
)
def test_a_declared_schema_must_be_a_valid_object_schema(schema: dict[str, Any], message: str) -> None:
    agent = Agent("shop")
    with pytest.raises(ConfigError, match=message):

        @agent.tool(input_schema=schema)
        async def order(arguments: dict[str, Any]) -> str:  # pyright: ignore[reportUnusedFunction]
            return str(arguments)


def test_a_tool_with_a_declared_schema_takes_one_parameter_besides_ctx() -> None:
    agent = Agent("shop")
    with pytest.raises(ConfigError, match="takes one parameter \\(the arguments dict\\) besides ctx"):

        @agent.tool(input_schema=SIZES)
        async def order(size: str, count: int) -> str:  # pyright: ignore[reportUnusedFunction]
            return size * count

    @agent.tool(input_schema=SIZES)
    async def fine(args: dict[str, Any], ctx: Context) -> str:  # pyright: ignore[reportUnusedFunction]
        return ctx.agent

    assert agent.tools["fine"].arguments_param == "args"
    assert agent.tools["fine"].context_param == "ctx"
