"""Real zeroconf on 127.0.0.1: announcements are seen, withdrawn, kept to their mesh and verified."""

from __future__ import annotations

import base64
import gc
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping

import anyio
import pytest
from zeroconf import IPVersion, Zeroconf
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from mesh.discovery.mdns import MdnsAnnouncer, MdnsBrowser, MdnsEvent
from mesh.discovery.txt import Announcement, instance_label, service_type, signed, verify

pytestmark = pytest.mark.integration


def hmac_signer(secret: bytes) -> Callable[[Mapping[str, str]], str]:
    """A stand-in for MeshKeys.sign: 22 chars of HMAC-SHA256 over canonical JSON."""

    def sign(fields: Mapping[str, str]) -> str:
        message = json.dumps(dict(fields), sort_keys=True, separators=(",", ":")).encode()
        digest = hmac.new(secret, message, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    return sign


SIGN = hmac_signer(b"our mesh secret")


def check(fields: Mapping[str, str], signature: str) -> bool:
    """A stand-in for MeshKeys.verify_signature."""
    return hmac.compare_digest(SIGN(fields), signature)


def agent(
    mesh: str,
    *,
    host: str = "127.0.0.1",
    ttl: int = 120,
    sign: Callable[[Mapping[str, str]], str] = SIGN,
) -> Callable[[], Announcement]:
    """An announcement factory for agent `echo` of `mesh`, freshly signed on every call."""
    instance = uuid.uuid4().hex[:8]

    def factory() -> Announcement:
        a = Announcement(
            kind="agent",
            mesh=mesh,
            name="echo",
            instance=instance,
            host=host,
            port=5000,
            path="/mcp",
            expires=int(time.time()) + ttl,
            auth=True,
            fingerprint="0badc0de",
        )
        return signed(a, sign)

    return factory


async def next_event(browser: MdnsBrowser, kind: str) -> MdnsEvent:
    """The next event of `kind`, within two seconds."""
    with anyio.fail_after(2), browser.events() as events:
        async for event in events:
            if event.kind == kind:
                return event
    raise AssertionError("the browser closed")


@pytest.fixture
def mesh(mesh_env: dict[str, str]) -> str:
    return mesh_env["MESH_NAME"]


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """No thread outlives a test, and unclosed sockets surface (warnings are errors)."""
    before = set(threading.enumerate())
    yield
    gc.collect()
    assert set(threading.enumerate()) <= before


@pytest.mark.anyio
async def test_an_announcer_is_seen_by_a_browser_of_its_mesh_within_two_seconds(mesh: str) -> None:
    async with MdnsBrowser(["agent"], mesh=mesh) as browser, MdnsAnnouncer(agent(mesh)) as announcer:
        event = await next_event(browser, "added")
        assert announcer.announcement is not None
        assert event.announcement is not None
        assert event.announcement == announcer.announcement
        assert event.label == instance_label(announcer.announcement)
        assert event.announcement.reachable_host == "127.0.0.1"
        assert verify(event.announcement, check, mesh=mesh, now=time.time()) is None
        assert browser.snapshot() == {event.label: announcer.announcement}


@pytest.mark.anyio
async def test_a_graceful_exit_is_seen_as_removed_within_two_seconds(mesh: str) -> None:
    async with MdnsBrowser(["agent"], mesh=mesh) as browser:
        async with MdnsAnnouncer(agent(mesh)):
            added = await next_event(browser, "added")
        removed = await next_event(browser, "removed")
        assert removed.label == added.label
        assert removed.announcement == added.announcement
        assert browser.snapshot() == {}


@pytest.mark.anyio
async def test_a_cancelled_announcer_still_says_goodbye(mesh: str) -> None:
    async with MdnsBrowser(["agent"], mesh=mesh) as browser:
        with anyio.CancelScope() as scope:
            async with MdnsAnnouncer(agent(mesh)):
                await next_event(browser, "added")
                scope.cancel()
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        await next_event(browser, "removed")


@pytest.mark.anyio
async def test_a_browser_of_another_mesh_never_sees_it(mesh: str) -> None:
    async with (
        MdnsBrowser(["agent"], mesh=f"{mesh}-other") as stranger,
        MdnsBrowser(["agent"], mesh=mesh) as member,
    ):
        async with MdnsAnnouncer(agent(mesh)):
            await next_event(member, "added")
            with anyio.fail_after(2):
                while stranger.ignored == 0:  # a counter: no event to wait on
                    await anyio.sleep(0.005)
        await next_event(member, "removed")
        assert stranger.snapshot() == {}
        with stranger.events() as events, pytest.raises(anyio.WouldBlock):
            events.receive_nowait()


@pytest.mark.anyio
async def test_an_announcement_signed_with_another_key_is_seen_but_untrusted(mesh: str) -> None:
    forger = hmac_signer(b"not our secret")
    async with MdnsBrowser(["agent"], mesh=mesh) as browser, MdnsAnnouncer(agent(mesh, sign=forger)):
        event = await next_event(browser, "added")
        assert event.announcement is not None
        reason = verify(event.announcement, check, mesh=mesh, now=time.time())
        assert reason is not None
        assert reason.startswith("bad signature")


@pytest.mark.anyio
async def test_a_garbled_record_claiming_our_mesh_is_reported_with_its_error(mesh: str) -> None:
    type_ = service_type("agent")
    garbled = AsyncServiceInfo(
        type_,
        f"garbled-{uuid.uuid4().hex[:8]}.{type_}",
        port=5000,
        properties={"txtvers": "1", "m": mesh, "n": "Not_A_Label"},
        server="garbled.local.",
        parsed_addresses=["127.0.0.1"],
    )
    zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only, use_asyncio=True)
    async with MdnsBrowser(["agent"], mesh=mesh) as browser, AsyncZeroconf(zc=zc) as forger:
        hellos = await forger.async_register_service(garbled, cooperating_responders=True)
        event = await next_event(browser, "added")
        hellos.cancel()  # type: ignore[attr-defined]  # an asyncio future; its repeats are not needed
        assert event.announcement is None
        assert event.error == "TXT key 'e' (expiry) is missing or has no value"
        assert browser.snapshot() == {}


@pytest.mark.anyio
async def test_an_announcement_is_re_signed_before_it_expires(mesh: str) -> None:
    async with MdnsBrowser(["agent"], mesh=mesh) as browser, MdnsAnnouncer(agent(mesh, ttl=2)):
        first = (await next_event(browser, "added")).announcement
        second = (await next_event(browser, "updated")).announcement
        assert first is not None
        assert second is not None
        assert second.expires > first.expires
        assert verify(second, check, mesh=mesh, now=time.time()) is None


@pytest.mark.anyio
async def test_a_wildcard_host_is_announced_with_the_bound_interface(mesh: str) -> None:
    async with MdnsBrowser(["agent"], mesh=mesh) as browser, MdnsAnnouncer(agent(mesh, host="0.0.0.0")):
        event = await next_event(browser, "added")
        assert event.announcement is not None
        assert event.announcement.host == "0.0.0.0"
        assert event.announcement.reachable_host == "127.0.0.1"
        assert verify(event.announcement, check, mesh=mesh, now=time.time()) is None


@pytest.mark.anyio
async def test_an_announcer_refuses_to_be_entered_twice(mesh: str) -> None:
    announcer = MdnsAnnouncer(agent(mesh))
    async with announcer:
        pass
    with pytest.raises(RuntimeError, match="single-use"):
        async with announcer:
            pass


@pytest.mark.anyio
async def test_iterating_a_browser_ends_when_it_exits(mesh: str) -> None:
    seen: list[MdnsEvent] = []
    first = anyio.Event()

    async def consume(browser: MdnsBrowser) -> None:
        async for event in browser:
            seen.append(event)
            first.set()

    with anyio.fail_after(2):
        async with (
            anyio.create_task_group() as tg,
            MdnsBrowser(["agent"], mesh=mesh) as browser,
            MdnsAnnouncer(agent(mesh)),
        ):
            tg.start_soon(consume, browser)
            await first.wait()
    assert [event.kind for event in seen] == ["added", "removed"]


@pytest.mark.anyio
async def test_snapshot_stays_current_when_nobody_reads_the_events(mesh: str) -> None:
    async with (
        MdnsBrowser(["agent"], mesh=mesh, buffer=1) as browser,
        MdnsAnnouncer(agent(mesh)),
        MdnsAnnouncer(agent(mesh)),
    ):
        with anyio.fail_after(2):
            while len(browser.snapshot()) < 2:  # snapshot has no event to wait on
                await anyio.sleep(0.005)
        assert browser.dropped == 1


@pytest.mark.anyio
async def test_a_failed_refresh_is_logged_and_the_announcement_stays(
    mesh: str, caplog: pytest.LogCaptureFixture
) -> None:
    fresh = agent(mesh, ttl=2)
    calls = 0

    def flaky() -> Announcement:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("secret unreadable")
        return fresh()

    async with MdnsBrowser(["agent"], mesh=mesh) as browser, MdnsAnnouncer(flaky):
        await next_event(browser, "added")
        with anyio.fail_after(2):
            while calls < 2:  # the factory is sync: nothing to wait on
                await anyio.sleep(0.01)
        assert len(browser.snapshot()) == 1
    assert "could not refresh the mDNS announcement" in caplog.text


def test_bad_arguments_are_refused_before_any_socket_opens(mesh: str) -> None:
    with pytest.raises(ValueError, match="refresh"):
        MdnsAnnouncer(agent(mesh), refresh=0)
    with pytest.raises(ValueError, match="not both"):
        MdnsBrowser(["agent"], mesh=mesh, interfaces=["127.0.0.1"], lan=True)
    with pytest.raises(ValueError, match="at least one kind"):
        MdnsBrowser([], mesh=mesh)
    with pytest.raises(RuntimeError, match="enter the MdnsBrowser"):
        MdnsBrowser(["agent"], mesh=mesh).events()
