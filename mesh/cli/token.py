"""`mesh token`, `mesh login`, `mesh logout`, `mesh whoami`: tokens for people and clients, and whom the CLI acts as."""

from __future__ import annotations

import datetime
from typing import Annotated

import typer

from mesh.cli.options import FoundMeshOpt, JsonOpt, fail, out, print_json
from mesh.credentials import acting_credential, forget_login, login_file, save_login
from mesh.errors import IdentityError
from mesh.identity import ANY_AGENT, ROLES, MeshKeys, parse_duration

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add `mesh token`, `mesh login`, `mesh logout` and `mesh whoami` to `app`."""
    app.command("token")(token)
    app.command("login", no_args_is_help=True)(login)
    app.command("logout")(logout)
    app.command("whoami")(whoami)


def token(
    person: Annotated[str | None, typer.Option(help="The person it names (recorded as who asked or decided).")] = None,
    role: Annotated[str, typer.Option(help="agent, client, approver or admin.")] = "client",
    group: Annotated[list[str] | None, typer.Option("--group", help="A group the person is in (repeatable).")] = None,
    caller: Annotated[str | None, typer.Option(help="The caller name it carries (default: the person).")] = None,
    audience: Annotated[str, typer.Option(help="The agent it is for ('*': any agent of this mesh).")] = ANY_AGENT,
    ttl: Annotated[str, typer.Option(help="How long it lives: 30s, 10m, 8h, 30d at most.")] = "10m",
    mesh: FoundMeshOpt = None,
) -> None:
    """Print a token to send as `Authorization: Bearer <token>` (or to give a person for `mesh login`)."""
    if role not in ROLES:
        fail(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    if role == "agent" and (person or group):
        fail("an agent token names no person or group: drop --person/--group, or mint a person's role")
    if role in ("approver", "admin") and not person:
        fail(f"a {role} token is a person's: give --person NAME")
    keys = MeshKeys.load(mesh)
    acting = acting_credential(keys, "mesh-cli").principal
    if acting.role != "admin":
        fail(f"acting as {acting.person or acting.name} ({acting.role}): only an admin mints tokens; unset MESH_TOKEN")
    name = caller or person or "mesh-cli"
    print(keys.mint(name, audience, ttl=parse_duration(ttl), role=role, person=person, groups=group or ()))  # pyright: ignore[reportArgumentType]


def login(
    value: Annotated[str, typer.Argument(metavar="TOKEN", help="A person's token from `mesh token --person`.")],
    mesh: FoundMeshOpt = None,
) -> None:
    """Act as the person TOKEN names in later commands (kept in this mesh's config, mode 0600)."""
    keys = MeshKeys.load(mesh)
    try:
        principal = save_login(keys, value)
    except IdentityError as exc:
        fail(f"not a usable token of mesh {keys.mesh}: {exc}")
    groups = f" in {', '.join(principal.groups)}" if principal.groups else ""
    out.print(f"logged in as {principal.person or principal.name} ({principal.role}{groups})")


def logout(mesh: FoundMeshOpt = None) -> None:
    """Forget the saved login: commands act as the local operator again."""
    keys = MeshKeys.load(mesh)
    out.print("logged out" if forget_login(keys.mesh) else f"no saved login ({login_file(keys.mesh)})")


def whoami(json_: JsonOpt = False, mesh: FoundMeshOpt = None) -> None:
    """Whom this CLI acts as: MESH_TOKEN, the saved login, or the local operator."""
    keys = MeshKeys.load(mesh)
    credential = acting_credential(keys, "mesh-cli")
    p = credential.principal
    claims = keys.verify(credential.token("registry"), audience="registry")
    row = {"person": p.person, "role": p.role, "groups": list(p.groups), "caller": p.name, "mesh": keys.mesh}
    if json_:
        print_json({**row, "expires_at": claims.expires_at})
        return
    until = datetime.datetime.fromtimestamp(claims.expires_at).strftime("%Y-%m-%d %H:%M")
    groups = f", groups {', '.join(p.groups)}" if p.groups else ""
    out.print(f"{p.person or p.name} ({p.role}{groups}) in mesh {keys.mesh}, token valid until {until}")
