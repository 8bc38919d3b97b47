"""The governance record shows any edit or deletion, and only an admin reads it.

Attack: whoever could write the registry's database file could change who approved a call, or
delete a denial, and nothing showed it. Now every entry is chained to the one before by a MAC
under the mesh secret, and `mesh audit verify` names the first entry edited, deleted or cut off.
The record names people and calls: a client's or an approver's token cannot read it.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from mesh.audit import head_of
from mesh.identity import MeshKeys
from mesh.registry_client import RegistryClient
from mesh.testing import RegistryProcess
from mesh.wire import ApprovalDecision, ApprovalRequest
from tests.integration.helpers import sdk_client
from tests.security.helpers import cli_as, ledger_mesh, person_token

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@asynccontextmanager
async def decided_approvals(db: Path) -> AsyncGenerator[RegistryProcess]:
    """A registry on `db` where `vault` filed two approvals by HTTP: alice approved one, bob denied the other."""
    keys = MeshKeys.load()
    async with RegistryProcess("--db", str(db)) as registry:
        agent = RegistryClient(registry.base_url, token_factory=lambda: keys.mint("vault", "registry", role="agent"))
        async with agent:
            filed = [
                await agent.file_approval(
                    ApprovalRequest(
                        agent="vault",
                        tool="withdraw",
                        caller="teller",
                        arguments_digest=f"{n}" * 64,
                        expires_at=time.time() + 120,
                    )
                )
                for n in range(2)
            ]
        answers = (
            (filed[0], "alice", ApprovalDecision(decision="approve")),
            (filed[1], "bob", ApprovalDecision(decision="deny")),
        )
        for approval, person, answer in answers:
            token = person_token(person, "approver")
            async with RegistryClient(registry.base_url, token_factory=lambda token=token: token) as client:
                await client.decide(approval.id, answer)
        yield registry


async def audit(registry: RegistryProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """`mesh audit ARGS` against `registry`, as the local operator."""
    return await anyio.to_thread.run_sync(lambda: cli_as(None, "audit", *args, "--registry", registry.base_url))


def change(db: Path, sql: str, *args: object) -> None:
    """Write the registry's database behind its back, as someone with the file but not the secret."""
    with sqlite3.connect(db) as conn:
        conn.execute(sql, args)


async def test_decided_approvals_are_recorded_with_who_decided_and_verify(
    mesh_env: dict[str, str], tmp_path: Path
) -> None:
    async with decided_approvals(tmp_path / "registry.sqlite3") as registry:
        exported = await audit(registry, "--json")
        lines = await audit(registry)
        verified = await audit(registry, "verify")
    assert exported.returncode == 0, exported.stderr
    entries: list[dict[str, Any]] = json.loads(exported.stdout)
    events = [(e["kind"], e["record"]["event"], (e["record"].get("decided_by") or {}).get("person")) for e in entries]
    assert events == [
        ("approval", "requested", None),
        ("approval", "requested", None),
        ("approval", "approved", "alice"),
        ("approval", "denied", "bob"),
    ]
    assert [json.loads(line) for line in lines.stdout.splitlines()] == entries
    assert set(entries[0]) == {"seq", "at", "kind", "record", "prev", "mac"}
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.strip() == "audit record intact: 4 records"


async def test_verify_names_an_edited_entry_then_a_deleted_one(mesh_env: dict[str, str], tmp_path: Path) -> None:
    db = tmp_path / "registry.sqlite3"
    async with decided_approvals(db) as registry:
        assert (await audit(registry, "verify")).returncode == 0
        [(seq, original)] = sqlite3.connect(db).execute("SELECT seq, record FROM audit WHERE seq = 3").fetchall()
        change(db, "UPDATE audit SET record = ? WHERE seq = 3", original.replace('"alice"', '"mallory"'))
        edited = await audit(registry, "verify")
        change(db, "UPDATE audit SET record = ? WHERE seq = 3", original)
        restored = await audit(registry, "verify")
        change(db, "DELETE FROM audit WHERE seq = 2")
        deleted = await audit(registry, "verify")
    assert seq == 3
    assert edited.returncode == 1
    assert edited.stderr.strip() == "mesh: error: audit record broken: record #3 was altered"
    assert restored.returncode == 0, restored.stderr
    assert deleted.returncode == 1
    assert deleted.stderr.strip() == "mesh: error: audit record broken: record #2 is missing"


async def test_verify_finds_entries_cut_off_the_end(mesh_env: dict[str, str], tmp_path: Path) -> None:
    db = tmp_path / "registry.sqlite3"
    async with decided_approvals(db) as registry:
        assert (await audit(registry, "verify")).returncode == 0
        change(db, "DELETE FROM audit WHERE seq = 4")
        cut = await audit(registry, "verify")
        change(db, "DELETE FROM audit_head")  # the registry's head gone too: this machine remembers #4
        headless = await audit(registry, "verify")
    assert cut.returncode == 1
    assert "the record ends at #3 but the registry's head says #4" in cut.stderr
    assert headless.returncode == 1
    assert "the record's head is missing" in headless.stderr


async def test_an_older_copy_restored_whole_is_found_by_the_machine_that_verified(
    mesh_env: dict[str, str], tmp_path: Path
) -> None:
    db = tmp_path / "registry.sqlite3"
    async with decided_approvals(db) as registry:
        assert (await audit(registry, "verify")).returncode == 0
        # As a copy taken after entry #3 would be: no #4, and the head the registry signed then.
        [(mac_3,)] = sqlite3.connect(db).execute("SELECT mac FROM audit WHERE seq = 3").fetchall()
        older = head_of(MeshKeys.load(), 3, mac_3)
        change(db, "DELETE FROM audit WHERE seq = 4")
        change(db, "UPDATE audit_head SET seq = ?, mac = ?, sig = ?", older.seq, older.mac, older.sig)
        restored = await audit(registry, "verify")
    assert restored.returncode == 1
    assert "the record ends at #3 but this machine verified it up to #4 before" in restored.stderr


async def test_only_an_admin_token_reads_the_record(mesh_env: dict[str, str], tmp_path: Path) -> None:
    keys = MeshKeys.load()
    async with (
        decided_approvals(tmp_path / "registry.sqlite3") as registry,
        httpx2.AsyncClient(base_url=registry.base_url, timeout=10) as http,
    ):

        async def read(token: str | None, path: str = "/api/audit") -> httpx2.Response:
            return await http.get(path, headers={"Authorization": f"Bearer {token}"} if token else {})

        anonymous = await read(None)
        as_client = await read(person_token("mallory", "client"))
        as_approver = await read(person_token("alice", "approver"))
        as_agent = await read(keys.mint("vault", "registry", role="agent"))
        head_as_client = await read(person_token("mallory", "client"), "/api/audit/head")
        as_admin = await read(person_token("root", "admin"))
    assert anonymous.status_code == 401
    assert "no mesh token" in anonymous.json()["error"]
    assert as_client.status_code == 403
    assert as_client.json()["error"] == "a token of role 'client' cannot read the governance record; an admin's can"
    assert as_approver.status_code == 403
    assert as_agent.status_code == 403
    assert head_as_client.status_code == 403
    assert as_admin.status_code == 200
    assert as_admin.headers["content-type"].startswith("application/x-ndjson")
    assert len(as_admin.text.splitlines()) == 4


async def test_a_call_the_policy_denied_is_in_the_record(mesh_env: dict[str, str], tmp_path: Path) -> None:
    async with ledger_mesh(tmp_path) as mesh:
        url = await _agent_url(mesh.registry.base_url, "ledger")
        async with sdk_client(url, caller="mallory") as client:
            result = await client.call_tool("probe", {})
        assert result.is_error
        with anyio.fail_after(30):  # the agent ships its spans in batches
            while not (denials := await _denials(mesh.registry)):
                await anyio.sleep(0.2)
        verified = await audit(mesh.registry, "verify")
    assert denials[0]["record"]["tool"] == "probe"
    assert denials[0]["record"]["caller"] == "mallory"
    assert "probes-are-qa-only" in denials[0]["record"]["policies"]
    assert verified.returncode == 0, verified.stderr


async def _denials(registry: RegistryProcess) -> list[dict[str, Any]]:
    exported = await audit(registry, "--json")
    assert exported.returncode == 0, exported.stderr
    entries: list[dict[str, Any]] = json.loads(exported.stdout)
    return [e for e in entries if e["kind"] == "policy" and e["record"]["event"] == "policy deny"]


async def _agent_url(registry: str, name: str) -> str:
    async with httpx2.AsyncClient(base_url=registry, timeout=5) as http:
        with anyio.fail_after(15):
            while not (found := (await http.get("/api/agents", params={"name": name})).json()):
                await anyio.sleep(0.2)
    return found[0]["url"]
