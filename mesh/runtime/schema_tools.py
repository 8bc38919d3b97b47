"""Tools that declare their own JSON Schema: the arguments are checked against it and handed over as one dict.

Owns `SchemaTool`, the SDK `Tool` whose listed `inputSchema` is the declared schema and whose `run`
checks the arguments with `jsonschema` (the SDK's own dependency, which its client uses for output
schemas) in place of the pydantic model a signature would give. The wrapped function (its
`mesh.Context`, its errors) is `mesh.runtime.tools`' as for any tool.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, final

from mcp.server.mcpserver.exceptions import ResourceError, ToolError, UnexpectedToolError
from mcp.server.mcpserver.tools import Tool
from mcp.shared.exceptions import MCPError
from mcp_types import ToolAnnotations
from pydantic import Field

if TYPE_CHECKING:
    from mcp.server.context import LifespanContextT, RequestT
    from mcp.server.mcpserver import Context

__all__ = ["SchemaTool", "schema_problem", "schema_tool"]


@final
class SchemaTool(Tool):
    """A tool listed with its declared schema, run with the arguments dict once they satisfy it."""

    validator: Any = Field(exclude=True)
    arguments_param: str = Field(exclude=True)

    async def run(
        self,
        arguments: dict[str, Any],
        context: Context[LifespanContextT, RequestT],
        convert_result: bool = False,
    ) -> Any:
        """Check `arguments` against the schema, then run the tool as the SDK's `Tool.run` does."""
        problem = schema_problem(self.validator, arguments)
        if problem is not None:
            raise ToolError(f"invalid arguments for {self.name}: {problem}")
        kwargs: dict[str, Any] = {self.arguments_param: dict(arguments)}
        if self.context_kwarg is not None:
            kwargs[self.context_kwarg] = context
        try:
            result = await self.fn(**kwargs)
            return self.fn_metadata.convert_result(result) if convert_result else result
        except MCPError:
            raise  # a protocol error, or a question for a person on its way up (as the SDK)
        except (ToolError, ResourceError) as exc:
            raise ToolError(f"Error executing tool {self.name}: {exc}") from exc
        except Exception as exc:
            raise UnexpectedToolError(f"Error executing tool {self.name}") from exc  # a crash stays on the server


def schema_tool(
    fn: Callable[..., Any],
    schema: Mapping[str, Any],
    arguments_param: str,
    *,
    name: str,
    title: str | None,
    description: str,
    context_kwarg: str,
    annotations: ToolAnnotations | None,
    meta: dict[str, Any] | None,
) -> SchemaTool:
    """`fn` (async, taking `arguments_param` and `context_kwarg`) as a tool whose input is `schema`."""
    from jsonschema.validators import validator_for
    from referencing import Registry

    returns = inspect.signature(fn).return_annotation

    async def shape() -> Any: ...  # only its return annotation matters: the SDK derives the output schema from it

    shape.__signature__ = inspect.Signature([], return_annotation=returns)  # type: ignore[attr-defined]
    shape.__annotations__ = {} if returns is inspect.Signature.empty else {"return": returns}
    shape.__name__ = name
    base = Tool.from_function(
        shape,
        name=name,
        title=title,
        description=description,
        context_kwarg=context_kwarg,
        annotations=annotations,
        meta=meta,
    )
    # An explicit empty registry: `$ref`s resolve within the schema itself, never over the network.
    validator = validator_for(schema)(dict(schema), registry=Registry())
    fields: dict[str, Any] = {**dict(base), "fn": fn, "parameters": dict(schema), "is_async": True}
    return SchemaTool(**fields, validator=validator, arguments_param=arguments_param)


def schema_problem(validator: Any, arguments: Mapping[str, Any]) -> str | None:
    """Why `arguments` do not satisfy the validator's schema, as one line (`'priority': 'urgent' is not one of ...`)."""
    from jsonschema.exceptions import best_match

    error = best_match(validator.iter_errors(dict(arguments)))
    if error is None:
        return None
    where = ".".join(str(part) for part in error.absolute_path) or "arguments"
    return " ".join(f"{where!r}: {error.message}".split())
