"""Every agent's resources and prompts through the gateway: listed under the agent's name, read peer to peer.

Owns the gateway's `resources/list`, `resources/templates/list`, `resources/read`, `prompts/list` and
`prompts/get`. A listing asks each agent (one healthy instance, kept in an `OfferingCache`) what it
offers; a read or a get goes to an instance of the agent the name says through the node's peer pool
(`PeerPool.request`: the gateway's own credential, the caller's end of the policy, a CLIENT span that
carries the trace on, another instance when one cannot be reached, both being read-only). The
agent's `CallGuard` decides, as for a tool call; a refusal reaches the client as a JSON-RPC error
with the agent's words. Naming is `catalog`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, final

import anyio
from mcp.server import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    GetPromptRequestParams,
    GetPromptResult,
    ListPromptsResult,
    ListResourcesResult,
    ListResourceTemplatesResult,
    PaginatedRequestParams,
    ReadResourceRequestParams,
    ReadResourceResult,
)
from opentelemetry import trace
from pydantic import ValidationError

from mesh.errors import DiscoveryError, MeshError, PeerRejected, PolicyDenied
from mesh.gateway.catalog import (
    REGISTRY_AGENT,
    Listing,
    Offering,
    OfferingCache,
    Offerings,
    build_offerings,
    mesh_uri,
    split_name,
    split_uri,
)
from mesh.peers.directory import Instance
from mesh.peers.hop import HopClient
from mesh.runtime.node import MeshNode

if TYPE_CHECKING:
    from mesh.gateway.server import Gateway

__all__ = ["MeshOfferings", "install_resources"]

log = logging.getLogger(__name__)

_LIST_TIMEOUT: Final = 5.0  # seconds an agent has to list what it offers before it is left out of this listing
_MAX_PAGES: Final = 100
_MDNS_WINDOW: Final = 1.5  # as the gateway's own first listing: mDNS answers take up to ~1.2 s


def install_resources(gateway: Gateway) -> MeshOfferings:
    """Answer the five resource and prompt methods on `gateway.server` with every agent's offerings."""
    offerings = MeshOfferings(gateway.node, call_timeout=gateway.call_timeout, settle_timeout=gateway.settle_timeout)
    server = gateway.server
    server.add_request_handler("resources/list", PaginatedRequestParams, offerings.list_resources)
    server.add_request_handler("resources/templates/list", PaginatedRequestParams, offerings.list_templates)
    server.add_request_handler("resources/read", ReadResourceRequestParams, offerings.read_resource)
    server.add_request_handler("prompts/list", PaginatedRequestParams, offerings.list_prompts)
    server.add_request_handler("prompts/get", GetPromptRequestParams, offerings.get_prompt)
    return offerings


@final
class MeshOfferings:
    """The resources and prompts of every agent `node` sees, as request handlers of one MCP server."""

    def __init__(
        self,
        node: MeshNode,
        *,
        call_timeout: float | None = None,
        settle_timeout: float = 5.0,
        cache: OfferingCache | None = None,
    ) -> None:
        self.node = node
        self.call_timeout = call_timeout or 30.0
        self.settle_timeout = settle_timeout
        self.cache = cache or OfferingCache()
        self.shown: dict[Listing, str] = {}
        """What the client last saw, by listing (`resources`, `prompts`): a fingerprint of each."""
        self.listed = anyio.Event()
        """Set at the client's first listing of resources or prompts: only then is a change worth telling."""
        self._refreshing = anyio.Lock()
        self._settled = False

    # -- listings ----------------------------------------------------------------------------

    async def list_resources(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListResourcesResult:
        """Every agent's resources at `mesh://{agent}/{uri}` (one page: the whole mesh)."""
        del ctx, params
        return ListResourcesResult(resources=list(self._show(await self.offerings(), "resources").resources))

    async def list_templates(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListResourceTemplatesResult:
        """Every agent's resource templates at `mesh://{agent}/{template}`."""
        del ctx, params
        templates = self._show(await self.offerings(), "resources").templates
        return ListResourceTemplatesResult(resource_templates=list(templates))

    async def list_prompts(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListPromptsResult:
        """Every agent's prompts, named `{agent}__{prompt}`."""
        del ctx, params
        return ListPromptsResult(prompts=list(self._show(await self.offerings(), "prompts").prompts))

    async def offerings(self, *, refresh: bool = True) -> Offerings:
        """What the healthy agents offer now: cached per instance, asked again when the cache lapsed.

        With `refresh` off, only an instance never asked (or forgotten) is asked: the rest is trusted
        as last answered, since an agent says when its offering changes (`mesh.gateway.offering_watch`).
        """
        await self._first_picture()
        chosen = self.chosen()

        def cached(inst: Instance) -> Offering | None:
            return self.cache.get(inst.key) if refresh else self.cache.known(inst.key)

        async with self._refreshing:  # concurrent listings share one round of asking
            stale = [inst for inst in chosen.values() if cached(inst) is None]
            async with anyio.create_task_group() as tg:
                for inst in stale:
                    tg.start_soon(self._ask, inst)
        self.cache.keep_only(inst.key for inst in chosen.values())
        found = {agent: (inst.metadata, cached(inst) or Offering()) for agent, inst in chosen.items()}
        return build_offerings(found)

    def chosen(self) -> dict[str, Instance]:
        """The instance asked for each agent's offering: one healthy instance per agent, the registry aside."""
        return _one_instance_each(self.node.directory.all())

    def _show(self, offerings: Offerings, listing: Listing) -> Offerings:
        """Note what the client is about to see of `listing` (the change to tell it of is against this)."""
        self.shown[listing] = offerings.fingerprint(listing)
        self.listed.set()
        return offerings

    async def _first_picture(self) -> None:
        if self._settled:
            return
        if not self.node.directory.all():  # asked before the gateway's own first look: look first
            await self.node.settle(browse=_MDNS_WINDOW, timeout=self.settle_timeout)
        self._settled = True

    async def _ask(self, inst: Instance) -> None:
        hop = self.node.pool.hop(inst)
        try:
            with anyio.fail_after(_LIST_TIMEOUT):
                offering = Offering(
                    resources=tuple(await _listing(hop, "resources/list", "resources")),
                    templates=tuple(await _listing(hop, "resources/templates/list", "resourceTemplates")),
                    prompts=tuple(await _listing(hop, "prompts/list", "prompts")),
                )
        except (MeshError, TimeoutError) as exc:
            log.warning("%s (%s) did not list its resources and prompts: %s", inst.name, inst.instance, exc)
            return  # not cached: asked again at the next listing
        self.cache.put(inst.key, offering)

    # -- reads and gets ----------------------------------------------------------------------

    async def read_resource(
        self, ctx: ServerRequestContext[Any], params: ReadResourceRequestParams
    ) -> ReadResourceResult:
        """Read `mesh://{agent}/{uri}` from an instance of the agent; the contents keep the name asked for."""
        del ctx
        target = split_uri(params.uri)
        if target is None:
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"unknown resource {params.uri!r}: gateway resources are named mesh://AGENT/URI "
                "(see resources/list and resources/templates/list)",
            )
        agent, uri = target
        raw = await self._forward(agent, "resources/read", {"uri": uri}, uri, "read_resource")
        try:
            result = ReadResourceResult.model_validate(raw)
        except ValidationError:
            raise MCPError(
                code=INTERNAL_ERROR, message=f"{agent} answered a read of {uri!r} with no contents"
            ) from None
        for content in result.contents:
            if content.uri == uri or not split_uri(content.uri):
                content.uri = mesh_uri(agent, content.uri)
        return result

    async def get_prompt(self, ctx: ServerRequestContext[Any], params: GetPromptRequestParams) -> GetPromptResult:
        """Get prompt `{agent}__{prompt}` from an instance of the agent."""
        del ctx
        target = split_name(params.name)
        if target is None:
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"unknown prompt {params.name!r}: gateway prompts are named AGENT__PROMPT (see prompts/list)",
            )
        agent, prompt = target
        request: dict[str, Any] = {"name": prompt}
        if params.arguments:
            request["arguments"] = dict(params.arguments)
        raw = await self._forward(agent, "prompts/get", request, prompt, "get_prompt")
        try:
            return GetPromptResult.model_validate(raw)
        except ValidationError:
            raise MCPError(
                code=INTERNAL_ERROR, message=f"{agent} answered prompt {prompt!r} with no messages"
            ) from None

    async def _forward(
        self, agent: str, method: str, params: dict[str, Any], target: str, action: str
    ) -> dict[str, Any]:
        """One read-only request to `agent`, through the node's peer pool; MCPError with the reason when it fails."""
        trace.get_current_span().update_name(f"{method} {agent}")  # the SDK's SERVER span for this request
        try:
            return await self.node.pool.request(
                agent, method, params, target=target, action=action, timeout=self.call_timeout
            )
        except MeshError as exc:
            code = INVALID_REQUEST if isinstance(exc, PeerRejected | PolicyDenied | DiscoveryError) else INTERNAL_ERROR
            raise MCPError(code=code, message=str(exc)) from None


def _one_instance_each(instances: list[Instance]) -> dict[str, Instance]:
    """One healthy instance per agent (the first by instance id, so the cache stays warm), the registry aside."""
    chosen: dict[str, Instance] = {}
    for inst in sorted(instances, key=lambda i: i.key):
        if inst.name != REGISTRY_AGENT and inst.name not in chosen and inst.healthy():
            chosen[inst.name] = inst
    return chosen


async def _listing(hop: HopClient, method: str, key: str) -> list[Mapping[str, Any]]:
    """Every entry of one listing (following its pages); nothing when the agent does not serve the method."""
    found: list[Mapping[str, Any]] = []
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        params: dict[str, Any] = {"_meta": hop.envelope()}
        if cursor:
            params["cursor"] = cursor
        try:
            page = await hop.request(method, params, timeout=_LIST_TIMEOUT)
        except PeerRejected as exc:  # "Method not found", mostly: a server that offers none of these
            log.info("%s: %s", method, exc)
            return found
        found.extend(entry for entry in page.get(key) or [] if isinstance(entry, dict))
        cursor = page.get("nextCursor")
        if not isinstance(cursor, str) or not cursor:
            break
    return found
