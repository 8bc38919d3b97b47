"""The registry's OpenAPI 3.1 document, its schemas generated from the wire models.

Owns the document: the inventory routes (`/api/agents`, leases, `/openapi.json` itself) with their
parameters, answers and security scheme, plus whatever other routes the registry passes in. It
serves nothing: `registry.inventory_api` serves the document at `/openapi.json`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any, Final

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from mesh.wire import AgentRecord, ErrorBody, Registration

__all__ = ["openapi_document"]


def openapi_document(
    extra_paths: Mapping[str, Any] | None = None, extra_models: Sequence[type[BaseModel]] = ()
) -> dict[str, Any]:
    """An OpenAPI 3.1 document of the inventory API, its schemas generated from the wire models."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (Registration, "validation"),
        (AgentRecord, "serialization"),
        (ErrorBody, "serialization"),
        *((model, "serialization") for model in extra_models),
    ]
    _, schemas = models_json_schema(models, ref_template="#/components/schemas/{model}")
    try:
        version = metadata.version("agentplex")
    except metadata.PackageNotFoundError:
        version = "0"
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "agentplex registry",
            "version": version,
            "description": "The mesh's agent inventory. Writes need `Authorization: Bearer` with a mesh "
            "token for audience 'registry' whose caller is the agent itself; reads need none.",
        },
        "paths": {**_INVENTORY_PATHS, **(extra_paths or {})},
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"meshToken": {"type": "http", "scheme": "bearer"}},
        },
    }


def _ref(model: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model}"}


def _answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    content = {} if schema is None else {"content": {"application/json": {"schema": schema}}}
    return {"description": description, **content}


def _param(name: str, where: str, description: str = "", **schema: Any) -> dict[str, Any]:
    kind = {"type": "string", **schema}
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": kind,
    }


def _operation(
    summary: str, ok: dict[str, Any], *errors: int, params: list[dict[str, Any]] | None = None, body: str = ""
) -> dict[str, Any]:
    """One OpenAPI operation; a route that can answer 401 needs the mesh token."""
    refusals = {str(status): _answer(_REASONS[status], _ref("ErrorBody")) for status in errors}
    operation: dict[str, Any] = {"summary": summary, "responses": {**ok, **refusals}}
    if params:
        operation["parameters"] = params
    if body:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    if 401 in errors:
        operation["security"] = [{"meshToken": []}]
    return operation


_REASONS: Final = {
    400: "malformed request",
    401: "missing, forged or expired token, or one of another caller",
    403: "a token whose role is not agent",
    404: "unknown registration",
    413: "body over 1 MiB",
    422: "invalid registration",
}
_AGENT: Final = [_param("name", "path"), _param("instance", "path")]
_FILTERS: Final = [
    _param("tool", "query", "serves a tool of this name"),
    _param("owner", "query", "owner equals (case-insensitive)"),
    _param("jurisdiction", "query", "jurisdiction equals (case-insensitive)"),
    _param("data_class", "query", "data classification equals (case-insensitive)"),
    _param("name", "query", "agent name equals"),
    _param("all", "query", "1: include registrations whose lease lapsed", enum=["0", "1"]),
]
_RECORD: Final = _ref("AgentRecord")
_INVENTORY_PATHS: Final[dict[str, Any]] = {
    "/api/agents": {
        "get": _operation(
            "List registrations (alive unless all=1), filtered",
            {"200": _answer("matching registrations", {"type": "array", "items": _RECORD})},
            400,
            params=_FILTERS,
        ),
        "post": _operation(
            "Register (or re-register) the calling agent; starts its lease",
            {"200": _answer("the stored record", _RECORD)},
            *(400, 401, 403, 413, 422),
            body="Registration",
        ),
    },
    "/api/agents/{name}/{instance}/lease": {
        "put": _operation(
            "Renew a lease (heartbeat); 404 means register again",
            {"200": _answer("the renewed record", _RECORD)},
            *(401, 403, 404),
            params=_AGENT,
        ),
    },
    "/api/agents/{name}/{instance}": {
        "delete": _operation("Deregister (graceful exit)", {"204": _answer("removed")}, 401, 403, 404, params=_AGENT),
    },
    "/openapi.json": {"get": _operation("This document", {"200": _answer("OpenAPI 3.1", {"type": "object"})})},
}
