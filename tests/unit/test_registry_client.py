"""RegistryClient and Registrar against an in-process registry app, through a switchable transport."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.lowlevel
import httpx2
import pytest

from mesh.errors import RegistryError
from mesh.registry_client import Registrar, RegistryClient
from mesh.wire import Registration
from registry.inventory import Inventory
from tests.unit.test_inventory_api import KEYS, NOW, Registry, registration, running_registry

pytestmark = pytest.mark.anyio

URL = "http://127.0.0.1:7420"
LOGGER = "mesh.registry_client"


class Switchable(httpx2.AsyncBaseTransport):
    """Forwards to an ASGI app, or refuses to connect while `down`; records what it saw."""

    def __init__(self, app: httpx2.ASGITransport) -> None:
        self.app = app
        self.down = False
        self.refused = 0
        self.seen: list[str] = []
        self._changed = anyio.Event()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.seen.append(request.method)
        self._changed.set()
        self._changed = anyio.Event()
        if self.down:
            self.refused += 1
            raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)
        return await self.app.handle_async_request(request)

    async def wait_for(self, *, refused: int = 0, method: str | None = None) -> None:
        """Wait until `refused` connections were refused and `method` was sent (bound with fail_after)."""
        while self.refused < refused or (method is not None and method not in self.seen):
            await self._changed.wait()


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    with Inventory(tmp_path / "registry.sqlite3") as inventory:
        async with running_registry(inventory) as running:
            yield running


@pytest.fixture
def transport(registry: Registry) -> Switchable:
    return Switchable(httpx2.ASGITransport(registry.app))


def token_of(caller: str) -> str:
    return KEYS.mint(caller, "registry", now=NOW)


def client_of(transport: httpx2.AsyncBaseTransport, caller: str | None = "crm", timeout: float = 2.0) -> RegistryClient:
    factory = None if caller is None else (lambda: token_of(caller))
    return RegistryClient(URL, token_factory=factory, timeout=timeout, transport=transport)


def crm() -> Registration:
    return registration("crm", jurisdiction="eu", data_class="confidential")


# --- RegistryClient ---


async def test_the_client_registers_renews_lists_and_deregisters(registry: Registry, transport: Switchable) -> None:
    async with client_of(transport) as client:
        record = await client.register(crm())
        renewed = await client.renew("crm", "a1")
        found = await client.agents(jurisdiction="eu", data_class="confidential")
        await client.deregister("crm", "a1")
        after = await client.agents()

    assert (record.name, record.instance) == ("crm", "a1")
    assert renewed is not None
    assert renewed.first_seen == record.first_seen
    assert [r.name for r in found] == ["crm"]
    assert after == []


async def test_renewing_an_unknown_registration_returns_none(transport: Switchable) -> None:
    async with client_of(transport) as client:
        assert await client.renew("crm", "a1") is None
        await client.deregister("crm", "a1")  # already gone: not an error


async def test_lapsed_registrations_are_listed_on_request(registry: Registry, transport: Switchable) -> None:
    async with client_of(transport) as client:
        await client.register(crm())
        registry.clock.now = NOW + 60

        assert await client.agents() == []
        assert [r.name for r in await client.agents(include_lapsed=True, tool="lookup")] == ["crm"]


async def test_a_refused_write_becomes_a_one_line_registry_error(transport: Switchable) -> None:
    async with client_of(transport, caller=None) as client:
        with pytest.raises(RegistryError, match=r"refused POST /api/agents: 401 missing bearer token") as info:
            await client.register(crm())

    assert "\n" not in str(info.value)


async def test_an_unreachable_registry_becomes_a_registry_error(transport: Switchable) -> None:
    transport.down = True
    async with client_of(transport) as client:
        with pytest.raises(RegistryError, match="unreachable: ConnectError"):
            await client.agents()
        assert await client.healthy() is False


async def test_a_registry_that_does_not_answer_in_time_becomes_a_registry_error() -> None:
    async def hang(request: httpx2.Request) -> httpx2.Response:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async with client_of(httpx2.MockTransport(hang), timeout=0.05) as client:
        with anyio.fail_after(2), pytest.raises(RegistryError, match="did not answer"):
            await client.agents()


async def test_an_answer_that_is_not_a_record_becomes_a_registry_error() -> None:
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, text="<html>proxy</html>"))
    async with client_of(transport) as client:
        with pytest.raises(RegistryError, match="unexpected answer"):
            await client.register(crm())


async def test_healthy_reports_a_registry_that_answers_healthz(transport: Switchable) -> None:
    async with client_of(transport) as client:
        assert await client.healthy() is True


async def test_the_client_must_be_entered_before_use() -> None:
    client = RegistryClient(URL)

    with pytest.raises(RuntimeError, match="async with"):
        await client.agents()


# --- Registrar ---


async def test_the_registrar_registers_on_entry_renews_and_deregisters_on_exit(
    registry: Registry, transport: Switchable
) -> None:
    async with client_of(transport) as client:
        async with Registrar(client, crm, lease=0.3) as registrar:
            assert registrar.registered
            assert registrar.record is not None
            assert registrar.record.lease_seconds == 0.3
            assert [r.name for r in registry.inventory.all()] == ["crm"]
            with anyio.fail_after(5):
                await transport.wait_for(method="PUT")
        assert not registrar.registered

    assert registry.inventory.all() == []


async def test_the_registrar_registers_again_after_the_registry_forgets_it(
    registry: Registry, transport: Switchable
) -> None:
    async with client_of(transport) as client, Registrar(client, crm, lease=0.3) as registrar:
        with anyio.fail_after(5):
            await registrar.wait_registered()
        # A registry restarted on a fresh database knows nobody.
        for record in registry.inventory.all():
            registry.inventory.remove(record.name, record.instance)

        with anyio.fail_after(5):
            await registrar.wait_registered(after=1)

        assert registrar.registrations == 2
        assert [r.name for r in registry.inventory.all()] == ["crm"]


async def test_the_registrar_keeps_retrying_while_the_registry_is_down_and_logs_once(
    registry: Registry, transport: Switchable, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    transport.down = True

    async with client_of(transport) as client, Registrar(client, crm, lease=0.3) as registrar:
        assert not registrar.registered
        with anyio.fail_after(5):
            await transport.wait_for(refused=3)
        assert registry.inventory.all() == []

        transport.down = False
        with anyio.fail_after(5):
            await registrar.wait_registered()

        assert [r.name for r in registry.inventory.all()] == ["crm"]

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "carrying on with mDNS alone" in warnings[0].getMessage()


async def test_the_registrar_registers_again_when_the_registry_comes_back(
    registry: Registry, transport: Switchable
) -> None:
    async with client_of(transport) as client, Registrar(client, crm, lease=0.3) as registrar:
        transport.down = True
        with anyio.fail_after(5):
            await transport.wait_for(refused=2)
        assert not registrar.registered

        transport.down = False
        with anyio.fail_after(5):
            await registrar.wait_registered(after=1)
        assert registrar.registered


async def test_leaving_while_the_registry_is_down_is_quick_and_quiet(transport: Switchable) -> None:
    async with client_of(transport) as client:
        with anyio.fail_after(3):
            async with Registrar(client, crm, lease=0.3, deregister_timeout=0.5) as registrar:
                assert registrar.registered
                transport.down = True


async def test_an_error_in_the_body_comes_out_unwrapped_and_still_deregisters(
    registry: Registry, transport: Switchable
) -> None:
    async with client_of(transport) as client:
        with pytest.raises(LookupError, match="boom"):
            async with Registrar(client, crm, lease=0.3):
                raise LookupError("boom")

    assert registry.inventory.all() == []


async def test_a_cancelled_registrar_still_deregisters(registry: Registry, transport: Switchable) -> None:
    async with client_of(transport) as client:
        with anyio.CancelScope() as scope:
            async with Registrar(client, crm, lease=0.3):
                scope.cancel()
                await anyio.lowlevel.checkpoint()

    assert scope.cancelled_caught
    assert registry.inventory.all() == []


class AnswerLost(Switchable):
    """Stores registrations but never answers them: the agent stops before the answer comes."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await super().handle_async_request(request)
        if request.method == "POST":
            await anyio.sleep_forever()
        return response


async def test_a_registration_in_flight_when_the_agent_stops_is_withdrawn(registry: Registry) -> None:
    transport = AnswerLost(httpx2.ASGITransport(registry.app))
    async with client_of(transport, timeout=0.3) as client:
        with anyio.fail_after(5):
            async with Registrar(client, crm, lease=3) as registrar:
                assert not registrar.registered
                assert [record.name for record in registry.inventory.all()] == ["crm"]

    assert registry.inventory.all() == []
    assert transport.seen[-1] == "DELETE"


async def test_a_failing_registration_callable_does_not_fail_the_agent(
    transport: Switchable, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> Registration:
        raise KeyError("tools")

    async with client_of(transport) as client, Registrar(client, broken, lease=0.3) as registrar:
        assert not registrar.registered

    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)


def test_a_lease_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Registrar(RegistryClient(URL), crm, lease=0)
