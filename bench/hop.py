"""One mesh hop against one raw SDK call, side by side in one run (issue: peer-to-peer calls).

Mesh: `PeerPool` → `mesh run agents/echo.py` with auth, a Cedar policy and tracing on (spans
exported to a running registry). Baseline: the SDK's `Client` (one pooled session) → a plain
`MCPServer` on the SDK's default Streamable HTTP settings. Same tool, same machine, same run.
Prints p50/p99 latency and calls/s, sequential and at 16 concurrent calls, and the ratios.

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


async def measure(call: Callable[[], Awaitable[object]], calls: int, concurrency: int) -> tuple[list[float], float]:
    """Latencies (ms) of `calls` calls made by `concurrency` workers, and the wall time (s)."""
    for _ in range(min(200, calls // 5)):
        await call()
    latencies: list[float] = []
    per_worker = calls // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            started = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return latencies, time.perf_counter() - started


def summary(latencies: list[float], wall: float) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, calls/s)."""
    ordered = sorted(latencies)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1], len(ordered) / wall


async def main(calls: int) -> None:
    from mesh.identity import MeshKeys
    from mesh.runtime.node import MeshNode
    from mesh.testing import AgentProcess, RegistryProcess, free_port
    from mesh.tracing.provider import Tracing

    home = os.environ["MESH_HOME"]  # a temporary directory (see the end of this file)
    os.environ["MESH_NAME"] = f"bench-{uuid.uuid4().hex[:6]}"
    port = free_port()
    async with RegistryProcess() as registry:
        tracing = Tracing(
            service="bench-caller",
            instance="b1",
            mesh=os.environ["MESH_NAME"],
            spool_dir=Path(home) / "spool",
            tracer_base=lambda: registry.base_url,
            credentials=MeshKeys.load(),
        )
        async with (
            AgentProcess(str(ROOT / "agents" / "echo.py"), "--policy", str(POLICY), "--registry", registry.base_url),
            plain_server(port) as plain_url,
            httpx2.AsyncClient() as http,
            Client(streamable_http_client(plain_url, http_client=http)) as sdk,
            MeshNode("bench-caller", registry=registry.base_url, metadata={"jurisdiction": "eu"}) as node,
        ):
            await node.settle()

            async def sdk_call() -> object:
                return await sdk.call_tool("echo", {"text": "hello"})

            async def mesh_call() -> object:
                return await node.call("echo", "echo", {"text": "hello"})

            rows: list[tuple[str, int, tuple[float, float, float]]] = []
            for concurrency in (1, 16):
                for name, call in (("raw SDK", sdk_call), ("mesh hop", mesh_call)):
                    rows.append((name, concurrency, summary(*await measure(call, calls, concurrency))))
        tracing.shutdown()
    print(f"\none hop, echo tool, {calls} calls per row (loopback, this machine)\n")
    print(f"{'path':<10} {'conc':>4} {'p50 ms':>8} {'p99 ms':>8} {'calls/s':>9}")
    for name, concurrency, (p50, p99, rate) in rows:
        print(f"{name:<10} {concurrency:>4} {p50:>8.3f} {p99:>8.3f} {rate:>9.0f}")
    print("\nratios (mesh / raw SDK; latency < 1 and throughput > 1 mean the mesh hop is faster)")
    for concurrency in (1, 16):
        sdk_row = next(r for n, c, r in rows if n == "raw SDK" and c == concurrency)
        mesh_row = next(r for n, c, r in rows if n == "mesh hop" and c == concurrency)
        print(
            f"  concurrency {concurrency:>2}: p50 x{mesh_row[0] / sdk_row[0]:.2f}  "
            f"p99 x{mesh_row[1] / sdk_row[1]:.2f}  calls/s x{mesh_row[2] / sdk_row[2]:.2f}"
        )


@asynccontextmanager
async def plain_server(port: int) -> AsyncGenerator[str]:
    """The baseline server in its own process; yields its /mcp URL once it answers."""
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
        yield url
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
