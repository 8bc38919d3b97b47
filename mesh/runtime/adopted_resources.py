"""An adopted server's resources and prompts, passed through to the mesh as that server offers them.

Owns `AdoptedOfferings`, the middleware that answers `resources/list`, `resources/templates/list`,
`resources/read`, `prompts/list` and `prompts/get` from the adopted server over its `Upstream`
session: pages, URIs, names and contents unchanged, each listing asked afresh. The server's
`resources/list_changed` and `prompts/list_changed` are published to the adapter's `subscriptions/listen`
streams (the gateway listens), its `resources/updated` to the clients subscribed. It sits inside the
`CallGuard`, which governs reads, subscriptions and gets as it governs tool calls. A server that offers
no resources or prompts lists none.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, final

from mcp import Client
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.subscriptions import PromptsListChanged, ResourcesListChanged, SubscriptionBus
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    ListPromptsResult,
    ListResourcesResult,
    ListResourceTemplatesResult,
    SubscribeRequestParams,
    UnsubscribeRequestParams,
)
from pydantic import BaseModel

from mesh.errors import PeerError, PeerRejected
from mesh.runtime.subscriptions import ResourceSubscriptions
from mesh.runtime.upstream import ListKind, Upstream
from mesh.wire import ERROR_META_KEY

__all__ = ["AdoptedOfferings"]

_Handler = Callable[[Mapping[str, Any]], Awaitable[BaseModel]]


@final
class AdoptedOfferings:
    """Middleware answering the resource and prompt methods from the adopted server, unchanged."""

    def __init__(self, upstream: Upstream, bus: SubscriptionBus) -> None:
        self._upstream = upstream
        self._subscriptions = ResourceSubscriptions(None)
        self._bus = bus
        upstream.on_resource_updated = self._subscriptions.updated
        upstream.on_list_changed = self._list_changed
        self._handlers: Final[dict[str, _Handler]] = {
            "resources/list": self._list_resources,
            "resources/templates/list": self._list_templates,
            "resources/read": self._read,
            "prompts/list": self._list_prompts,
            "prompts/get": self._get_prompt,
        }

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method in ("resources/subscribe", "resources/unsubscribe"):
            return await self._subscription(ctx)
        handler = self._handlers.get(ctx.method)
        if handler is None:
            return await call_next(ctx)
        try:
            return await handler(ctx.params or {})
        except PeerRejected as exc:  # the server answered with an error: a bad URI or name, mostly
            raise MCPError(code=INVALID_PARAMS, message=str(exc)) from None
        except PeerError as exc:
            kind = type(exc).__name__
            raise MCPError(code=INTERNAL_ERROR, message=f"{kind}: {exc}", data={ERROR_META_KEY: kind}) from None

    async def _list_resources(self, params: Mapping[str, Any]) -> BaseModel:
        cursor = _cursor(params)

        async def send(client: Client) -> BaseModel:
            if client.server_capabilities.resources is None:
                return ListResourcesResult(resources=[])
            return await client.list_resources(cursor=cursor, cache_mode="bypass")

        return await self._upstream.forward("resources/list", send)

    async def _list_templates(self, params: Mapping[str, Any]) -> BaseModel:
        cursor = _cursor(params)

        async def send(client: Client) -> BaseModel:
            if client.server_capabilities.resources is None:
                return ListResourceTemplatesResult(resource_templates=[])
            return await client.list_resource_templates(cursor=cursor, cache_mode="bypass")

        return await self._upstream.forward("resources/templates/list", send)

    async def _read(self, params: Mapping[str, Any]) -> BaseModel:
        uri = str(params.get("uri", ""))

        async def send(client: Client) -> BaseModel:
            if client.server_capabilities.resources is None:
                raise MCPError(code=INVALID_PARAMS, message=f"{self._name(client)} offers no resources")
            return await client.read_resource(uri, cache_mode="bypass")

        return await self._upstream.forward(uri, send)

    async def _list_prompts(self, params: Mapping[str, Any]) -> BaseModel:
        cursor = _cursor(params)

        async def send(client: Client) -> BaseModel:
            if client.server_capabilities.prompts is None:
                return ListPromptsResult(prompts=[])
            return await client.list_prompts(cursor=cursor, cache_mode="bypass")

        return await self._upstream.forward("prompts/list", send)

    async def _get_prompt(self, params: Mapping[str, Any]) -> BaseModel:
        name = str(params.get("name", ""))
        raw: Mapping[str, Any] = params.get("arguments") or {}
        arguments = {str(k): str(v) for k, v in raw.items()}

        async def send(client: Client) -> BaseModel:
            if client.server_capabilities.prompts is None:
                raise MCPError(code=INVALID_PARAMS, message=f"{self._name(client)} offers no prompts")
            return await client.get_prompt(name, arguments)

        return await self._upstream.forward(name, send)

    async def _subscription(self, ctx: ServerRequestContext[Any, Any]) -> HandlerResult:
        """Pass a (un)subscription to the server, and remember who asked so its updates reach them."""
        uri = str((ctx.params or {}).get("uri", ""))
        subscribing = ctx.method == "resources/subscribe"

        async def send(client: Client) -> BaseModel:
            if subscribing:
                return await client.subscribe_resource(uri)  # pyright: ignore[reportDeprecated]
            return await client.unsubscribe_resource(uri)  # pyright: ignore[reportDeprecated]

        try:
            with warnings.catch_warnings():  # a 2025-11-25 method, which the adopted session speaks
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                result = await self._upstream.forward(uri, send)
        except PeerRejected as exc:
            raise MCPError(code=INVALID_PARAMS, message=str(exc)) from None
        except PeerError as exc:
            kind = type(exc).__name__
            raise MCPError(code=INTERNAL_ERROR, message=f"{kind}: {exc}", data={ERROR_META_KEY: kind}) from None
        params = {"uri": uri}
        if subscribing:
            await self._subscriptions.subscribe(ctx, SubscribeRequestParams.model_validate(params))
        else:
            await self._subscriptions.unsubscribe(ctx, UnsubscribeRequestParams.model_validate(params))
        return result

    async def _list_changed(self, kind: ListKind) -> None:
        await self._bus.publish(ResourcesListChanged() if kind == "resources" else PromptsListChanged())

    def _name(self, client: Client) -> str:
        return f"the adopted server {client.server_info.name if client.server_info else self._upstream.spec.describe()}"


def _cursor(params: Mapping[str, Any]) -> str | None:
    cursor = params.get("cursor")
    return cursor if isinstance(cursor, str) and cursor else None
