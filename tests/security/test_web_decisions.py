"""The web page's decisions need a signed-in person; on `--lan` every read needs a token too.

Attack: any local process posted `{"decision": "approve"}` to the page's route with a forged
`Origin: http://127.0.0.1:PORT` and the registry recorded it as `web@127.0.0.1`, no token, no
person. Now the route needs the session a person's approver token opens, and names them.
"""

from __future__ import annotations

import time
from http.cookies import SimpleCookie

import httpx2
import pytest

from mesh.identity import MeshKeys
from mesh.testing import RegistryProcess
from tests.security.helpers import pending_approval

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def browser(base: str) -> httpx2.AsyncClient:
    """An HTTP client that behaves as the page does: its own Origin, a cookie jar."""
    return httpx2.AsyncClient(base_url=base, headers={"Origin": base}, timeout=10)


def person_token(person: str, *groups: str) -> str:
    """A person's approver token for the registry, as `mesh token --person --role approver` mints it."""
    return MeshKeys.load().mint(f"{person}-browser", "registry", role="approver", person=person, groups=groups)


async def status_of(base: str, approval_id: str) -> str:
    async with httpx2.AsyncClient(base_url=base, timeout=10) as http:
        response = await http.get(f"/api/approvals/{approval_id}")
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


async def test_a_tokenless_decision_with_a_forged_origin_is_refused_and_stays_pending(mesh_env: dict[str, str]) -> None:
    async with RegistryProcess() as registry, pending_approval(registry.base_url) as filed:
        base = registry.base_url
        async with browser(base) as http:
            forged = await http.post(f"/ui/approvals/{filed['id']}/decision", json={"decision": "approve"})
            http.cookies.set("mesh_session", "not-a-token")
            garbage = await http.post(f"/ui/approvals/{filed['id']}/decision", json={"decision": "approve"})
        assert forged.status_code == 401
        assert "sign in" in forged.json()["error"]
        assert "\n" not in forged.json()["error"]
        assert garbage.status_code == 401
        assert await status_of(base, filed["id"]) == "pending"


async def test_agent_and_client_tokens_cannot_sign_in_nor_pose_as_a_session(mesh_env: dict[str, str]) -> None:
    keys = MeshKeys.load()
    agent = keys.mint("vault", "registry", role="agent")
    client = keys.mint("cli", "registry", role="client", person="mallory", groups=["finance"])
    nameless = keys.mint("bot", "registry", role="approver", groups=["finance"])
    async with RegistryProcess() as registry, pending_approval(registry.base_url) as filed:
        base = registry.base_url
        async with browser(base) as http:
            refused = [(await http.post("/ui/session", json={"token": t})) for t in (agent, client, nameless)]
            assert "mesh_session" not in http.cookies
            http.cookies.set("mesh_session", agent)  # set by hand, as a local process could
            posing = await http.post(f"/ui/approvals/{filed['id']}/decision", json={"decision": "approve"})
            whom = await http.get("/ui/session")
        assert [r.status_code for r in refused] == [403, 403, 403]
        assert "role 'agent' cannot sign in" in refused[0].json()["error"]
        assert "role 'client' cannot sign in" in refused[1].json()["error"]
        assert "names no person" in refused[2].json()["error"]
        assert posing.status_code == 401
        assert whom.status_code == 401
        assert await status_of(base, filed["id"]) == "pending"


async def test_a_signed_in_approver_decides_and_is_named_as_the_decider(mesh_env: dict[str, str]) -> None:
    async with RegistryProcess() as registry, pending_approval(registry.base_url) as filed:
        base = registry.base_url
        async with browser(base) as http:
            signed_in = await http.post("/ui/session", json={"token": person_token("alice", "finance")})
            whom = await http.get("/ui/session")
            decided = await http.post(
                f"/ui/approvals/{filed['id']}/decision", json={"decision": "approve", "reason": "invoice checked"}
            )
            again = await http.post(f"/ui/approvals/{filed['id']}/decision", json={"decision": "deny"})
        async with httpx2.AsyncClient(base_url=base) as plain:
            record = (await plain.get(f"/api/approvals/{filed['id']}")).json()
    assert signed_in.status_code == 200, signed_in.text
    assert {k: signed_in.json()[k] for k in ("person", "groups", "role")} == {
        "person": "alice",
        "groups": ["finance"],
        "role": "approver",
    }
    assert whom.json()["person"] == "alice"
    assert decided.status_code == 200, decided.text
    assert decided.json()["decided_by"] == {"person": "alice", "groups": ["finance"]}
    assert again.status_code == 409
    assert record["status"] == "approved"
    assert record["decided_by"] == {"person": "alice", "groups": ["finance"]}
    assert record["reason"] == "invoice checked"


async def test_a_person_outside_the_deciding_group_or_the_requester_cannot_decide(mesh_env: dict[str, str]) -> None:
    async with RegistryProcess() as registry, pending_approval(registry.base_url) as filed:
        base = registry.base_url
        route = f"/ui/approvals/{filed['id']}/decision"
        async with browser(base) as outsider, browser(base) as requester:
            await outsider.post("/ui/session", json={"token": person_token("carol", "ops")})
            await requester.post("/ui/session", json={"token": person_token("bob", "finance")})
            by_outsider = await outsider.post(route, json={"decision": "approve"})
            by_requester = await requester.post(route, json={"decision": "approve"})
        assert by_outsider.status_code == 403
        assert by_outsider.json()["error"].startswith("only members of finance may decide this")
        assert by_requester.status_code == 403
        assert await status_of(base, filed["id"]) == "pending"


async def test_signing_out_stops_decisions(mesh_env: dict[str, str]) -> None:
    async with RegistryProcess() as registry, pending_approval(registry.base_url) as filed:
        base = registry.base_url
        async with browser(base) as http:
            await http.post("/ui/session", json={"token": person_token("alice", "finance")})
            signed_out = await http.delete("/ui/session")
            whom = await http.get("/ui/session")
            after = await http.post(f"/ui/approvals/{filed['id']}/decision", json={"decision": "approve"})
        assert signed_out.status_code == 204
        assert SimpleCookie(signed_out.headers["set-cookie"])["mesh_session"]["max-age"] == "0"
        assert whom.status_code == 401
        assert after.status_code == 401
        assert await status_of(base, filed["id"]) == "pending"


async def test_the_session_cookie_is_httponly_samesite_strict_and_lives_as_long_as_the_token(
    mesh_env: dict[str, str],
) -> None:
    token = MeshKeys.load().mint("alice-browser", "registry", 3600, role="approver", person="alice")
    async with RegistryProcess() as registry, browser(registry.base_url) as http:
        response = await http.post("/ui/session", json={"token": token})
    header = response.headers["set-cookie"]
    cookie = SimpleCookie(header)["mesh_session"]
    assert response.status_code == 200
    assert cookie.value == token
    assert "HttpOnly" in header
    assert "SameSite=Strict" in header
    assert cookie["path"] == "/"
    assert 3500 < int(cookie["max-age"]) <= 3600
    assert response.json()["expires_at"] == pytest.approx(time.time() + 3600, abs=60)


async def test_a_signed_in_decision_from_another_origin_is_refused(mesh_env: dict[str, str]) -> None:
    async with RegistryProcess() as registry, pending_approval(registry.base_url) as filed:
        base = registry.base_url
        async with browser(base) as http:
            await http.post("/ui/session", json={"token": person_token("alice", "finance")})
            route = f"/ui/approvals/{filed['id']}/decision"
            cross = await http.post(route, json={"decision": "approve"}, headers={"Origin": "http://127.0.0.1:1"})
            rebound = await http.post(
                route, json={"decision": "approve"}, headers={"Host": "evil.example", "Origin": "http://evil.example"}
            )
        assert cross.status_code == 403
        assert "cross-origin" in cross.json()["error"]
        assert rebound.status_code == 403
        assert await status_of(base, filed["id"]) == "pending"


async def test_on_the_lan_every_read_needs_a_token_and_the_page_still_signs_in(mesh_env: dict[str, str]) -> None:
    keys = MeshKeys.load()
    client = {"Authorization": f"Bearer {keys.mint('dashboard', 'registry', role='client')}"}
    # --lan turns the LAN rules on; --host localhost keeps the socket on 127.0.0.1 (no mDNS either).
    async with RegistryProcess("--lan", "--host", "localhost", "--no-mdns") as registry:
        base = f"http://127.0.0.1:{registry.port}"
        async with pending_approval(base) as filed, httpx2.AsyncClient(base_url=base) as anyone:
            closed = {
                path: (await anyone.get(path)).status_code
                for path in ("/api/agents", "/api/traces", "/api/approvals", f"/api/approvals/{filed['id']}")
            }
            closed["/openapi.json"] = (await anyone.get("/openapi.json")).status_code
            refusal = (await anyone.get("/api/agents")).json()["error"]
            open_ = {path: (await anyone.get(path)).status_code for path in ("/", "/healthz")}
            with_token = (await anyone.get("/api/agents", headers=client)).status_code
            async with browser(base) as page:
                signed_in = await page.post("/ui/session", json={"token": person_token("alice", "finance")})
                read_signed_in = (await page.get("/api/approvals")).status_code
                decided = await page.post(f"/ui/approvals/{filed['id']}/decision", json={"decision": "deny"})
    assert closed == dict.fromkeys(closed, 401)
    assert "Bearer" in refusal
    assert "\n" not in refusal
    assert open_ == {"/": 200, "/healthz": 200}
    assert with_token == 200
    assert signed_in.status_code == 200
    assert read_signed_in == 200
    assert decided.status_code == 200, decided.text
    assert decided.json()["decided_by"]["person"] == "alice"
