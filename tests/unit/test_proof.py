"""`prove_service`: only a service holding this mesh's secret proves itself; garbage never raises."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.discovery.proof import bound, is_challenge, new_challenge, prove_service
from mesh.identity import MeshKeys

pytestmark = pytest.mark.anyio

KEYS = MeshKeys(b"the-secret", "alpha")
URL = "http://127.0.0.1:7420"

Handler = Callable[[httpx2.Request], httpx2.Response]


def service(keys: MeshKeys, kind: str = "registry", **extra: Any) -> Handler:
    """A `/healthz` that answers its challenge the way a registry or tracer holding `keys` does."""

    def handle(request: httpx2.Request) -> httpx2.Response:
        challenge = bound(request.url.params["challenge"], request.url.port or 80)
        body = {"status": "ok", "name": kind, "mesh": keys.mesh, "proof": keys.prove(challenge, kind), **extra}
        return httpx2.Response(200, json=body)

    return handle


def answering(status: int = 200, *, body: bytes = b"", headers: dict[str, str] | None = None) -> Handler:
    """A `/healthz` that always answers the same, whatever the challenge."""

    def handle(request: httpx2.Request) -> httpx2.Response:
        del request
        return httpx2.Response(status, content=body, headers=headers)

    return handle


async def prove(handler: Handler, *, kind: str | None = None, keys: MeshKeys = KEYS) -> str | None:
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as http:
        return await prove_service(http, URL, keys, kind=kind)


async def test_a_registry_holding_the_mesh_secret_proves_itself() -> None:
    assert await prove(service(KEYS)) == "registry"
    assert await prove(service(KEYS), kind="registry") == "registry"


async def test_a_tracer_holding_the_mesh_secret_proves_itself_as_a_tracer() -> None:
    assert await prove(service(KEYS, "tracer")) == "tracer"
    assert await prove(service(KEYS, "tracer"), kind="tracer") == "tracer"


async def test_a_proof_of_another_kind_does_not_count() -> None:
    assert await prove(service(KEYS, "tracer"), kind="registry") is None
    assert await prove(service(KEYS, "registry"), kind="tracer") is None


async def test_a_proof_for_a_name_that_is_no_service_kind_does_not_count() -> None:
    assert await prove(service(KEYS, "agent")) is None


async def test_a_proof_for_another_mesh_fails_even_with_the_same_secret() -> None:
    other = MeshKeys(b"the-secret", "beta")

    def claims_alpha(request: httpx2.Request) -> httpx2.Response:
        challenge = request.url.params["challenge"]
        body = {"name": "registry", "mesh": "alpha", "proof": other.prove(bound(challenge, 7420), "registry")}
        return httpx2.Response(200, json=body)

    assert await prove(service(other)) is None
    assert await prove(claims_alpha) is None


async def test_a_service_without_the_secret_that_names_the_mesh_fails() -> None:
    assert await prove(service(MeshKeys(b"a-guess", "alpha"))) is None


async def test_a_proof_of_an_old_challenge_fails() -> None:
    stale = KEYS.prove(new_challenge(), "registry")
    body = json.dumps({"name": "registry", "mesh": "alpha", "proof": stale}).encode()
    assert await prove(answering(body=body)) is None


async def test_each_proof_asks_a_fresh_well_formed_challenge_and_sends_no_token() -> None:
    seen: list[httpx2.Request] = []

    def recording(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return service(KEYS)(request)

    headers = {"Authorization": "Bearer a-token"}
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(recording), headers=headers) as http:
        for _ in range(2):
            assert await prove_service(http, f"{URL}/", KEYS) == "registry"
    challenges = [r.url.params["challenge"] for r in seen]
    assert all(is_challenge(c) for c in challenges)
    assert challenges[0] != challenges[1]
    assert [r.url.path for r in seen] == ["/healthz", "/healthz"]
    assert all("authorization" not in r.headers for r in seen)


async def test_an_oversized_answer_proves_nothing_even_with_a_good_proof() -> None:
    assert await prove(service(KEYS, padding="x" * 100_000)) is None


async def test_a_redirect_to_a_service_that_proves_itself_proves_nothing() -> None:
    def redirecting(request: httpx2.Request) -> httpx2.Response:
        if request.url.host == "elsewhere":
            return service(KEYS)(request)
        return httpx2.Response(307, headers={"Location": f"http://elsewhere/healthz?{request.url.query.decode()}"})

    assert await prove(redirecting) is None


async def test_a_service_that_does_not_answer_in_time_fails() -> None:
    async def slow(request: httpx2.Request) -> httpx2.Response:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(slow)) as http:
        with anyio.fail_after(5):
            assert await prove_service(http, URL, KEYS, timeout=0.05) is None


async def test_an_unreachable_service_or_a_bad_url_fails() -> None:
    def refused(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)

    assert await prove(refused) is None
    async with httpx2.AsyncClient() as http:
        for bad in ["not a url at all:::", "http://[::1", "ftp://127.0.0.1", "http://\x00", ""]:
            assert await prove_service(http, bad, KEYS) is None, bad


@pytest.mark.parametrize(
    ("status", "body"),
    [
        pytest.param(200, b"", id="empty"),
        pytest.param(200, b"not json", id="not-json"),
        pytest.param(200, b"\xff\xfe\x00", id="not-utf8"),
        pytest.param(200, b"[1, 2]", id="a-list"),
        pytest.param(200, b'"registry"', id="a-string"),
        pytest.param(200, b"[" * 10_000 + b"]" * 10_000, id="deeply-nested"),
        pytest.param(200, b'{"name": "registry", "mesh": "alpha"}', id="no-proof"),
        pytest.param(200, b'{"name": "registry", "mesh": "alpha", "proof": 7}', id="proof-a-number"),
        pytest.param(200, b'{"name": "registry", "mesh": "alpha", "proof": null}', id="proof-null"),
        pytest.param(200, b'{"name": "registry", "mesh": "alpha", "proof": ["x"]}', id="proof-a-list"),
        pytest.param(200, '{"name": "registry", "mesh": "alpha", "proof": "é"}'.encode(), id="proof-non-ascii"),
        pytest.param(200, b'{"name": ["registry"], "mesh": "alpha", "proof": "x"}', id="name-a-list"),
        pytest.param(200, b'{"name": {}, "mesh": {}, "proof": {}}', id="all-objects"),
        pytest.param(500, b'{"name": "registry", "mesh": "alpha"}', id="a-500"),
        pytest.param(401, b"", id="a-401"),
    ],
)
async def test_garbage_answers_never_raise_and_never_prove(status: int, body: bytes) -> None:
    assert await prove(answering(status, body=body)) is None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=10,
    )
    | st.fixed_dictionaries({"name": st.sampled_from(["registry", "tracer"]), "mesh": st.just("alpha")}).flatmap(
        lambda base: st.fixed_dictionaries({**{k: st.just(v) for k, v in base.items()}, "proof": st.text()})
    ),
)
def test_any_json_a_service_answers_never_raises_and_never_proves_without_the_secret(body: object) -> None:
    encoded = json.dumps(body).encode()
    assert anyio.run(prove, answering(body=encoded)) is None


def test_a_challenge_is_16_to_128_url_safe_characters() -> None:
    assert is_challenge(new_challenge())
    assert is_challenge("a" * 16)
    assert is_challenge("A-z_9" * 25 + "abc")
    for bad in ["", "a" * 15, "a" * 129, "a" * 15 + "=", "a" * 15 + " ", "a" * 15 + "\n", "é" * 16, "a/b+c" * 4]:
        assert not is_challenge(bad), bad


async def test_a_proof_relayed_from_a_service_on_another_port_fails() -> None:
    def relaying(request: httpx2.Request) -> httpx2.Response:
        # An impostor on 7420 asks the real registry on 7555 and hands back its answer.
        proof = KEYS.prove(bound(request.url.params["challenge"], 7555), "registry")
        return httpx2.Response(200, json={"status": "ok", "name": "registry", "mesh": "alpha", "proof": proof})

    assert await prove(relaying) is None
