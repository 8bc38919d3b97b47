"""`mesh registry` and `mesh tracer`: the services, plugged into the `mesh` CLI by entry point."""

from __future__ import annotations

from typing import Annotated

import typer

from mesh.cli.options import MeshOpt
from mesh.cli.run import run_until_signalled
from mesh.config import DEFAULT_REGISTRY_PORT, DEFAULT_TRACER_PORT
from mesh.errors import ConfigError
from mesh.identity import parse_duration

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the service commands to the `mesh` app."""
    app.command("registry")(registry)
    app.command("tracer")(tracer)


def registry(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_REGISTRY_PORT,
    db: Annotated[
        str | None,
        typer.Option(
            envvar="MESH_REGISTRY_DB",
            help="SQLite file (default: under MESH_HOME), or postgresql://USER@HOST/DB, shared by every replica.",
        ),
    ] = None,
    no_mdns: Annotated[bool, typer.Option("--no-mdns", help="Do not announce on mDNS.")] = False,
    lan: Annotated[bool, typer.Option("--lan", help="Listen and announce on the LAN.")] = False,
    retain: Annotated[
        str | None, typer.Option(help="Drop traces older than this (e.g. 14d; default: keep everything).")
    ] = None,
    mesh: MeshOpt = None,
) -> None:
    """Run the registry: agent inventory, trace registry and approvals (default port 7420)."""
    from registry.service import serve_registry

    if lan and host == "127.0.0.1":
        host = "0.0.0.0"
    kept = _retention(retain)
    run_until_signalled(
        lambda: serve_registry(mesh=mesh, host=host, port=port, db=db, mdns=not no_mdns, lan=lan, retain=kept)
    )


def tracer(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_TRACER_PORT,
    db: Annotated[
        str | None, typer.Option(help="SQLite file (default: under MESH_HOME), or postgresql://USER@HOST/DB.")
    ] = None,
    forward: Annotated[
        str | None, typer.Option(help="Also send every span to this OTLP/HTTP endpoint (.../v1/traces).")
    ] = None,
    no_mdns: Annotated[bool, typer.Option("--no-mdns", help="Do not announce on mDNS.")] = False,
    lan: Annotated[bool, typer.Option("--lan", help="Listen and announce on the LAN.")] = False,
    retain: Annotated[
        str | None, typer.Option(help="Drop traces older than this (e.g. 14d; default: keep everything).")
    ] = None,
    mesh: MeshOpt = None,
) -> None:
    """Run a sidecar tracer: OTLP/HTTP receiver, durable store, trace queries (default port 7421)."""
    from registry.service import serve_tracer

    if lan and host == "127.0.0.1":
        host = "0.0.0.0"
    kept = _retention(retain)
    run_until_signalled(
        lambda: serve_tracer(
            mesh=mesh, host=host, port=port, db=db, forward=forward, mdns=not no_mdns, lan=lan, retain=kept
        )
    )


def _retention(text: str | None) -> float | None:
    """`--retain 14d` in seconds; a bad duration is a usage error (one line)."""
    if text is None:
        return None
    try:
        seconds = parse_duration(text)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--retain") from None
    if seconds <= 0:
        raise typer.BadParameter("must be longer than zero", param_hint="--retain")
    return seconds
