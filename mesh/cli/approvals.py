"""`mesh approvals ls|approve ID|deny ID`: the human side of the registry's approvals queue."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final

import anyio
import typer
from rich.text import Text

from mesh.cli.options import FoundMeshOpt, JsonOpt, RegistryOpt, fail, out, print_json
from mesh.credentials import acting_credential
from mesh.errors import RegistryError
from mesh.identity import MeshKeys
from mesh.registry_client import RegistryClient
from mesh.runtime.node import MeshNode
from mesh.wire import Approval, ApprovalDecision

__all__ = ["arguments_line", "register", "render_approvals", "resolve_id"]

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
    """List approvals, newest first, each with the call's arguments under it (to approvers; secrets masked)."""
    rows = anyio.run(_list, mesh, registry, status)
    if json_:
        print_json(rows)
        return
    if not rows:
        out.print("no approvals")
        return
    out.print(render_approvals(rows, width=out.width), soft_wrap=True)


def render_approvals(rows: Sequence[Approval], *, width: int) -> Text:
    """`mesh approvals ls` laid out for a terminal `width` columns wide, one request per line.

    Ids are never cut (`approve` takes them); the call and its status always show, and the other
    columns join while they fit. Under each request whose arguments the registry showed us, one
    line of them, cut to the width (`--json` has them whole).
    """
    cells = [_cells(a) for a in rows]
    room = {name: max(len(name), *(len(c[name]) for c in cells)) for name, _ in _COLUMNS}
    shown: list[str] = []
    used = 0
    for name, always in _COLUMNS:
        if always or used + room[name] + 2 <= width:
            shown.append(name)
            used += room[name] + 2
    text = Text()
    _line(text, {name: name for name in shown}, shown, room, "bold")
    for a, row in zip(rows, cells, strict=True):
        _line(text, row, shown, room, "", status=a.status)
        if a.arguments is not None:
            text.append("  " + arguments_line(a.arguments, width - 2) + "\n", style="dim")
    text.rstrip()
    return text


def arguments_line(arguments: Mapping[str, Any], width: int) -> str:
    """`k=v k=v` (JSON values, plain words bare), cut with "…" to `width` characters."""
    parts = [f"{key}={_shown(value)}" for key, value in arguments.items()]
    line = " ".join(parts) or "(no arguments)"
    return line if len(line) <= width else line[: max(width - 1, 0)] + "…"


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


_COLUMNS: Final = (
    ("id", True),
    ("call", True),
    ("status", True),
    ("caller", False),
    ("expires", False),
    ("for", False),
    ("decided by", False),
    ("requested", False),
)
"""The columns, in the order they join a narrow terminal's line (`True`: always shown); shown in `_ORDER`."""
_ORDER: Final = ("id", "call", "caller", "for", "requested", "expires", "status", "decided by")
_STATUS_STYLE: Final = {"pending": "yellow", "approved": "green"}
_BARE: Final = re.compile(r"[\w.@:/+*-]+")


def _cells(a: Approval) -> dict[str, str]:
    return {
        "id": a.id,
        "call": f"{a.agent}.{a.tool}",
        "caller": a.caller,
        "for": a.requested_by or "",
        "requested": _clock(a.requested_at),
        "expires": _clock(a.expires_at),
        "status": a.status,
        "decided by": str(a.decided_by or ""),
    }


def _line(
    text: Text, cells: Mapping[str, str], shown: list[str], room: Mapping[str, int], style: str, status: str = ""
) -> None:
    for name in sorted(shown, key=_ORDER.index):
        cell = cells[name].ljust(room[name] + 2)
        text.append(cell, style=_STATUS_STYLE.get(status, "red") if name == "status" and status else style)
    text.rstrip()
    text.append("\n")


def _shown(value: Any) -> str:
    if isinstance(value, str) and _BARE.fullmatch(value):
        return value
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    # A value may not steer the terminal: escape what is not printable (C1 controls, bidi overrides).
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)
