"""The exporter thread's CPU per span: its queue looked at every 20 ms against every 100 ms, side by side.

A main thread ends spans shaped like a mesh client span (its attributes and two decisions) at a
steady rate, with ~1 ms of Python between them like a caller's own work, and a `SpanBatcher`
encodes them into a null exporter (no HTTP: what is measured is the thread's own work). The CPU
the batcher thread spends, read from its clock, is divided by the spans it took. Rounds alternate
the two ticks, so the shared host's drift hits both alike. What it shows: on a VM where each
timed wake-up costs tens of µs (bench/wakeups.py), the tick decides most of the thread's cost.

    python bench/exporter.py [--rate 350] [--seconds 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import SpanKind

from mesh.tracing import batch
from mesh.tracing.spans import MeshTracerProvider

TICKS = (0.02, 0.1)
POLICY = {
    "mesh.decision.kind": "policy",
    "mesh.decision.choice": "allow",
    "mesh.decision.reason": "no policy configured: every call is allowed",
    "mesh.decision.alternatives": ("allow", "deny", "approval"),
    "mesh.policy.side": "caller",
    "mesh.policy.ids": (),
}
ROUTE = {
    "mesh.decision.kind": "route",
    "mesh.decision.choice": "47dbdc35",
    "mesh.decision.reason": "only healthy instance",
}


class NullExport:
    """Takes each encoded request and drops it."""

    def export(self, batch: bytes, spans: int) -> None:
        pass

    def shutdown(self) -> None:
        pass


def exporter_cpu_per_span(tick: float, rate: int, seconds: float) -> tuple[float, float]:
    """µs of the batcher thread's CPU per span, spans ended at up to `rate` a second for `seconds`;
    and the rate reached."""
    batch.TICK = tick  # read when a batcher is made
    batcher = batch.SpanBatcher(NullExport())
    tracer = MeshTracerProvider(Resource.create({"service.name": "bench"}), batcher).get_tracer("agentplex")
    clock = time.pthread_getcpuclockid(batcher._thread.ident or 0)  # pyright: ignore[reportPrivateUsage]
    spent, spans = time.clock_gettime(clock), 0
    started = time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        with tracer.start_as_current_span("tools/call echo.echo", kind=SpanKind.CLIENT) as span:
            span.set_attributes(
                {"mcp.method.name": "tools/call", "gen_ai.tool.name": "echo", "mesh.peer.agent": "echo"}
            )
            span.add_event("mesh.decision", POLICY)
            span.add_event("mesh.decision", ROUTE)
        spans += 1
        busy = time.perf_counter() + 0.001  # the caller's own work between calls
        while time.perf_counter() < busy:
            pass
        time.sleep(max(0.0, 1 / rate - 0.001))
    spent = time.clock_gettime(clock) - spent
    reached = spans / (time.monotonic() - started)
    batcher.shutdown()
    return spent / spans * 1e6, reached


def main() -> None:
    parser = argparse.ArgumentParser(description="exporter thread CPU per span, 20 ms tick against 100 ms")
    parser.add_argument("--rate", type=int, default=350, help="spans ended a second")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    costs: dict[float, list[float]] = {tick: [] for tick in TICKS}
    for _ in range(args.rounds):
        for tick in TICKS:
            cost, reached = exporter_cpu_per_span(tick, args.rate, args.seconds)
            costs[tick].append(cost)
            print(f"  tick {tick * 1000:3.0f} ms: {cost:6.1f} µs a span ({reached:.0f} spans/s)")
    slow, fast = (statistics.median(costs[tick]) for tick in TICKS)
    print(f"\nexporter thread, median of {args.rounds} rounds: {slow:.1f} µs a span at 20 ms, {fast:.1f} at 100 ms")
    print(f"100 ms tick / 20 ms tick: x{fast / slow:.2f}")


if __name__ == "__main__":
    main()
