"""`mesh call`: call one tool on an agent and print its result."""

from __future__ import annotations

import difflib
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from functools import partial
from typing import Annotated, Any, Final

import anyio
import typer
from rich.prompt import Confirm

from mesh.approvals import arguments_digest
from mesh.cli.args import build_arguments
from mesh.cli.options import FoundMeshOpt, JsonOpt, LanOpt, RegistryOpt, err, fail, mesh_flag, out, print_json
from mesh.config import mesh_name
from mesh.credentials import acting_credential
from mesh.errors import ConfigError, DiscoveryError, MeshError, ToolFailed
from mesh.identity import ANY_AGENT, Credential, MeshKeys
from mesh.peers.directory import Instance
from mesh.peers.rounds import with_answers
from mesh.peers.session import PeerSession, result_value, shared_transport
from mesh.registry_client import RegistryClient
from mesh.runtime.approval_gate import APPROVAL_TTL
from mesh.runtime.node import DISCOVERY_GRACE, MeshNode
from mesh.wire import APPROVAL_META_KEY, Approval

__all__ = ["register", "unknown_agent"]

CLI_CALLER = "mesh-cli"
"""The caller name the CLI's tokens carry."""

_DEFAULT_TIMEOUT: Final = 30.0
_FIRST_LOOK: Final = 1.0
_REGISTRY_WAIT: Final = 1.0
_ANNOUNCE_WAIT: Final = 0.3
"""How long an agent neither the registry nor mDNS knows yet may take to be announced (on loopback: ms)."""
_LOOK_EVERY: Final = 1.0


def register(app: typer.Typer) -> None:
    """Add `mesh call` to `app`."""
    app.command("call", no_args_is_help=True)(call)


def call(
    target: Annotated[list[str], typer.Argument(help="AGENT TOOL, or just TOOL with --url.")],
    arg: Annotated[list[str] | None, typer.Option("--arg", help="A tool argument KEY=VALUE (repeatable).")] = None,
    args: Annotated[str | None, typer.Option("--args", help="Tool arguments as a JSON object.")] = None,
    url: Annotated[str | None, typer.Option(help="Call the agent at this /mcp URL directly.")] = None,
    timeout: Annotated[
        float | None,
        typer.Option(help="Seconds to wait for the result (default 30; a tool that needs approval: the approval TTL)."),
    ] = None,
    json_: JsonOpt = False,
    registry: RegistryOpt = None,
    mesh: FoundMeshOpt = None,
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
    if timeout is not None and timeout <= 0:
        fail("--timeout must be a positive number of seconds")
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
    timeout: float | None,
    registry: str | None,
    lan: bool,
) -> Any:
    keys = MeshKeys.load(mesh)
    credential = acting_credential(keys, CLI_CALLER)
    if url is None:
        assert agent is not None
        return await _call_through_mesh(mesh, agent, tool, pairs, raw_json, timeout, registry, lan, credential)
    transport = shared_transport()
    timeout = timeout or _DEFAULT_TIMEOUT
    try:
        with anyio.fail_after(timeout + 5):
            async with PeerSession(url, transport=transport, token=lambda: credential.token(ANY_AGENT)) as session:
                if tool not in session.tools:
                    known = ", ".join(sorted(session.tools)) or "none"
                    raise ConfigError(f"the agent at {url} has no tool {tool!r} (tools: {known})")
                arguments = _arguments(f"tool {tool!r}", pairs, raw_json, session.tools[tool].input_schema)
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
    timeout: float | None,
    registry: str | None,
    lan: bool,
    credential: Credential,
) -> Any:
    async with MeshNode(CLI_CALLER, mesh=mesh, registry=registry, lan=lan, credential=credential) as node:
        await node.settle(browse=0.3)
        if not node.directory.instances(agent):  # not heard of on mDNS yet: the registry's listing may know it
            with anyio.move_on_after(_REGISTRY_WAIT):
                await node.registry_synced.wait()
            await _announced(node, agent, DISCOVERY_GRACE if lan else _ANNOUNCE_WAIT)
            names = {i.name for i in node.directory.all()}
            if agent not in names and not await _registered(node, credential, agent):
                raise DiscoveryError(unknown_agent(agent, mesh, names))  # a typo answers at once, with close names
        info = _tool_info(node.directory.all(), agent, tool)
        schema = info.get("inputSchema") if info else None
        arguments = _arguments(f"{agent}.{tool}", pairs, raw_json, schema if isinstance(schema, dict) else None)  # pyright: ignore[reportUnknownArgumentType]
        if timeout is None:
            timeout = APPROVAL_TTL + _DEFAULT_TIMEOUT if _needs_approval(info) else _DEFAULT_TIMEOUT

        async def the_call() -> Any:
            if sys.stdin.isatty():  # a person is here: approvals are asked on this terminal
                return await with_answers(lambda: node.call(agent, tool, arguments, timeout=timeout), _ask_on_terminal)
            return await node.call(agent, tool, arguments, timeout=timeout)

        watch = partial(_say_while_waiting, node, credential, agent, tool, arguments_digest(arguments), mesh)
        try:
            return await _watched(the_call, watch)
        except ToolFailed as exc:
            failure = exc  # reported once the node has shut down: an exit inside its task group is a traceback
    return fail(f"tool {tool!r} failed: {failure}")


def unknown_agent(agent: str, mesh: str, names: set[str]) -> str:
    """Why `agent` cannot be called: not in `mesh`; the close names (difflib), else the names there are."""
    close = sorted(difflib.get_close_matches(agent, names, n=3, cutoff=0.6))
    if close:
        return f"no agent named {agent!r} in mesh {mesh!r}; did you mean {' or '.join(close)}?"
    if names:
        shown = sorted(names)
        listed = ", ".join(shown[:12]) + (f", ... ({len(shown)} in all)" if len(shown) > 12 else "")
        return f"no agent named {agent!r} in mesh {mesh!r} (its agents: {listed})"
    return f"no agent named {agent!r} in mesh {mesh!r}: no agent is running in it (see `mesh ls`)"


async def _registered(node: MeshNode, credential: Credential, agent: str) -> bool:
    """Whether the registry holds `agent` now (it may have registered since the node's first look)."""
    url = node.registry_url
    if url is None:
        return False
    with anyio.move_on_after(_REGISTRY_WAIT):
        try:
            async with RegistryClient(url, token_factory=lambda: credential.token("registry")) as client:
                return bool(await client.agents(name=agent))
        except MeshError:
            return False
    return False


async def _announced(node: MeshNode, agent: str, wait: float) -> None:
    """Return once `agent` is in the node's directory, or after `wait` seconds."""
    with anyio.move_on_after(wait), node.directory.watch() as changes:
        while not any(i.name == agent for i in node.directory.all()):
            await changes.receive()


async def _watched(call: Callable[[], Awaitable[Any]], watch: Callable[[float], Coroutine[Any, Any, None]]) -> Any:
    """`call()`, with `watch(started)` running beside it until it returns; a MeshError comes out unwrapped."""
    outcome: list[Any] = []
    failure: list[MeshError] = []
    started = time.time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch, started)
        try:
            outcome.append(await call())
        except MeshError as exc:  # kept out of the task group's ExceptionGroup: main() prints it in one line
            failure.append(exc)
        finally:
            tg.cancel_scope.cancel()
    if failure:
        raise failure[0]
    return outcome[0]


async def _say_while_waiting(
    node: MeshNode, credential: Credential, agent: str, tool: str, digest: str, mesh: str, started: float
) -> None:
    """Tell the person at this terminal when the call waits in the approvals queue, and how to decide it.

    The approval is this exact call's (agent, tool and arguments digest), filed since it started. Best
    effort: a caller who may not list approvals, or no registry, just waits without the note.
    """
    told: set[str] = set()
    await anyio.sleep(_FIRST_LOOK)  # most calls answer before anyone needs to be told anything
    flag = mesh_flag(mesh)
    while True:
        url = node.registry_url
        if url is not None:
            try:
                async with RegistryClient(url, token_factory=lambda: credential.token("registry")) as client:
                    while True:
                        for a in await client.approvals(status="pending"):
                            mine = (a.agent, a.tool, a.arguments_digest) == (agent, tool, digest)
                            if mine and a.id not in told and a.requested_at >= started - 1:
                                told.add(a.id)
                                _say_waiting(a, flag)
                        await anyio.sleep(_LOOK_EVERY)
            except MeshError:
                return
        await anyio.sleep(_LOOK_EVERY)


def _say_waiting(approval: Approval, flag: str) -> None:
    who = f"a member of {' or '.join(approval.approvers)}" if approval.approvers else "an approver"
    left = max(0, round(approval.expires_at - time.time()))
    err.print(
        f"mesh: {approval.agent}.{approval.tool} waits for {who} (approval {approval.id}, expires in {left}s);"
        f" decide with: mesh approvals approve {approval.id}{flag}  (or deny)",
        markup=False,
        highlight=False,
    )


async def _ask_on_terminal(key: str, request: dict[str, Any]) -> dict[str, Any]:
    """Put an elicitation to the person at this terminal: yes/no for the `approve` field."""
    del key
    params: dict[str, Any] = request.get("params") or {}
    message = str(params.get("message") or "Approve this call?")
    approve = await anyio.to_thread.run_sync(lambda: Confirm.ask(f"[bold yellow]approval[/] {message}", console=err))
    return {"action": "accept", "content": {"approve": approve}}


def _tool_info(instances: list[Instance], agent: str, tool: str) -> Mapping[str, Any] | None:
    """The tool's listing from the agent (None when the agent is not known yet); ConfigError naming its tools."""
    offered: set[str] = set()
    for inst in instances:
        if inst.name == agent:
            for info in inst.tool_info:
                if info.get("name") == tool:
                    return info
            offered.update(inst.tools)
    if offered:
        raise ConfigError(f"agent {agent!r} has no tool {tool!r} (its tools: {', '.join(sorted(offered))})")
    return None


def _needs_approval(info: Mapping[str, Any] | None) -> bool:
    meta = info.get("_meta") if info else None
    return isinstance(meta, dict) and meta.get(APPROVAL_META_KEY) is True  # pyright: ignore[reportUnknownMemberType]


def _arguments(what: str, pairs: list[str], raw_json: str | None, schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """The call's arguments; ConfigError naming an argument the tool does not take (and those it does)."""
    arguments = build_arguments(pairs, raw_json, schema)
    properties = (schema or {}).get("properties")
    if isinstance(properties, dict) and (schema or {}).get("additionalProperties") is not True:
        unknown = sorted(set(arguments) - set(properties))  # pyright: ignore[reportUnknownArgumentType]
        if unknown:
            takes = ", ".join(sorted(properties)) or "none"  # pyright: ignore[reportUnknownArgumentType]
            raise ConfigError(f"{what} takes no argument {unknown[0]!r} (its arguments: {takes})")
    return arguments
