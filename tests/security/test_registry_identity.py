"""A node adopts a registry or tracer only after it proves it holds the mesh secret (issue 21).

The attack: a token holder (no secret) listens where a registry is looked for (the default port,
a URL it talked someone into passing, the port of a registry that died) and names the mesh in its
`/healthz`. Before, nodes and agents adopted it and sent it their registry tokens and approvals.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx2
import pytest
from starlette.types import Receive, Scope, Send

from mesh.config import DEFAULT_REGISTRY_PORT
from mesh.discovery.mdns import MdnsAnnouncer
from mesh.discovery.proof import bound, new_challenge
from mesh.discovery.txt import Announcement, signed
from mesh.errors import RegistryError
from mesh.identity import MeshKeys
from mesh.runtime.http import bind, serve
from mesh.runtime.node import MeshNode
from mesh.testing import AgentProcess, MeshProcess, RegistryProcess, free_port
from tests.integration.helpers import mesh_cli

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ECHO = str(Path(__file__).resolve().parents[2] / "agents" / "echo.py")


@dataclass(frozen=True)
class Seen:
    """One request the impostor received."""

    method: str
    path: str
    query: str
    authorization: str | None


class Impostor:
    """An HTTP service claiming to be mesh `mesh`'s `kind`, without its secret; it records every request."""

    def __init__(self, mesh: str, kind: str = "registry") -> None:
        self.mesh = mesh
        self.kind = kind
        self.seen: list[Seen] = []
        self._changed = anyio.Event()

    @property
    def authorizations(self) -> list[str]:
        """Every Authorization header that reached the impostor."""
        return [s.authorization for s in self.seen if s.authorization is not None]

    @property
    def challenges(self) -> int:
        """How many times someone asked it to prove itself."""
        return sum(1 for s in self.seen if s.path == "/healthz" and "challenge=" in s.query)

    async def challenged(self, times: int) -> None:
        """Return once it has been asked to prove itself `times` times (bound it with fail_after)."""
        while self.challenges < times:
            await self._changed.wait()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"]
                await send({"type": f"{kind}.complete"})
                if kind == "lifespan.shutdown":
                    return
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization")
        self.seen.append(
            Seen(
                scope["method"],
                scope["path"],
                scope["query_string"].decode(),
                authorization.decode() if authorization is not None else None,
            )
        )
        self._changed.set()
        self._changed = anyio.Event()
        if scope["path"] == "/healthz":
            # The best a token holder can do: name the mesh, and answer the challenge with a guess.
            body: object = {"status": "ok", "name": self.kind, "mesh": self.mesh, "proof": "A" * 43}
        else:
            body = [] if scope["method"] == "GET" else {}  # what a registry would answer, to look the part
        content = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": content})


@asynccontextmanager
async def impostor_on(port: int, mesh: str, kind: str = "registry") -> AsyncGenerator[tuple[Impostor, str]]:
    """An impostor listening on 127.0.0.1:`port` while inside the block, with its base URL."""
    impostor = Impostor(mesh, kind)
    sock = bind("127.0.0.1", port)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve, impostor, sock)
            yield impostor, f"http://127.0.0.1:{sock.getsockname()[1]}"
            tg.cancel_scope.cancel()
    finally:
        sock.close()


async def registered(registry: RegistryProcess, name: str) -> None:
    """Wait until `name` is in the registry's inventory (bound it with fail_after)."""
    async with httpx2.AsyncClient(base_url=registry.base_url) as http:
        while not any(r["name"] == name for r in (await http.get("/api/agents")).json()):
            await anyio.sleep(0.05)


async def said(process: MeshProcess, text: str) -> None:
    """Wait until `process` wrote `text` on stderr (bound it with fail_after)."""
    while text not in process.stderr:
        await anyio.sleep(0.05)


# -- the attack: an impostor where a registry is looked for ---------------------------------------


async def test_a_node_does_not_adopt_an_impostor_on_the_default_registry_port(mesh_env: dict[str, str]) -> None:
    mesh = mesh_env["MESH_NAME"]
    async with (
        impostor_on(DEFAULT_REGISTRY_PORT, mesh) as (impostor, _),
        MeshNode("observer", mdns=False, poll_interval=0.1) as node,
    ):
        with anyio.fail_after(10):
            await node.settle()
            await impostor.challenged(times=3)  # asked again and again: never adopted
        assert node.registry_url is None
        with pytest.raises(RegistryError, match="no registry found"):
            await node.find_registry(timeout=0.2)
    assert impostor.challenges >= 3
    assert impostor.authorizations == []


async def test_an_agent_sends_no_token_to_an_impostor_on_the_default_registry_port(mesh_env: dict[str, str]) -> None:
    mesh = mesh_env["MESH_NAME"]
    async with impostor_on(DEFAULT_REGISTRY_PORT, mesh) as (impostor, url), AgentProcess(ECHO) as echo:
        with anyio.fail_after(15):
            await said(echo, f"registry at {url} did not prove it holds mesh {mesh}'s secret; not used")
            # Still asking a poll interval later: a registry it had adopted would have had its registration by now.
            await impostor.challenged(times=impostor.challenges + 2)
    assert impostor.authorizations == []
    assert impostor.challenges >= 2


async def test_an_impostor_given_as_registry_is_refused_by_nodes_agents_and_the_cli(mesh_env: dict[str, str]) -> None:
    mesh = mesh_env["MESH_NAME"]
    async with impostor_on(free_port(), mesh) as (impostor, url):
        async with MeshNode("observer", registry=url, mdns=False) as node:
            with pytest.raises(RegistryError, match="did not prove it holds mesh"):
                await node.find_registry(timeout=0.5)
            assert node.registry_url is None
        async with AgentProcess(ECHO, "--registry", url, "--no-mdns") as echo:
            warning = f"registry at {url} did not prove it holds mesh {mesh}'s secret; not used"
            with anyio.fail_after(15):
                await said(echo, warning)
                await impostor.challenged(times=impostor.challenges + 2)  # retried every poll interval...
            assert echo.stderr.count(warning) == 1  # ...and said once
        result = await anyio.to_thread.run_sync(
            lambda: mesh_cli("approvals", "approve", "ap-1", "--registry", url, "--mesh", mesh)
        )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(f"mesh: error: registry at {url} did not prove")
    assert "Traceback" not in result.stderr
    assert impostor.authorizations == []


async def test_a_node_drops_a_registry_that_died_and_refuses_the_impostor_on_its_port(
    mesh_env: dict[str, str],
) -> None:
    mesh = mesh_env["MESH_NAME"]
    async with (
        RegistryProcess("--no-mdns") as registry,
        MeshNode("observer", registry=registry.base_url, mdns=False, poll_interval=0.1) as node,
    ):
        assert await node.find_registry() == registry.base_url
        with anyio.fail_after(10):
            await registry.stop()
            while node.registry_url is not None:  # its polls fail, it is proved again, and fails
                await node.registry_moved()
        async with impostor_on(registry.port, mesh) as (impostor, _):
            with anyio.fail_after(10):
                await impostor.challenged(times=3)
            assert node.registry_url is None
    assert impostor.authorizations == []


async def test_a_tracer_impostor_gets_no_spans_whether_named_or_announced(
    mesh_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    mesh = mesh_env["MESH_NAME"]
    keys = MeshKeys.load(mesh)
    async with impostor_on(free_port(), mesh, "tracer") as (named, named_url):
        monkeypatch.setenv("MESH_TRACER", named_url)
        async with MeshNode("observer", mdns=False, poll_interval=0.1) as node:
            with anyio.fail_after(10):
                await named.challenged(times=2)
            assert node.tracer_url is None
    monkeypatch.delenv("MESH_TRACER")
    # A genuine, signed announcement (replayed, or left by a tracer that died) pointing at an impostor.
    async with impostor_on(free_port(), mesh, "tracer") as (announced, announced_url):
        port = int(announced_url.rsplit(":", 1)[1])
        async with (
            MdnsAnnouncer(_tracer_announcement(keys, port)),
            MeshNode("observer", poll_interval=0.1) as node,
        ):
            with anyio.fail_after(10):
                await announced.challenged(times=2)
            assert node.tracer_url is None
    assert named.authorizations == announced.authorizations == []
    assert not [s for s in named.seen + announced.seen if s.path != "/healthz"]


# -- the legitimate path --------------------------------------------------------------------------


async def test_a_real_registry_given_as_registry_is_adopted_by_nodes_and_agents(mesh_env: dict[str, str]) -> None:
    async with (
        RegistryProcess("--no-mdns") as registry,
        MeshNode("observer", registry=registry.base_url, mdns=False) as node,
        AgentProcess(ECHO, "--registry", registry.base_url, "--no-mdns"),
    ):
        assert node.registry_url == registry.base_url  # proved while the node was entered
        with anyio.fail_after(15), node.directory.watch() as changes:
            await registered(registry, "echo")
            while not any(i.name == "echo" and "registry" in i.sources for i in node.directory.all()):
                await changes.receive()


async def test_a_real_registry_on_the_default_port_is_adopted(mesh_env: dict[str, str]) -> None:
    async with (
        RegistryProcess("--no-mdns", port=DEFAULT_REGISTRY_PORT) as registry,
        MeshNode("observer", mdns=False) as node,
        AgentProcess(ECHO, "--no-mdns"),
    ):
        assert node.registry_url == f"http://127.0.0.1:{DEFAULT_REGISTRY_PORT}"
        with anyio.fail_after(15):
            await registered(registry, "echo")


async def test_a_real_registry_and_tracer_found_on_mdns_are_adopted(mesh_env: dict[str, str]) -> None:
    async with (
        RegistryProcess() as registry,
        MeshProcess(["tracer", "--port", str(free_port())]) as tracer,
        MeshNode("observer", poll_interval=0.1) as node,
    ):
        with anyio.fail_after(10):
            while node.registry_url is None or node.tracer_url is None:
                with anyio.move_on_after(0.1):  # the tracer's adoption has no event of its own
                    await node.registry_moved()
        assert node.registry_url == registry.base_url
        assert node.tracer_url == tracer.base_url


async def test_a_real_tracer_named_by_mesh_tracer_is_adopted(
    mesh_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with MeshProcess(["tracer", "--port", str(free_port()), "--no-mdns"]) as tracer:
        monkeypatch.setenv("MESH_TRACER", tracer.base_url)
        async with MeshNode("observer", mdns=False) as node:
            assert node.tracer_url == tracer.base_url


# -- the protocol, as the registry speaks it ------------------------------------------------------


async def test_the_registry_proves_itself_only_to_a_well_formed_challenge(mesh_env: dict[str, str]) -> None:
    mesh = mesh_env["MESH_NAME"]
    keys = MeshKeys.load(mesh)
    challenge = new_challenge()
    async with RegistryProcess("--no-mdns") as registry, httpx2.AsyncClient(base_url=registry.base_url) as http:
        plain = await http.get("/healthz")
        proved = await http.get("/healthz", params={"challenge": challenge})
        malformed = [await http.get("/healthz", params={"challenge": bad}) for bad in ["short", "x" * 129, "a b" * 8]]
    assert plain.status_code == 200
    assert "proof" not in plain.json()
    assert plain.json()["mesh"] == mesh
    assert proved.status_code == 200
    body = proved.json()
    assert body["name"] == "registry"
    port = registry.port
    assert keys.check_proof(bound(challenge, port), "registry", body["proof"])
    assert not keys.check_proof(challenge, "registry", body["proof"])  # bound to the port it answers on
    assert not keys.check_proof(bound(challenge, port), "tracer", body["proof"])
    assert not MeshKeys(b"another secret", mesh).check_proof(bound(challenge, port), "registry", body["proof"])
    for response in malformed:
        assert response.status_code == 400
        assert len(response.text.splitlines()) == 1
        assert "challenge" in response.json()["error"]


def _tracer_announcement(keys: MeshKeys, port: int) -> Callable[[], Announcement]:
    """A tracer's signed announcement of 127.0.0.1:`port`, as `mesh tracer` makes it, freshly signed on every call."""
    instance = uuid.uuid4().hex[:8]

    def factory() -> Announcement:
        plain = Announcement(
            kind="tracer",
            mesh=keys.mesh,
            name="tracer",
            instance=instance,
            host="127.0.0.1",
            port=port,
            path="/",
            expires=int(time.time()) + 300,
            auth=True,
            fingerprint=keys.fingerprint,
        )
        return signed(plain, keys.sign)

    return factory
