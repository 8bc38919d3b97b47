"""What an approver is shown of a call's arguments: secret values masked, long strings cut.

A field is secret when the tool's input JSON Schema marks it so: `writeOnly: true` or
`format: "password"` (what pydantic's `SecretStr` produces), at any depth (nested objects,
arrays, `$ref`s to `$defs`, `anyOf`/`oneOf`/`allOf` branches; a field secret in any branch is
masked). A `$ref` the schema does not define masks its value: what we cannot read we do not
show. Pure: no I/O; the digest an approval binds stays that of the unmasked arguments.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, cast

__all__ = ["MASK", "SHOWN_ITEMS", "SHOWN_STRING", "mask_arguments"]

MASK: Final = "***"
"""What a secret value is replaced with."""

SHOWN_STRING: Final = 1000
"""Longest string value shown in full; a longer one is cut and says how much was left out."""

SHOWN_ITEMS: Final = 100
"""Most items of an array shown; the rest are counted in a last item."""

_Schema = Mapping[str, Any]
_Schemas = list[_Schema]
"""One value's schema as its alternatives, every `$ref` and combinator already expanded."""

_UNRESOLVED: Final[_Schema] = {"writeOnly": True}
"""Stands in for a `$ref` the schema does not define: treated as secret."""


def mask_arguments(
    arguments: Mapping[str, Any] | None, schema: Mapping[str, Any] | None, *, shown_string: int = SHOWN_STRING
) -> dict[str, Any]:
    """A copy of `arguments` with the values of secret fields replaced by MASK, long strings and arrays cut."""
    root: _Schema = schema or {}
    return _object(arguments or {}, _expand(root, root), root, shown_string)


# -- private helpers ---------------------------------------------------------------------------


def _value(value: object, schemas: _Schemas, root: _Schema, cut: int) -> Any:
    if value is None:
        return None  # "no password given" is not the password
    if _secret(schemas):
        return MASK
    if (mapping := _as_mapping(value)) is not None:
        return _object(mapping, schemas, root, cut)
    if (items := _as_list(value)) is not None:
        shown = [_value(item, _item(schemas, i, root), root, cut) for i, item in enumerate(items[:SHOWN_ITEMS])]
        return [*shown, f"… ({len(items) - SHOWN_ITEMS} more items)"] if len(items) > SHOWN_ITEMS else shown
    if isinstance(value, str) and len(value) > cut:
        return f"{value[:cut]}… ({len(value) - cut} more characters)"
    return value


def _object(value: Mapping[str, Any], schemas: _Schemas, root: _Schema, cut: int) -> dict[str, Any]:
    return {key: _value(item, _property(schemas, key, root), root, cut) for key, item in value.items()}


def _secret(schemas: _Schemas) -> bool:
    return any(s.get("writeOnly") is True or s.get("format") == "password" for s in schemas)


def _property(schemas: _Schemas, key: str, root: _Schema) -> _Schemas:
    """The schemas property `key` of an object matching `schemas` must match (JSON Schema 2020-12 §10.3.2)."""
    found: _Schemas = []
    for s in schemas:
        properties = _as_mapping(s.get("properties")) or {}
        matched = key in properties
        if matched:
            found.extend(_expand(properties[key], root))
        for pattern, sub in (_as_mapping(s.get("patternProperties")) or {}).items():
            if _matches(pattern, key):
                found.extend(_expand(sub, root))
                matched = True
        if not matched:
            found.extend(_expand(s.get("additionalProperties"), root))
    return found


def _item(schemas: _Schemas, index: int, root: _Schema) -> _Schemas:
    """The schemas item `index` of an array matching `schemas` must match."""
    found: _Schemas = []
    for s in schemas:
        prefix = _as_list(s.get("prefixItems")) or []
        found.extend(_expand(prefix[index] if index < len(prefix) else s.get("items"), root))
    return found


def _expand(node: object, root: _Schema, seen: frozenset[str] = frozenset()) -> _Schemas:
    """`node` and every schema it refers to or combines, flattened into alternatives."""
    schema = _as_mapping(node)
    if schema is None:
        return []  # `true`, `false`, absent or junk: nothing marks it secret
    found: _Schemas = [schema]
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref not in seen:
        target = _pointer(root, ref)
        found.extend(_expand(target, root, seen | {ref}) if target is not None else [_UNRESOLVED])
    for key in ("anyOf", "oneOf", "allOf"):
        for branch in _as_list(schema.get(key)) or []:
            found.extend(_expand(branch, root, seen))
    return found


def _pointer(root: _Schema, ref: str) -> object:
    """The schema a local `$ref` ("#/$defs/Name", RFC 6901) names in `root`, or None."""
    if not ref.startswith("#"):
        return None
    node: object = root
    for part in ref[1:].split("/")[1:]:
        key = part.replace("~1", "/").replace("~0", "~")
        mapping = _as_mapping(node)
        if mapping is None or key not in mapping:
            return None
        node = mapping[key]
    return node


def _matches(pattern: str, key: str) -> bool:
    try:
        return re.search(pattern, key) is not None
    except re.error:
        return True  # a pattern we cannot read might have named this key: assume it did


def _as_mapping(value: object) -> Mapping[str, Any] | None:
    return cast("Mapping[str, Any]", value) if isinstance(value, Mapping) else None


def _as_list(value: object) -> list[Any] | None:
    return list(cast("list[Any] | tuple[Any, ...]", value)) if isinstance(value, list | tuple) else None
