"""The span batcher: every ended span is exported once, in bounded batches; what it must drop, it counts."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource

from mesh.tracing.batch import NICENESS, SpanBatcher
from mesh.tracing.spans import MeshTracerProvider

RESOURCE = Resource.create({"service.name": "batch"})


class Collecting:
    """An exporter that keeps each request; `fail` makes it raise (an exporter bug)."""

    def __init__(self, *, fail: bool = False) -> None:
        self.requests: list[tuple[bytes, int]] = []
        self.fail = fail
        self.shut = False
        self.got = threading.Event()

    def export(self, batch: bytes, spans: int) -> None:
        if self.fail:
            raise RuntimeError("exporter bug")
        self.requests.append((batch, spans))
        self.got.set()

    def shutdown(self) -> None:
        self.shut = True

    def span_names(self) -> list[str]:
        names: list[str] = []
        for batch, _ in self.requests:
            request = ExportTraceServiceRequest.FromString(batch)
            names += [s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
        return names


def _end_spans(batcher: SpanBatcher, count: int) -> None:
    tracer = MeshTracerProvider(RESOURCE, batcher).get_tracer("t")
    for n in range(count):
        with tracer.start_as_current_span(f"s{n}"):
            pass


def test_every_span_is_exported_once_in_batches_no_bigger_than_the_limit() -> None:
    exporter = Collecting()
    batcher = SpanBatcher(exporter, schedule_delay=0.05, max_batch=7)
    _end_spans(batcher, 50)
    batcher.shutdown()
    assert sorted(exporter.span_names()) == sorted(f"s{n}" for n in range(50))
    assert all(0 < spans <= 7 for _, spans in exporter.requests)
    assert sum(spans for _, spans in exporter.requests) == 50
    assert exporter.shut


def test_spans_go_out_within_the_schedule_delay_without_a_flush() -> None:
    exporter = Collecting()
    batcher = SpanBatcher(exporter, schedule_delay=0.05)
    _end_spans(batcher, 3)
    assert exporter.got.wait(5)
    assert exporter.span_names() == ["s0", "s1", "s2"]
    batcher.shutdown()


def test_a_full_queue_drops_the_newest_spans_and_counts_them() -> None:
    exporter = Collecting()
    batcher = SpanBatcher(exporter, schedule_delay=60, max_queue=4, max_batch=4)
    with batcher._lock:  # pyright: ignore[reportPrivateUsage]  # hold the thread off while spans pile up
        _end_spans(batcher, 10)
        stats = batcher.stats()
    batcher.shutdown()
    assert stats["dropped_spans"] >= 6
    assert len(exporter.span_names()) + batcher.stats()["dropped_spans"] == 10


def test_an_exporter_that_raises_loses_only_its_batch_and_counts_it() -> None:
    exporter = Collecting(fail=True)
    batcher = SpanBatcher(exporter, schedule_delay=0.01)
    _end_spans(batcher, 5)
    batcher.force_flush()
    exporter.fail = False
    _end_spans(batcher, 2)
    batcher.shutdown()
    assert batcher.stats()["dropped_spans"] == 5
    assert exporter.span_names() == ["s0", "s1"]


def test_spans_ended_after_shutdown_are_counted_not_queued() -> None:
    exporter = Collecting()
    batcher = SpanBatcher(exporter)
    batcher.shutdown()
    _end_spans(batcher, 2)
    assert batcher.stats() == {"dropped_spans": 2, "queued_spans": 0}


def test_the_otel_bsp_variables_override_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "1500")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "100")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "500")
    batcher = SpanBatcher(Collecting())
    try:
        assert (batcher.schedule_delay, batcher.max_queue, batcher.max_batch) == (1.5, 100, 100)
    finally:
        batcher.shutdown()


def test_a_bad_otel_bsp_value_falls_back_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "soon")
    batcher = SpanBatcher(Collecting(), schedule_delay=0.3)
    try:
        assert batcher.schedule_delay == 0.3
    finally:
        batcher.shutdown()
    assert "OTEL_BSP_SCHEDULE_DELAY" in caplog.text


def test_shutdown_does_not_wait_for_the_schedule() -> None:
    batcher = SpanBatcher(Collecting(), schedule_delay=30)
    started = time.monotonic()
    batcher.shutdown()
    assert time.monotonic() - started < 5


def test_without_variables_a_request_goes_out_once_a_second_with_up_to_512_spans(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"):
        monkeypatch.delenv(name, raising=False)
    batcher = SpanBatcher(Collecting())
    try:
        assert (batcher.schedule_delay, batcher.max_queue, batcher.max_batch) == (1.0, 8192, 512)
    finally:
        batcher.shutdown()


@pytest.mark.skipif(sys.platform != "linux", reason="only Linux gives a thread a priority of its own")
def test_the_batcher_thread_runs_at_a_lower_priority_than_its_process() -> None:
    batcher = SpanBatcher(Collecting())
    try:
        thread = batcher._thread.native_id  # pyright: ignore[reportPrivateUsage]
        assert thread is not None
        expected = min(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) + NICENESS, 19)
        deadline = time.monotonic() + 5
        while os.getpriority(os.PRIO_PROCESS, thread) != expected and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.getpriority(os.PRIO_PROCESS, thread) == expected
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == expected - NICENESS or expected == 19
    finally:
        batcher.shutdown()


def _until(condition: Callable[[], object], timeout: float = 5.0) -> bool:
    """Whether `condition()` holds within `timeout` seconds (polled)."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
    return bool(condition())


def test_with_nothing_to_send_the_thread_rests_and_the_next_span_still_goes_out() -> None:
    exporter = Collecting()
    batcher = SpanBatcher(exporter, schedule_delay=0.05)
    try:
        for round_ in range(3):  # each round: rest, then a span wakes it
            assert _until(lambda: batcher._resting)  # pyright: ignore[reportPrivateUsage]
            exporter.got.clear()
            _end_spans(batcher, 1)
            assert exporter.got.wait(5), f"round {round_}: the span after a rest was not exported"
        assert exporter.span_names() == ["s0", "s0", "s0"]
    finally:
        batcher.shutdown()


def test_a_resting_batcher_shuts_down_at_once_and_loses_nothing() -> None:
    exporter = Collecting()
    batcher = SpanBatcher(exporter, schedule_delay=30)
    assert _until(lambda: batcher._resting)  # pyright: ignore[reportPrivateUsage]
    _end_spans(batcher, 2)
    batcher.shutdown()
    assert exporter.span_names() == ["s0", "s1"]
    assert not batcher._thread.is_alive()  # pyright: ignore[reportPrivateUsage]
