"""One mesh hop against one raw SDK call, side by side in one run (issue: peer-to-peer calls).

Mesh: `PeerPool` → `mesh run agents/echo.py` with auth, a Cedar policy and tracing on (spans
exported to a running registry). Baseline: the SDK's `Client` (one pooled session) → a plain
`MCPServer` on the SDK's default Streamable HTTP settings. Same tool, same machine, same run.
Prints p50/p99 latency, calls/s and CPU per call (caller and callee processes: the figure a busy,
shared host disturbs least), sequential and at 16 concurrent calls, and the ratios.

Two more mesh rows show what notices cost (issue 26), against `bench/progress_echo.py`: "mesh
asks" is the echo tool called by a caller that asked for progress and log messages (the callee's
event-stream transport, with nothing to send, answers JSON); "mesh stream" is a tool that sends one
progress report and one log message, relayed to the caller as they arrive (SSE).

    python bench/hop.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "tests" / "integration" / "fixtures" / "policy.cedar"
PROGRESS_ECHO = ROOT / "bench" / "progress_echo.py"


async def measure(
    call: Callable[[], Awaitable[object]], calls: int, concurrency: int, cpu: Callable[[], float]
) -> tuple[list[float], float, float]:
    """Latencies (ms) of `calls` calls made by `concurrency` workers, the wall time (s), and the `cpu` seconds spent."""
    for _ in range(min(200, calls // 5)):
        await call()
    latencies: list[float] = []
    per_worker = calls // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            started = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - started) * 1000)

    spent = cpu()
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return latencies, time.perf_counter() - started, cpu() - spent


def summary(latencies: list[float], wall: float, cpu: float) -> tuple[float, float, float, float]:
    """(p50 ms, p99 ms, calls/s, CPU µs per call)."""
    ordered = sorted(latencies)
    count = len(ordered)
    return statistics.median(ordered), ordered[int(count * 0.99) - 1], count / wall, cpu / count * 1e6


async def main(calls: int) -> None:
    from proc_cpu import cpu_seconds  # beside this script

    from mesh.identity import MeshKeys
    from mesh.peers.notices import sink_var
    from mesh.runtime.node import MeshNode
    from mesh.testing import AgentProcess, RegistryProcess, free_port
    from mesh.testing.notices import RecordingNotices
    from mesh.tracing.telemetry import ProcessTelemetry

    home = os.environ["MESH_HOME"]  # a temporary directory (see the end of this file)
    os.environ["MESH_NAME"] = f"bench-{uuid.uuid4().hex[:6]}"
    port = free_port()
    async with RegistryProcess() as registry:
        tracing = ProcessTelemetry(
            service="bench-caller",
            instance="b1",
            mesh=os.environ["MESH_NAME"],
            spool_dir=Path(home) / "spool",
            tracer_base=lambda: registry.base_url,
            credentials=MeshKeys.load(),
        )
        async with (
            AgentProcess(
                str(ROOT / "agents" / "echo.py"), "--policy", str(POLICY), "--registry", registry.base_url
            ) as echo,
            AgentProcess(str(PROGRESS_ECHO), "--policy", str(POLICY), "--registry", registry.base_url) as chatty,
            plain_server(port) as (plain_url, plain_pid),
            httpx2.AsyncClient() as http,
            Client(streamable_http_client(plain_url, http_client=http)) as sdk,
            MeshNode("bench-caller", registry=registry.base_url, metadata={"jurisdiction": "eu"}) as node,
        ):
            await node.settle()

            async def sdk_call() -> object:
                return await sdk.call_tool("echo", {"text": "hello"})

            async def mesh_call() -> object:
                return await node.call("echo", "echo", {"text": "hello"})

            heard = RecordingNotices(log_level="info")

            async def asking_call() -> object:
                token = sink_var.set(heard)  # as a tool does whose own caller asked for notices
                try:
                    return await node.call("progress-echo", "echo", {"text": "hello"})
                finally:
                    sink_var.reset(token)

            async def stream_call() -> object:
                token = sink_var.set(heard)
                try:
                    return await node.call("progress-echo", "echo_progress", {"text": "hello"})
                finally:
                    sink_var.reset(token)

            rows: list[tuple[str, int, tuple[float, float, float, float]]] = []
            paths = (
                ("raw SDK", sdk_call, plain_pid),
                ("mesh hop", mesh_call, echo.pid),
                ("mesh asks", asking_call, chatty.pid),
                ("mesh stream", stream_call, chatty.pid),
            )
            for concurrency in (1, 16):
                for name, call, pid in paths:

                    def cpu(pid: int = pid) -> float:  # this process (the caller) and the callee
                        return time.process_time() + cpu_seconds(pid)

                    rows.append((name, concurrency, summary(*await measure(call, calls, concurrency, cpu))))
            streamed = len(heard.progress_seen), len(heard.logs_seen)
        tracing.shutdown()
    print(f"\none hop, echo tool, {calls} calls per row (loopback, this machine)\n")
    print(f"{'path':<11} {'conc':>4} {'p50 ms':>8} {'p99 ms':>8} {'calls/s':>9} {'cpu µs/call':>12}")
    for name, concurrency, (p50, p99, rate, cpu_us) in rows:
        print(f"{name:<11} {concurrency:>4} {p50:>8.3f} {p99:>8.3f} {rate:>9.0f} {cpu_us:>12.0f}")
    print("\nratios (mesh / raw SDK; latency < 1 and throughput > 1 mean the mesh hop is faster)")
    for concurrency in (1, 16):
        sdk_row = next(r for n, c, r in rows if n == "raw SDK" and c == concurrency)
        mesh_row = next(r for n, c, r in rows if n == "mesh hop" and c == concurrency)
        print(
            f"  concurrency {concurrency:>2}: p50 x{mesh_row[0] / sdk_row[0]:.2f}  "
            f"p99 x{mesh_row[1] / sdk_row[1]:.2f}  calls/s x{mesh_row[2] / sdk_row[2]:.2f}  "
            f"cpu/call x{mesh_row[3] / sdk_row[3]:.2f}"
        )
    print(
        "\nnotices (against the mesh hop; the stream relayed",
        f"{streamed[0]} progress reports, {streamed[1]} log messages)",
    )
    for concurrency in (1, 16):
        hop_row = next(r for n, c, r in rows if n == "mesh hop" and c == concurrency)
        for name in ("mesh asks", "mesh stream"):
            row = next(r for n, c, r in rows if n == name and c == concurrency)
            print(
                f"  {name:<11} concurrency {concurrency:>2}: p50 x{row[0] / hop_row[0]:.2f}  "
                f"p99 x{row[1] / hop_row[1]:.2f}  calls/s x{row[2] / hop_row[2]:.2f}  "
                f"cpu/call x{row[3] / hop_row[3]:.2f} (+{row[3] - hop_row[3]:.0f} µs)"
            )


@asynccontextmanager
async def plain_server(port: int) -> AsyncGenerator[tuple[str, int]]:
    """The baseline server in its own process; yields its /mcp URL and pid once it answers."""
    process = await anyio.open_process([sys.executable, str(ROOT / "bench" / "plain_sdk_server.py"), str(port)])
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        async with httpx2.AsyncClient() as probe:
            with anyio.fail_after(20):
                while True:
                    try:
                        await probe.get(url)
                        break
                    except httpx2.TransportError:
                        await anyio.sleep(0.05)
        yield url, process.pid
    finally:
        process.terminate()
        with anyio.move_on_after(5):
            await process.wait()
        if process.returncode is None:
            process.kill()
        await process.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="one mesh hop against one raw SDK call")
    parser.add_argument("--calls", type=int, default=2000)
    calls = parser.parse_args().calls
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as home:
        os.environ["MESH_HOME"] = home
        anyio.run(main, calls, backend_options={"use_uvloop": True})
