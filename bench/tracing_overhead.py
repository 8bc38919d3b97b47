"""Tracing overhead per tool call: one mesh hop with tracing off against tracing on, interleaved in one run.

The tracer provider is process-wide, so each round runs in a child process (caller and agent
both with `OTEL_SDK_DISABLED=true`, or both exporting to a running registry); rounds alternate
off/on so drift on a shared machine hits both sides alike.

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
                AgentProcess(str(ROOT / "agents" / "echo.py"), "--registry", registry.base_url),
                MeshNode("bench", registry=registry.base_url) as node,
            ):
                await node.settle()
                for _ in range(300):
                    await node.call("echo", "echo", {"text": "warm"})
                latencies: list[float] = []
                started = time.perf_counter()
                for _ in range(calls):
                    t0 = time.perf_counter()
                    await node.call("echo", "echo", {"text": "hello"})
                    latencies.append((time.perf_counter() - t0) * 1000)
                wall = time.perf_counter() - started
            tracing.shutdown()
        print(json.dumps({"p50": statistics.median(latencies), "rate": calls / wall}))

    anyio.run(main, backend_options={"use_uvloop": True})


def main(rounds: int, calls: int) -> None:
    results: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    for _ in range(rounds):
        for mode in ("off", "on"):
            env = {
                **os.environ,
                "MESH_HOME": tempfile.mkdtemp(prefix="mesh-bench-"),
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
    off_p50 = statistics.median(r["p50"] for r in results["off"])
    on_p50 = statistics.median(r["p50"] for r in results["on"])
    off_rate = statistics.median(r["rate"] for r in results["off"])
    on_rate = statistics.median(r["rate"] for r in results["on"])
    print(f"\none mesh hop, {calls} sequential calls, median of {rounds} interleaved rounds\n")
    print(f"{'tracing':<8} {'p50 ms':>8} {'calls/s':>9}")
    print(f"{'off':<8} {off_p50:>8.3f} {off_rate:>9.0f}")
    print(f"{'on':<8} {on_p50:>8.3f} {on_rate:>9.0f}")
    print(f"\noverhead: p50 +{(on_p50 / off_p50 - 1) * 100:.1f}%, throughput -{(1 - on_rate / off_rate) * 100:.1f}%")


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
