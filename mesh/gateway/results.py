"""Shaping what a peer answered into the `CallToolResult` the gateway's client gets.

Pure: a mesh call returns the tool's structured value (unwrapped) or its text; the client
expects content that matches the tool's listed `outputSchema`, plus a text block to read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mcp_types import CallToolResult, TextContent

__all__ = ["failure", "tool_result"]


def tool_result(value: Any, output_schema: Mapping[str, Any] | None = None) -> CallToolResult:
    """A peer's value as a result: structured (wrapped in `{"result": ...}` as the SDK wraps non-objects) plus text."""
    # A schema of exactly {"result"} is the SDK's wrapper: the pool unwrapped it, so wrap it back.
    wrapped = isinstance(output_schema, dict) and set(output_schema.get("properties") or {}) == {"result"}
    structured: dict[str, Any] = value if isinstance(value, dict) and not wrapped else {"result": value}  # pyright: ignore[reportUnknownVariableType]
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)


def failure(message: str) -> CallToolResult:
    """An `isError` result: what the model reads when a call could not be made or the tool failed."""
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)
