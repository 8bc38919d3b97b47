"""`mesh approvals ls|approve ID|deny ID`: the human side of the registry's approvals queue."""

from __future__ import annotations

import datetime
from typing import Annotated

import anyio
import typer
from rich.table import Table

from mesh.cli.options import FoundMeshOpt, JsonOpt, RegistryOpt, fail, out, print_json
from mesh.credentials import acting_credential
from mesh.errors import RegistryError
from mesh.identity import MeshKeys
from mesh.registry_client import RegistryClient
from mesh.runtime.node import MeshNode
from mesh.wire import Approval, ApprovalDecision

__all__ = ["register", "resolve_id"]

approvals_app = typer.Typer(help="Human approvals of risky calls (the registry's queue).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add `mesh approvals` to `app`."""
    app.add_typer(approvals_app, name="approvals")


@approvals_app.command("ls")
def ls(
    status: Annotated[str | None, typer.Option(help="pending, approved, denied or expired (default: all).")] = None,
    json_: JsonOpt = False,
    registry: RegistryOpt = None,
    mesh: FoundMeshOpt = None,
) -> None:
    """List approvals, newest first."""
    rows = anyio.run(_list, mesh, registry, status)
    if json_:
        print_json(rows)
        return
    if not rows:
        out.print("no approvals")
        return
    table = Table()
    for column in ("id", "agent", "tool", "caller", "requested", "expires", "status", "decided by"):
        table.add_column(column)
    for a in rows:
        colour = {"pending": "yellow", "approved": "green"}.get(a.status, "red")
        table.add_row(
            a.id, a.agent, a.tool, a.caller, _clock(a.requested_at), _clock(a.expires_at),
            f"[{colour}]{a.status}[/]", str(a.decided_by or ""),
        )  # fmt: skip
    out.print(table)


@approvals_app.command("approve")
def approve(
    approval_id: Annotated[
        str, typer.Argument(help="The approval's id, or its first characters (`mesh approvals ls`).")
    ],
    reason: Annotated[str | None, typer.Option(help="A note for the audit record.")] = None,
    json_: JsonOpt = False,
    registry: RegistryOpt = None,
    mesh: FoundMeshOpt = None,
) -> None:
    """Approve a pending call: it runs."""
    _decide(approval_id, "approve", reason, json_, registry, mesh)


@approvals_app.command("deny")
def deny(
    approval_id: Annotated[
        str, typer.Argument(help="The approval's id, or its first characters (`mesh approvals ls`).")
    ],
    reason: Annotated[str | None, typer.Option(help="A note for the audit record.")] = None,
    json_: JsonOpt = False,
    registry: RegistryOpt = None,
    mesh: FoundMeshOpt = None,
) -> None:
    """Deny a pending call: its caller gets a clean refusal."""
    _decide(approval_id, "deny", reason, json_, registry, mesh)


def _decide(
    approval_id: str, decision: str, reason: str | None, json_: bool, registry: str | None, mesh: str | None
) -> None:
    answer = ApprovalDecision.model_validate({"decision": decision, "reason": reason})
    try:
        decided = anyio.run(_send, mesh, registry, approval_id, answer)
    except RegistryError as exc:
        fail(str(exc))
    if json_:
        print_json(decided)
    else:
        by = f" by {decided.decided_by}" if decided.decided_by else ""
        out.print(f"{decided.id}: {decided.status}{by} ({decided.agent}.{decided.tool} for {decided.caller})")


async def _list(mesh: str | None, registry: str | None, status: str | None) -> list[Approval]:
    credential = acting_credential(MeshKeys.load(mesh), "mesh-cli")
    async with MeshNode("mesh-cli", mesh=mesh, registry=registry, credential=credential) as node:
        url = await node.find_registry()
        async with RegistryClient(url, token_factory=lambda: credential.token("registry")) as client:
            return await client.approvals(status=status)


async def _send(mesh: str | None, registry: str | None, approval_id: str, answer: ApprovalDecision) -> Approval:
    keys = MeshKeys.load(mesh)
    credential = acting_credential(keys, "mesh-cli")
    async with MeshNode("mesh-cli", mesh=mesh, registry=registry, credential=credential) as node:
        url = await node.find_registry()
        async with RegistryClient(url, token_factory=lambda: credential.token("registry")) as client:
            return await client.decide(resolve_id(approval_id, await client.approvals()), answer)


def resolve_id(given: str, approvals: list[Approval]) -> str:
    """The one approval `given` names: its whole id, or the start of exactly one; RegistryError in one line."""
    given = given.strip().lower()
    ids = [a.id for a in approvals]
    if given in ids:
        return given
    matches = [i for i in ids if given and i.startswith(given)]
    pending = [a.id for a in approvals if a.status == "pending" and a.id in matches]
    if len(matches) == 1:
        return matches[0]
    if len(pending) == 1:  # a short id names the pending one when the others are history
        return pending[0]
    if not matches:
        raise RegistryError(f"no approval has an id starting with {given!r} (see `mesh approvals ls`)")
    shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
    raise RegistryError(f"{given!r} starts {len(matches)} approval ids ({shown}): give more characters")


def _clock(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch).strftime("%H:%M:%S")
