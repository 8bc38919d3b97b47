"""`mesh run TARGET`: serve one agent as its own process (HTTP, or stdio for MCP clients)."""

from __future__ import annotations

import signal
from typing import Annotated

import anyio
import typer

from mesh.agent import Agent
from mesh.cli.options import MeshOpt, RegistryOpt
from mesh.config import mesh_name
from mesh.errors import ConfigError
from mesh.runtime.loader import load_agent
from mesh.runtime.process import RunOptions, run_stdio, serve_agent

__all__ = ["parse_meta", "register", "run_until_signalled"]


def register(app: typer.Typer) -> None:
    """Add `mesh run` to `app`."""
    app.command("run", no_args_is_help=True)(run)


def run(
    target: Annotated[str, typer.Argument(help="A file (agents/kb.py), module:attr, or a built-in agent name.")],
    name: Annotated[str | None, typer.Option(help="Serve the agent under another name.")] = None,
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
    agent = load_agent(target).with_overrides(name=name, meta=parse_meta(meta or []))
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
    if stdio:
        anyio.run(run_stdio, agent, options)
    else:
        run_until_signalled(_serve, agent, options)


async def _serve(agent: Agent, options: RunOptions) -> None:
    await serve_agent(agent, options)


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
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--meta takes KEY=VALUE, not {pair!r}")
        result[key.strip()] = value
    return result


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401  # pyright: ignore[reportUnusedImport]
    except ImportError:
        return False
    return True
