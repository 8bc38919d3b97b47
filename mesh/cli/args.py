"""Turning `--arg k=v` and `--args JSON` into tool arguments, guided by the tool's input schema.

A value for a string property stays a string; any other is read as JSON when it parses
(`--arg count=3` is the integer 3). Pure functions; errors are ConfigError with one line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from mesh.errors import ConfigError

__all__ = ["build_arguments"]


def build_arguments(pairs: Sequence[str], raw_json: str | None, schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge `--args JSON` and `--arg k=v` pairs (pairs win) into one arguments object."""
    arguments: dict[str, Any] = {}
    if raw_json:
        try:
            loaded = json.loads(raw_json)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--args is not valid JSON: {exc.msg} at column {exc.colno}") from None
        if not isinstance(loaded, dict):
            raise ConfigError('--args must be a JSON object, like \'{"text": "hi"}\'')
        arguments.update(loaded)  # pyright: ignore[reportUnknownArgumentType]
    properties: Mapping[str, Any] = (schema or {}).get("properties") or {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--arg takes KEY=VALUE, not {pair!r}")
        arguments[key] = _coerce(value, properties.get(key))
    return arguments


def _coerce(value: str, prop: Mapping[str, Any] | None) -> Any:
    if prop is not None and _is_string(prop):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _is_string(prop: Mapping[str, Any]) -> bool:
    if prop.get("type") == "string":
        return True
    options = prop.get("anyOf") or prop.get("oneOf") or []
    return any(isinstance(o, Mapping) and o.get("type") == "string" for o in options)  # pyright: ignore[reportUnknownMemberType]
