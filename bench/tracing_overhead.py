"""Tracing overhead per tool call: one mesh hop with tracing off against tracing on, interleaved in one run.

The tracer provider is process-wide, so each round runs in a child process (caller and agent
both with `OTEL_SDK_DISABLED=true`, or both exporting to a running registry); rounds alternate
off/on so drift on a shared machine hits both sides alike. Reports p50/p90/p99 and calls/s, and
the CPU each process (caller, agent, registry) spent per call, read from /proc: where the
overhead goes, not just how much there is.

    python bench/tracing_overhead.py [--rounds 3] [--calls 1500]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from proc_cpu import cpu_seconds

ROOT = Path(__file__).resolve().parents[1]


def child(calls: int) -> None:
    """One round: start a registry and echo, make `calls` sequential calls, print p50 and calls/s as JSON."""
    import anyio

    from mesh.runtime.node import MeshNode
    from mesh.testing import AgentProcess, RegistryProcess
    from mesh.tracing.provider import Tracing

    async def main() -> None:
        async with RegistryProcess() as registry:
            tracing = Tracing(
                service="bench",
                instance="b",
                mesh=os.environ["MESH_NAME"],
                spool_dir=Path(os.environ["MESH_HOME"]) / "spool",
                tracer_base=lambda: registry.base_url,
            )
            async with (
                AgentProcess(str(ROOT / "agents" / "echo.py"), "--registry", registry.base_url) as agent,
                MeshNode("bench", registry=registry.base_url) as node,
            ):
                pids = {"caller": os.getpid(), "agent": agent.pid, "registry": registry.pid}
                await node.settle()
                for _ in range(300):
                    await node.call("echo", "echo", {"text": "warm"})
                latencies: list[float] = []
                cpu_before = {name: _cpu(name, pid) for name, pid in pids.items()}
                started = time.perf_counter()
                for _ in range(calls):
                    t0 = time.perf_counter()
                    await node.call("echo", "echo", {"text": "hello"})
                    latencies.append((time.perf_counter() - t0) * 1000)
                wall = time.perf_counter() - started
                cpu = {name: (_cpu(name, pid) - cpu_before[name]) / calls * 1e6 for name, pid in pids.items()}
            tracing.shutdown()
        latencies.sort()
        p90, p99 = latencies[int(len(latencies) * 0.90)], latencies[int(len(latencies) * 0.99)]
        result = {"p50": statistics.median(latencies), "p90": p90, "p99": p99, "rate": calls / wall}
        print(json.dumps(result | {f"cpu_{name}": value for name, value in cpu.items()}))

    anyio.run(main, backend_options={"use_uvloop": True})


def _cpu(name: str, pid: int) -> float:
    # The registry's ingest workers are its children; the caller's children are the others.
    return cpu_seconds(pid, children=name == "registry")


def main(rounds: int, calls: int) -> None:
    results: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    for _ in range(rounds):
        for mode in ("off", "on"):
            with tempfile.TemporaryDirectory(prefix="mesh-bench-") as home:
                env = {
                    **os.environ,
                    "MESH_HOME": home,
                    "MESH_NAME": f"t-{uuid.uuid4().hex[:6]}",
                    "OTEL_SDK_DISABLED": "true" if mode == "off" else "false",
                }
                out = subprocess.run(
                    [sys.executable, __file__, "--child", "--calls", str(calls)],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=300,
                )
            results[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    keys = ("p50", "p90", "p99", "rate", "cpu_caller", "cpu_agent", "cpu_registry")
    med = {mode: {k: statistics.median(r[k] for r in results[mode]) for k in keys} for mode in results}
    print(f"\none mesh hop, {calls} sequential calls, median of {rounds} interleaved rounds\n")
    print(f"{'tracing':<8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'calls/s':>9}")
    for mode in ("off", "on"):
        m = med[mode]
        print(f"{mode:<8} {m['p50']:>8.3f} {m['p90']:>8.3f} {m['p99']:>8.3f} {m['rate']:>9.0f}")
    print(f"\n{'CPU µs per call':<16} {'caller':>8} {'agent':>8} {'registry':>9}")
    for mode in ("off", "on"):
        m = med[mode]
        print(f"{mode:<16} {m['cpu_caller']:>8.0f} {m['cpu_agent']:>8.0f} {m['cpu_registry']:>9.0f}")
    off, on = med["off"], med["on"]
    print(
        f"\noverhead: p50 {(on['p50'] / off['p50'] - 1) * 100:+.1f}%, p90 {(on['p90'] / off['p90'] - 1) * 100:+.1f}%, "
        f"p99 {(on['p99'] / off['p99'] - 1) * 100:+.1f}%, throughput {(on['rate'] / off['rate'] - 1) * 100:+.1f}%"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="tracing overhead per mesh hop")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.calls)
    else:
        main(args.rounds, args.calls)
