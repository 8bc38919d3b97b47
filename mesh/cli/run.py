"""`mesh run TARGET`: serve one agent as its own process (HTTP, or stdio for MCP clients)."""

from __future__ import annotations

import os
import signal
from typing import Annotated

import anyio
import typer
from pydantic import TypeAdapter, ValidationError

from mesh.agent import Agent
from mesh.cli.options import MeshOpt, RegistryOpt
from mesh.config import mesh_name
from mesh.errors import ConfigError
from mesh.naming import check_name
from mesh.runtime.adapter import serve_adopted
from mesh.runtime.loader import load_agent
from mesh.runtime.meshfile import RUN_ENV, RUN_HEADERS
from mesh.runtime.process import RunOptions, run_stdio, serve_agent
from mesh.runtime.upstream import UpstreamSpec

__all__ = ["parse_meta", "parse_pairs", "register", "run_until_signalled"]


def register(app: typer.Typer) -> None:
    """Add `mesh run` to `app`."""
    app.command("run", no_args_is_help=True)(run)


def run(
    target: Annotated[
        str | None, typer.Argument(help="A file (agents/kb.py), module:attr, or a built-in agent name.")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Serve the agent under another name (required with --command or --url).")
    ] = None,
    command: Annotated[
        str | None, typer.Option("--command", help='Adopt a stdio MCP server: "CMD ARGS..." (started as a child).')
    ] = None,
    url: Annotated[str | None, typer.Option("--url", help="Adopt a remote Streamable HTTP MCP server.")] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", help="KEY=VALUE for the --command server's environment (repeatable).")
    ] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", help="KEY=VALUE HTTP header sent to the --url server (repeatable).")
    ] = None,
    meta: Annotated[
        list[str] | None, typer.Option("--meta", help="Override governance metadata: KEY=VALUE (repeatable).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 0,
    lan: Annotated[bool, typer.Option("--lan", help="Listen and announce on the LAN.")] = False,
    stdio: Annotated[bool, typer.Option("--stdio", help="Serve MCP over stdin/stdout instead of HTTP.")] = False,
    registry: RegistryOpt = None,
    policy: Annotated[str | None, typer.Option(envvar="MESH_POLICY", help="Cedar policy file.")] = None,
    no_mdns: Annotated[bool, typer.Option("--no-mdns", help="Do not announce or browse on mDNS.")] = False,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Serve without authentication (loopback development only).")
    ] = False,
    mesh: MeshOpt = None,
) -> None:
    """Serve an agent: MCP over Streamable HTTP at /mcp (and /healthz), or over stdio."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, not {port}")
    if name is not None and not name.strip():
        raise ConfigError("--name must not be empty")
    adopted = _adopted(target, name, command, url, env or [], header or [], stdio)
    if lan and host == "127.0.0.1":
        host = "0.0.0.0"
    options = RunOptions(
        mesh=mesh_name(mesh),
        host=host,
        port=port,
        lan=lan,
        registry=registry,
        policy=policy,
        mdns=not no_mdns,
        auth=not no_auth,
    )
    if adopted is not None:
        assert name is not None  # _adopted insists on it
        run_until_signalled(_serve_adopted, name, adopted, options, parse_meta(meta or []))
        return
    if target is None:
        raise ConfigError("give a TARGET to run, or an MCP server with --command or --url")
    agent = load_agent(target).with_overrides(name=name, meta=parse_meta(meta or []))
    if stdio:
        anyio.run(run_stdio, agent, options)
    else:
        run_until_signalled(_serve, agent, options)


async def _serve(agent: Agent, options: RunOptions) -> None:
    await serve_agent(agent, options)


async def _serve_adopted(name: str, spec: UpstreamSpec, options: RunOptions, meta: dict[str, str]) -> None:
    await serve_adopted(name, spec, options, meta=meta)


def _adopted(
    target: str | None,
    name: str | None,
    command: str | None,
    url: str | None,
    env: list[str],
    headers: list[str],
    stdio: bool,
) -> UpstreamSpec | None:
    """The MCP server `--command` or `--url` adopts, checked; None for a TARGET."""
    if command is None and url is None:
        if env or headers:
            raise ConfigError("--env and --header go with --command or --url")
        return None
    if command is not None and url is not None:
        raise ConfigError("give --command or --url, not both")
    if target is not None:
        raise ConfigError(f"give a TARGET or {'--command' if command is not None else '--url'}, not both")
    if not name:
        raise ConfigError(
            f"{'--command' if command is not None else '--url'} needs --name: the name it has on the mesh"
        )
    if stdio:
        raise ConfigError("--stdio serves a mesh agent to an MCP client; an adopted server is served over HTTP")
    check_name(name)
    # `mesh up` hands an adopted server's secrets over in the environment, never on the command line (meshfile).
    given_env = {**_json_pairs(RUN_ENV), **parse_pairs(env, "--env")} if command is not None else {}
    given_headers = {**_json_pairs(RUN_HEADERS), **parse_pairs(headers, "--header")} if url is not None else {}
    if command is not None and headers:
        raise ConfigError("--header goes with --url, not --command (use --env for a stdio server)")
    if url is not None and env:
        raise ConfigError("--env goes with --command, not --url (use --header for a remote server)")
    return UpstreamSpec.parse(command=command, url=url, env=given_env, headers=given_headers)


def _json_pairs(variable: str) -> dict[str, str]:
    """The JSON object of strings in environment variable `variable` (empty when unset)."""
    raw = os.environ.get(variable)
    if not raw:
        return {}
    try:
        return TypeAdapter(dict[str, str]).validate_json(raw)
    except ValidationError:
        raise ConfigError(f"{variable} must hold a JSON object of strings") from None


def run_until_signalled(fn: object, *args: object) -> None:
    """Run `fn(*args)` on uvloop (when present) until it returns or SIGINT/SIGTERM arrives."""

    async def main() -> None:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch)
            await fn(*args)  # type: ignore[operator]
            tg.cancel_scope.cancel()

    anyio.run(main, backend_options={"use_uvloop": _has_uvloop()})


def parse_meta(pairs: list[str]) -> dict[str, str]:
    """`["owner=x", "jurisdiction=eu"]` → dict; ConfigError on a pair without `=`."""
    return parse_pairs(pairs, "--meta")


def parse_pairs(pairs: list[str], option: str) -> dict[str, str]:
    """`["K=V", ...]` → dict; ConfigError naming `option` on a pair without `=` (the value is never shown)."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            shown = pair if option == "--meta" else f"{key[:20]}..."  # an --env or --header may hold a secret
            raise ConfigError(f"{option} takes KEY=VALUE, not {shown!r}")
        result[key.strip()] = value
    return result


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401  # pyright: ignore[reportUnusedImport]
    except ImportError:
        return False
    return True
