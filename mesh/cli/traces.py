"""`mesh traces ls|show`: query the trace registry (the registry, or a sidecar tracer)."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
import httpx2
import typer
from pydantic import TypeAdapter, ValidationError
from rich.console import Console

from mesh.cli.options import FoundMeshOpt, JsonOpt, RegistryOpt, fail, out, print_json
from mesh.credentials import acting_credential
from mesh.discovery.proof import prove_service
from mesh.errors import RegistryError
from mesh.identity import MeshKeys
from mesh.runtime.node import MeshNode
from mesh.tracing.render import render_summaries, render_tree
from mesh.wire import TraceSummary, TraceTree

__all__ = ["print_tree", "register"]

traces_app = typer.Typer(help="Decision traces: who called what, why, and what was decided.", no_args_is_help=True)
TracerOpt = Annotated[
    str | None, typer.Option("--tracer", envvar="MESH_TRACER", help="Query this tracer instead of the registry.")
]
_summaries = TypeAdapter(list[TraceSummary])


def register(app: typer.Typer) -> None:
    """Add `mesh traces` to `app`."""
    app.add_typer(traces_app, name="traces")


@traces_app.command("ls")
def ls(
    agent: Annotated[str | None, typer.Option(help="Only traces this agent took part in.")] = None,
    tool: Annotated[str | None, typer.Option(help="Only traces in which this tool was called.")] = None,
    status: Annotated[str | None, typer.Option(help="ok or error: how the root call ended.")] = None,
    denied: Annotated[bool, typer.Option("--denied", help="Only traces in which a call was denied.")] = False,
    errors: Annotated[
        bool, typer.Option("--errors", help="Only traces in which a span failed beside the root (handled or not).")
    ] = False,
    since: Annotated[str | None, typer.Option(help="Only traces started within this long: 10m, 2h, 1d.")] = None,
    min_duration: Annotated[float | None, typer.Option("--min-duration", help="Slower than this many ms.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many traces.")] = 50,
    json_: JsonOpt = False,
    tracer: TracerOpt = None,
    registry: RegistryOpt = None,
    mesh: FoundMeshOpt = None,
) -> None:
    """List recent traces, latest first."""
    params = {"agent": agent, "tool": tool, "status": status, "since": since, "limit": str(limit)}
    params |= {"denied": "true" if denied else None, "errors": "true" if errors else None}
    if min_duration is not None:
        params["min_duration_ms"] = str(min_duration)
    body = anyio.run(_get, mesh, registry, tracer, "/api/traces", {k: v for k, v in params.items() if v})
    try:
        found = _summaries.validate_python(body)
    except ValidationError as exc:
        fail(f"the trace registry sent an unexpected answer ({exc.error_count()} bad fields)")
    if json_:
        print_json(found)
    elif found:
        out.print(render_summaries(found, width=out.width))
    else:
        out.print("no traces")


@traces_app.command("show")
def show(
    trace_id: Annotated[str, typer.Argument(help="The trace id, or its start (see `mesh traces ls`).")],
    json_: JsonOpt = False,
    tracer: TracerOpt = None,
    registry: RegistryOpt = None,
    mesh: FoundMeshOpt = None,
) -> None:
    """Show one decision trace as a tree: agents, timings, decisions, errors."""
    body = anyio.run(_get, mesh, registry, tracer, f"/api/traces/{trace_id}", {})
    try:
        tree = TraceTree.model_validate(body)
    except ValidationError as exc:
        fail(f"the trace registry sent an unexpected answer ({exc.error_count()} bad fields)")
    if json_:
        print_json(tree)
    else:
        print_tree(tree, out)


def print_tree(tree: TraceTree, console: Console) -> None:
    """Print `tree`, a long line wrapped under its own branch (never cut at the terminal's edge)."""
    console.print(render_tree(tree), soft_wrap=False)


async def _get(mesh: str | None, registry: str | None, tracer: str | None, path: str, params: dict[str, str]) -> Any:
    keys = MeshKeys.load(mesh)
    base = await _proven(keys, tracer) if tracer else await _registry(mesh, registry)
    # A token, for a registry that serves the LAN: sent only to a service that proved it is ours.
    headers = {"authorization": f"Bearer {acting_credential(keys, 'mesh-cli').token('registry')}"}
    try:
        async with httpx2.AsyncClient(base_url=base, timeout=10) as http:
            response = await http.get(path, params=params, headers=headers)
    except httpx2.HTTPError as exc:
        raise RegistryError(f"cannot reach the trace registry at {base}: {type(exc).__name__}") from exc
    if response.status_code != 200:
        try:
            message = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        raise RegistryError(f"trace registry at {base}: {message}")
    return response.json()


async def _registry(mesh: str | None, registry: str | None) -> str:
    async with MeshNode("mesh-cli", mesh=mesh, registry=registry, mdns=registry is None) as node:
        return await node.find_registry()


async def _proven(keys: MeshKeys, url: str) -> str:
    """`url`, once the tracer or registry there proved it holds this mesh's secret."""
    async with httpx2.AsyncClient() as http:
        if await prove_service(http, url, keys) is None:
            raise RegistryError(f"{url} did not prove it holds mesh {keys.mesh}'s secret (is it running?)")
    return url.rstrip("/")
