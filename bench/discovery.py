"""Time from `mesh run` to listed (healthy, in the peer directory) and to the first successful call.

A running observer (`MeshNode`, what `mesh ls` and `mesh call` use) watches a mesh with a registry;
each round spawns `mesh run agents/echo.py` and times both moments from the spawn. The process
start itself (`import mcp` is ~0.5 s, DESIGN §10) is part of what is measured, so the same run
also times a bare `python -c "import mesh.runtime.process"` as the floor.

    python bench/discovery.py [--starts 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(starts: int) -> None:
    from mesh.errors import MeshError
    from mesh.runtime.node import MeshNode
    from mesh.testing import RegistryProcess

    os.environ["MESH_NAME"] = f"b-{uuid.uuid4().hex[:6]}"  # MESH_HOME: a temporary directory (the end of this file)
    listed: list[float] = []
    called: list[float] = []
    imports: list[float] = []
    async with RegistryProcess() as registry, MeshNode("observer", registry=registry.base_url) as node:
        for _ in range(starts):
            t0 = time.perf_counter()
            await anyio.run_process([sys.executable, "-c", "import mesh.runtime.process"])
            imports.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            process = await anyio.open_process(
                [
                    sys.executable,
                    "-m",
                    "mesh",
                    "run",
                    str(ROOT / "agents" / "echo.py"),
                    "--registry",
                    registry.base_url,
                ],
                stderr=subprocess.DEVNULL,
            )
            try:
                with anyio.fail_after(30):
                    changes = node.directory.watch()
                    with changes:
                        while not node.directory.instances("echo"):
                            with anyio.move_on_after(0.05):
                                await changes.receive()
                    listed.append(time.perf_counter() - t0)
                    while True:
                        try:
                            await node.call("echo", "echo", {"text": "first"}, timeout=2)
                            break
                        except MeshError:
                            await anyio.sleep(0.01)
                    called.append(time.perf_counter() - t0)
            finally:
                process.terminate()
                await process.wait()
                await process.aclose()
            with anyio.fail_after(10), node.directory.watch() as gone:
                while node.directory.instances("echo"):
                    with anyio.move_on_after(0.2):
                        await gone.receive()
    print(f"\n{starts} starts of `mesh run agents/echo.py` (registry running, observer watching)\n")
    print(f"{'moment':<34} {'median s':>9} {'p95 s':>7}")
    for name, values in (
        ("python start + import (floor)", imports),
        ("listed healthy (mesh ls view)", listed),
        ("first successful call", called),
    ):
        print(f"{name:<34} {statistics.median(values):>9.3f} {pct(values, 0.95):>7.3f}")
    print(f"\nratio listed / import floor: x{statistics.median(listed) / statistics.median(imports):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="time from mesh run to listed and first call")
    parser.add_argument("--starts", type=int, default=20)
    starts = parser.parse_args().starts
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as home:
        os.environ["MESH_HOME"] = home
        anyio.run(main, starts)
