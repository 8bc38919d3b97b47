"""`mesh audit [--since 1d] [--json]` and `mesh audit verify`: export the governance record, and check it.

The CLI acts as `MESH_TOKEN`'s person (an admin's token reads the record) or else as the local
operator, and holds the mesh secret, so it checks every entry's MAC itself (`mesh.audit`); it also
remembers, per chain, the last entry it verified, under the mesh's data directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer

from mesh.audit import verify_chain, verify_head, verify_seen
from mesh.cli.options import FoundMeshOpt, JsonOpt, RegistryOpt, fail, print_json
from mesh.config import mesh_paths
from mesh.credentials import acting_credential
from mesh.errors import RegistryError
from mesh.identity import MeshKeys, parse_duration
from mesh.registry_client import RegistryClient
from mesh.runtime.node import MeshNode
from mesh.wire import AuditHead, AuditRecord

__all__ = ["register"]

audit_app = typer.Typer(invoke_without_command=True)

_EXPORT_HELP = (
    "Print the governance record (policy verdicts that denied or asked for approval, approvals and who "
    "decided them) as JSON Lines for a SIEM, one entry a line, or one JSON array with --json.\n\n"
    "Each entry: seq, at (epoch seconds), kind, record, prev and mac. Reads as the local operator, or as MESH_TOKEN's "
    "person if their token is an admin's."
)
_VERIFY_HELP = (
    "Check that no entry of the governance record was edited, deleted or reordered: exit 0, or exit 1 "
    "naming the first bad entry.\n\n"
    "Every entry's MAC is checked with the mesh secret, and its link to the entry before. A chain alone "
    "cannot show that its last entries were cut off, so the registry's MACed head, and the last entry "
    "this machine verified, must still be in it.\n\n"
    "Not found: an older copy of the whole database restored before this machine verified a newer one, "
    "or a record wiped whole."
)


def register(app: typer.Typer) -> None:
    """Add `mesh audit` to `app`."""
    app.add_typer(audit_app, name="audit")


@audit_app.callback(help=_EXPORT_HELP)
def export(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(help="Only entries of the last DURATION: 30m, 8h, 1d.")] = None,
    json_: JsonOpt = False,
    registry: RegistryOpt = None,
    mesh: FoundMeshOpt = None,
) -> None:
    """Print the governance record as JSON Lines (one entry a line), or one JSON array with --json."""
    ctx.obj = {"registry": registry, "mesh": mesh}
    if ctx.invoked_subcommand is not None:
        return
    start = time.time() - parse_duration(since) if since else None
    try:
        _, _, entries = anyio.run(_fetch, mesh, registry, start)
    except RegistryError as exc:
        fail(str(exc))
    if json_:
        print_json([e.model_dump() for e in entries])
        return
    for entry in entries:
        sys.stdout.write(json.dumps(entry.model_dump()) + "\n")
    sys.stdout.flush()


@audit_app.command("verify", help=_VERIFY_HELP)
def verify(ctx: typer.Context, registry: RegistryOpt = None, mesh: FoundMeshOpt = None) -> None:
    """Check the whole chain with the mesh keys; exit 1 naming the first bad entry."""
    given: dict[str, Any] = ctx.obj if isinstance(ctx.obj, dict) else {}
    registry = registry or given.get("registry")
    mesh = mesh or given.get("mesh")
    try:
        keys, head, entries = anyio.run(_fetch, mesh, registry, None)
    except RegistryError as exc:
        fail(str(exc))
    memory = mesh_paths(keys.mesh).ensure().data_dir / "audit-verified.json"
    seen = _recall(memory, entries)
    problem = verify_chain(entries, keys) or verify_head(entries, keys, head) or verify_seen(entries, seen)
    if problem is not None:
        fail(f"audit record broken: {problem}")
    _remember(memory, entries)
    print(f"audit record intact: {len(entries)} records")


async def _fetch(
    mesh: str | None, registry: str | None, since: float | None
) -> tuple[MeshKeys, AuditHead | None, list[AuditRecord]]:
    keys = MeshKeys.load(mesh)
    credential = acting_credential(keys, "mesh-cli")  # MESH_TOKEN's person, else the local operator (admin)
    async with MeshNode("mesh-cli", mesh=mesh, registry=registry, credential=credential) as node:
        url = await node.find_registry()
        async with RegistryClient(url, token_factory=lambda: credential.token("registry"), timeout=5.0) as client:
            # The head first: entries appended meanwhile only lengthen the chain past it.
            head = await client.audit_head() if since is None else None
            return keys, head, await client.audit(since=since)


def _recall(memory: Path, entries: list[AuditRecord]) -> tuple[int, str] | None:
    """The (seq, MAC) this machine last verified on the chain that `entries` start, if any."""
    if not entries:
        return None
    try:
        seen = json.loads(memory.read_text()).get(entries[0].mac)
    except (OSError, ValueError, AttributeError):
        return None
    match seen:
        case [int() as seq, str() as mac]:
            return seq, mac
        case _:
            return None


def _remember(memory: Path, entries: list[AuditRecord]) -> None:
    """Keep the last verified entry of this chain (the first entry's MAC names the chain)."""
    if not entries:
        return
    try:
        known: dict[str, Any] = json.loads(memory.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):  # pyright: ignore[reportUnnecessaryIsInstance]
        known = {}
    known[entries[0].mac] = [entries[-1].seq, entries[-1].mac]
    tmp = memory.with_name(f".{memory.name}.{os.getpid()}")
    with contextlib.suppress(OSError):  # a memory not kept only weakens the next check
        tmp.write_text(json.dumps(known))
        os.replace(tmp, memory)
