"""The span spool: each instance its own, a dead one's batches adopted, every loss counted in spans."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2

from mesh.identity import MeshKeys, Principal, TokenSource
from mesh.tracing.export import SPANS_AUDIENCE, SpoolingExporter
from mesh.tracing.spool import Spool

ROOT = str(Path(__file__).resolve().parents[2])


def taken(spool: Spool) -> list[tuple[bytes, int]]:
    """Everything `spool` holds, delivered (and so removed), oldest first."""
    got: list[tuple[bytes, int]] = []
    spool.drain(lambda batch, spans: got.append((batch, spans)) is None)
    return got


def leave_behind(root: Path, instance: str, *batches: bytes) -> None:
    """An instance in another process spools `batches` (3 spans each) and dies without cleaning up."""
    script = (
        f"import os, sys; sys.path.insert(0, {ROOT!r}); from pathlib import Path; "
        "from mesh.tracing.spool import Spool; "
        f"spool = Spool(Path({str(root)!r}), {instance!r}); "
        f"[spool.put(batch, 3) for batch in {list(batches)!r}]; os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)


def test_two_instances_of_a_service_never_take_each_others_batches(tmp_path: Path) -> None:
    first, second = Spool(tmp_path, "a"), Spool(tmp_path, "b")
    first.put(b"of a", 2)
    assert second.adopt() == 0
    assert taken(second) == []
    assert taken(first) == [(b"of a", 2)]
    assert first.directory != second.directory


def test_a_dead_predecessors_batches_are_adopted_in_order_and_its_directory_removed(tmp_path: Path) -> None:
    leave_behind(tmp_path, "gone", b"one", b"two")
    assert (tmp_path / "gone").is_dir()
    heir = Spool(tmp_path, "heir")
    assert heir.adopt() == 2
    assert taken(heir) == [(b"one", 3), (b"two", 3)]
    assert not (tmp_path / "gone").exists()


def test_a_live_instance_in_another_process_keeps_its_batches(tmp_path: Path) -> None:
    script = (
        f"import sys; sys.path.insert(0, {ROOT!r}); from pathlib import Path; "
        "from mesh.tracing.spool import Spool; "
        f"spool = Spool(Path({str(tmp_path)!r}), 'alive'); spool.put(b'mine', 1); "
        "print('ready', flush=True); sys.stdin.read()"
    )
    with subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE) as alive:
        assert alive.stdout is not None
        assert alive.stdout.readline() == b"ready\n"
        other = Spool(tmp_path, "other")
        assert other.adopt() == 0
        assert alive.stdin is not None
        alive.stdin.close()
    assert other.adopt() == 1
    assert taken(other) == [(b"mine", 1)]


def test_an_instance_id_a_live_spool_holds_gets_a_directory_of_its_own(tmp_path: Path) -> None:
    first, twin = Spool(tmp_path, "same"), Spool(tmp_path, "same")
    first.put(b"first's", 1)
    assert twin.directory != first.directory
    assert twin.directory.name.startswith("same-")
    assert taken(twin) == []


def test_a_closed_empty_spool_leaves_no_directory_and_a_full_one_leaves_its_batches(tmp_path: Path) -> None:
    empty, full = Spool(tmp_path, "empty"), Spool(tmp_path, "full")
    full.put(b"left", 4)
    empty.close()
    full.close()
    assert not empty.directory.exists()
    assert Spool(tmp_path, "next").adopt() == 1


def test_batches_of_the_layout_without_instances_are_adopted(tmp_path: Path) -> None:
    (tmp_path / "00000000000000000001-abcdef01.otlp").write_bytes(b"old")
    spool = Spool(tmp_path, "new")
    assert spool.adopt() == 1
    assert taken(spool) == [(b"old", 0)]  # that layout did not record its span count


def test_a_full_spool_drops_its_oldest_batches_and_counts_their_spans(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "small", max_bytes=10)
    for n in range(5):
        spool.put(b"12345", n + 1)
    assert (spool.dropped_batches, spool.dropped_spans) == (3, 1 + 2 + 3)
    assert [spans for _, spans in taken(spool)] == [4, 5]


def test_a_restarted_agent_delivers_what_its_predecessor_left_and_counts_it_as_exported(tmp_path: Path) -> None:
    leave_behind(tmp_path, "before", b"left")
    got = threading.Event()
    received: list[tuple[bytes, str | None]] = []

    def tracer(request: httpx2.Request) -> httpx2.Response:
        received.append((request.content, request.headers.get("authorization")))
        got.set()
        return httpx2.Response(200)

    keys = MeshKeys(b"spool-test-secret", "spool-test")
    tokens = TokenSource(keys, Principal("crm", "agent"))
    exporter = SpoolingExporter(
        lambda: "http://tracer/v1/traces",
        Spool(tmp_path, "after"),
        token=lambda: tokens.token(SPANS_AUDIENCE),
        transport=httpx2.MockTransport(tracer),
        drain_every=0.01,
    )
    try:
        assert got.wait(10)
    finally:
        exporter.shutdown()
    [(body, authorization)] = received
    assert body == b"left"
    assert authorization is not None
    claims = keys.verify(authorization.removeprefix("Bearer "), audience=SPANS_AUDIENCE)
    assert (claims.caller, claims.role) == ("crm", "agent")
    assert exporter.stats()["exported_spans"] == 3


def test_a_batch_the_tracer_refuses_for_good_is_dropped_and_its_spans_counted(tmp_path: Path) -> None:
    statuses = iter([401, 403])

    def tracer(request: httpx2.Request) -> httpx2.Response:
        del request
        return httpx2.Response(next(statuses, 200))

    exporter = SpoolingExporter(
        lambda: "http://tracer/v1/traces",
        Spool(tmp_path, "i"),
        transport=httpx2.MockTransport(tracer),
        drain_every=3600,
    )
    try:
        exporter.export(b"kept", 5)  # 401: kept, since a token the tracer takes may come
        assert exporter.stats()["pending_batches"] == 1
        exporter.force_flush()  # 403: it never will, so dropped
        stats = exporter.stats()
    finally:
        exporter.shutdown()
    assert (stats["pending_batches"], stats["dropped_spans"], stats["dropped_batches"]) == (0, 5, 1)
    assert stats["exported_spans"] == 0  # dropped, not sent: the tracer never stored them


def test_a_batch_spooled_while_the_drain_thread_rests_is_delivered_once_the_tracer_is_back(tmp_path: Path) -> None:
    up = threading.Event()
    delivered = threading.Event()

    def tracer(request: httpx2.Request) -> httpx2.Response:
        if not up.is_set():
            return httpx2.Response(503)
        delivered.set()
        return httpx2.Response(200)

    exporter = SpoolingExporter(
        lambda: "http://tracer/v1/traces",
        Spool(tmp_path, "i"),
        transport=httpx2.MockTransport(tracer),
        drain_every=0.01,
    )
    try:
        deadline = time.monotonic() + 5
        while not exporter._resting and time.monotonic() < deadline:  # pyright: ignore[reportPrivateUsage]
            time.sleep(0.005)
        assert exporter._resting  # pyright: ignore[reportPrivateUsage]  # the spool is empty: nothing to retry
        exporter.export(b"late", 4)  # the tracer is away: spooled, and the drain thread woken
        assert exporter.stats()["pending_batches"] == 1
        up.set()
        assert delivered.wait(10)
    finally:
        exporter.shutdown()
    assert (exporter.stats()["exported_spans"], exporter.stats()["pending_batches"]) == (4, 0)
