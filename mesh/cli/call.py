"""`mesh call`: call one tool on an agent and print its result."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import anyio
import typer
from rich.prompt import Confirm

from mesh.cli.args import build_arguments
from mesh.cli.options import JsonOpt, LanOpt, MeshOpt, RegistryOpt, err, fail, out, print_json
from mesh.config import mesh_name
from mesh.credentials import acting_credential
from mesh.errors import ConfigError, MeshError, ToolFailed
from mesh.identity import ANY_AGENT, Credential, MeshKeys
from mesh.peers.directory import Instance
from mesh.peers.rounds import with_answers
from mesh.peers.session import PeerSession, result_value, shared_transport
from mesh.runtime.node import MeshNode

__all__ = ["register"]

CLI_CALLER = "mesh-cli"
"""The caller name the CLI's tokens carry."""


def register(app: typer.Typer) -> None:
    """Add `mesh call` to `app`."""
    app.command("call", no_args_is_help=True)(call)


def call(
    target: Annotated[list[str], typer.Argument(help="AGENT TOOL, or just TOOL with --url.")],
    arg: Annotated[list[str] | None, typer.Option("--arg", help="A tool argument KEY=VALUE (repeatable).")] = None,
    args: Annotated[str | None, typer.Option("--args", help="Tool arguments as a JSON object.")] = None,
    url: Annotated[str | None, typer.Option(help="Call the agent at this /mcp URL directly.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the result.")] = 30.0,
    json_: JsonOpt = False,
    registry: RegistryOpt = None,
    mesh: MeshOpt = None,
    lan: LanOpt = False,
) -> None:
    """Call TOOL on AGENT (found through the mesh) or on the agent at --url."""
    if url is not None:
        if len(target) != 1:
            fail("with --url, give just the TOOL name")
        agent, tool = None, target[0]
    else:
        if len(target) != 2:
            fail("give AGENT and TOOL (or --url URL TOOL)")
        agent, tool = target
    value = anyio.run(_call, mesh_name(mesh), agent, tool, url, arg or [], args, timeout, registry, lan)
    if json_:
        print_json(value)
    elif isinstance(value, str):
        out.print(value, markup=False, highlight=False)
    else:
        out.print_json(data=value)


async def _call(
    mesh: str,
    agent: str | None,
    tool: str,
    url: str | None,
    pairs: list[str],
    raw_json: str | None,
    timeout: float,
    registry: str | None,
    lan: bool,
) -> Any:
    keys = MeshKeys.load(mesh)
    credential = acting_credential(keys, CLI_CALLER)
    if url is None:
        assert agent is not None
        return await _call_through_mesh(mesh, agent, tool, pairs, raw_json, timeout, registry, lan, credential)
    transport = shared_transport()
    try:
        with anyio.fail_after(timeout + 5):
            async with PeerSession(url, transport=transport, token=lambda: credential.token(ANY_AGENT)) as session:
                if tool not in session.tools:
                    known = ", ".join(sorted(session.tools)) or "none"
                    raise ConfigError(f"the agent at {url} has no tool {tool!r} (tools: {known})")
                arguments = build_arguments(pairs, raw_json, session.tools[tool].input_schema)
                result = await session.call(tool, arguments, timeout=timeout)
                return result_value(result)
    except ToolFailed as exc:
        fail(f"tool {tool!r} failed: {exc}")
    except TimeoutError:
        fail(f"no answer from {url} within {timeout:g}s")
    except MeshError:
        raise
    finally:
        await transport.aclose()


async def _call_through_mesh(
    mesh: str,
    agent: str,
    tool: str,
    pairs: list[str],
    raw_json: str | None,
    timeout: float,
    registry: str | None,
    lan: bool,
    credential: Credential,
) -> Any:
    async with MeshNode(CLI_CALLER, mesh=mesh, registry=registry, lan=lan, credential=credential) as node:
        await node.settle(browse=0.3)
        schema = _input_schema(node.directory.all(), agent, tool)
        arguments = build_arguments(pairs, raw_json, schema)
        try:
            if sys.stdin.isatty():  # a person is here: approvals are asked on this terminal
                return await with_answers(lambda: node.call(agent, tool, arguments, timeout=timeout), _ask_on_terminal)
            return await node.call(agent, tool, arguments, timeout=timeout)
        except ToolFailed as exc:
            failure = exc  # reported once the node has shut down: an exit inside its task group is a traceback
    return fail(f"tool {tool!r} failed: {failure}")


async def _ask_on_terminal(key: str, request: dict[str, Any]) -> dict[str, Any]:
    """Put an elicitation to the person at this terminal: yes/no for the `approve` field."""
    del key
    params: dict[str, Any] = request.get("params") or {}
    message = str(params.get("message") or "Approve this call?")
    approve = await anyio.to_thread.run_sync(lambda: Confirm.ask(f"[bold yellow]approval[/] {message}", console=err))
    return {"action": "accept", "content": {"approve": approve}}


def _input_schema(instances: list[Instance], agent: str, tool: str) -> dict[str, Any] | None:
    for inst in instances:
        if inst.name == agent:
            for info in inst.tool_info:
                if info.get("name") == tool:
                    schema = info.get("inputSchema")
                    return dict(schema) if isinstance(schema, dict) else None  # pyright: ignore[reportUnknownArgumentType]
    return None
