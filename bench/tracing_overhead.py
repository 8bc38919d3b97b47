"""Tracing overhead per tool call: one mesh hop with tracing off against tracing on, side by side in one run.

The tracer provider is process-wide, so each side is its own mesh: a child process (the caller)
with its own registry and echo agent, tracing off (`OTEL_SDK_DISABLED=true`) in one and on
(exporting to its registry) in the other. The two sides take turns in short slices of sequential
calls, in ABBA order (off, on, on, off, ...), so both meet the shared host at the same moments:
its speed can double within a minute, and rounds taken minutes apart measure that instead of
tracing. Each slice ends with a pause longer than the exporter's one-second delay, so the work it
leaves behind (its last spans being exported and stored) is done before the other side's slice
starts, and is still counted in its CPU.

Two process trees doing identical work also differ, for as long as they live: on this host, with
tracing off on both sides (`--aa`), one tree ran up to 15% faster than the other for a whole run
(memory layout, CPU placement). So a run is several trials, each with fresh sides started in
alternating order, and the headline is the median over trials of each trial's p50 ratio (on/off),
with the range: one pair of trees decides one trial, not the run. Also reported: p50/p90/p99 and
calls/s of all slices pooled, and the CPU each process (caller, agent, registry with its ingest
workers) spent per call, read from /proc: where the overhead goes, not just how much there is.
`--aa` runs tracing off on both sides: the bench's own noise floor. `--toggle` runs one mesh
with tracing on and switches recording off and on between its slices (the caller's sampler,
`ParentBased(ALWAYS_OFF)` against the default, so the agent's spans follow): what recording,
exporting and storing spans cost, free of any difference between trees, but not what carrying
the context costs, which the toggled-off slices still pay. `--switch` runs one mesh and switches
tracing off and on as a whole, in the caller and the agent (`MeshTracerProvider.enabled`, through
`bench/switchable_echo.py`): off, no span is made and no context travels, as with tracing
disabled; what it leaves out is only the idle exporter threads, which stay. `--carry` switches
the same way but never records: what making spans and carrying their context cost alone.

    python bench/tracing_overhead.py [--trials 6] [--pairs 4] [--calls 1000] [--pause 1.2]
        [--aa | --toggle | --switch | --carry]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from proc_cpu import cpu_seconds

ROOT = Path(__file__).resolve().parents[1]
ECHO = ROOT / "agents" / "echo.py"
SWITCHABLE_ECHO = ROOT / "bench" / "switchable_echo.py"
"""The built-in echo with a tool that switches its tracing: the agent of the SWITCHED modes."""
WITHIN = {
    "recording": "recording spans, exporting and storing them (--toggle)",
    "tracing": "tracing as a whole (--switch)",
    "context": "making spans and carrying the context, none recorded (--carry)",
}
"""What a one-mesh run switches off and on between slices; the rest stays on."""
SWITCHED = ("tracing", "context")
"""Modes that switch the tracer provider itself, in the caller and (bench/switchable_echo.py) the agent."""
MODES = ("off", "on")
PROCESSES = ("caller", "agent", "registry")


@dataclass(frozen=True)
class Slice:
    """What one side reported for one slice."""

    latencies: list[float]  # ms, one per call
    wall: float  # seconds the calls took, without the pause
    cpu: dict[str, float]  # seconds per process, the pause included


def child(pause: float, within: str | None) -> None:
    """One side: start a registry and echo, warm up, print "ready"; then for each line "N [off|on]"
    on stdin, switch what `within` names off or on (`WITHIN`), make N sequential calls, pause, and
    print the latencies and each process's CPU as JSON."""
    import anyio
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

    from mesh.identity import MeshKeys
    from mesh.runtime.node import MeshNode
    from mesh.testing import AgentProcess, RegistryProcess
    from mesh.tracing.telemetry import ProcessTelemetry

    echo = SWITCHABLE_ECHO if within in SWITCHED else ECHO

    async def main() -> None:
        async with RegistryProcess() as registry:
            tracing = ProcessTelemetry(
                service="bench",
                instance="b",
                mesh=os.environ["MESH_NAME"],
                spool_dir=Path(os.environ["MESH_HOME"]) / "spool",
                tracer_base=lambda: registry.base_url,
                credentials=MeshKeys.load(),
            )
            async with (
                AgentProcess(str(echo), "--registry", registry.base_url) as agent,
                MeshNode("bench", registry=registry.base_url) as node,
            ):
                pids = {"caller": os.getpid(), "agent": agent.pid, "registry": registry.pid}
                await node.settle()
                for _ in range(300):
                    await node.call("echo", "echo", {"text": "warm"})
                await anyio.sleep(pause)  # the warm-up's spans are exported and stored before the first slice
                print("ready", flush=True)
                while line := (await anyio.to_thread.run_sync(sys.stdin.readline)).strip():
                    count, *recording = line.split()
                    calls = int(count)
                    if recording and tracing.mesh_provider is not None:
                        on = recording == ["on"]
                        if within in SWITCHED:  # the agent too: it makes spans only when its parent does
                            if not await node.call("echo", "tracing", {"on": on}):
                                raise RuntimeError("the agent has no tracing to switch")
                            tracing.mesh_provider.enabled = on
                        record = on and within != "context"
                        tracing.mesh_provider.sampler = None if record else ParentBased(ALWAYS_OFF)
                    cpu_before = {name: _cpu(name, pid) for name, pid in pids.items()}
                    latencies: list[float] = []
                    started = time.perf_counter()
                    for _ in range(calls):
                        t0 = time.perf_counter()
                        await node.call("echo", "echo", {"text": "hello"})
                        latencies.append((time.perf_counter() - t0) * 1000)
                    wall = time.perf_counter() - started
                    await anyio.sleep(pause)
                    cpu = {name: _cpu(name, pid) - cpu_before[name] for name, pid in pids.items()}
                    print(json.dumps({"latencies": latencies, "wall": wall, "cpu": cpu}), flush=True)
            tracing.shutdown()

    anyio.run(main, backend_options={"use_uvloop": True})


def _cpu(name: str, pid: int) -> float:
    # The registry's ingest workers are its children; the caller's children are the others.
    return cpu_seconds(pid, children=name == "registry")


def main(trials: int, pairs: int, calls: int, pause: float, aa: bool, within: str | None) -> None:
    runs: list[dict[str, list[Slice]]] = []
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as home:
        for trial in range(trials):
            slices: dict[str, list[Slice]] = {mode: [] for mode in MODES}
            sides: dict[str, subprocess.Popen[str]] = {}
            order = MODES if trial % 2 == 0 else MODES[::-1]  # which tree starts first alternates too
            try:
                if within:  # tracing on; each slice says whether what `within` names is on
                    sides["on"] = _start("on", Path(home) / str(trial) / "on", pause, aa=False, within=within)
                else:
                    for mode in order:
                        sides[mode] = _start(mode, Path(home) / str(trial) / mode, pause, aa, within=None)
                for pair in range(pairs):
                    for mode in order if pair % 2 == 0 else order[::-1]:
                        side = sides["on"] if within else sides[mode]
                        slices[mode].append(_slice(side, f"{calls} {mode}" if within else str(calls)))
            finally:
                for side in sides.values():
                    _stop(side)
                shutil.rmtree(Path(home) / str(trial), ignore_errors=True)  # the trial's stores and spools
            runs.append(slices)
            print(f"  trial {trial + 1}: p50 on/off {_overhead(slices):+.1f}%", flush=True)
    if aa:
        label = "A/A: tracing off on both sides"
    elif within:
        label = f"{WITHIN[within]} off against on, in one mesh"
    else:
        label = "tracing off against on"
    _report(runs, calls, pause, label)


def _overhead(trial: dict[str, list[Slice]]) -> float:
    """A trial's p50 with tracing on against off, as a percentage change."""
    p50 = {mode: statistics.median(x for piece in trial[mode] for x in piece.latencies) for mode in MODES}
    return (p50["on"] / p50["off"] - 1) * 100


def _start(mode: str, home: Path, pause: float, aa: bool, *, within: str | None) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "MESH_HOME": str(home),
        "MESH_NAME": f"t-{uuid.uuid4().hex[:6]}",
        "OTEL_SDK_DISABLED": "true" if mode == "off" or aa else "false",
    }
    side = subprocess.Popen(
        [sys.executable, __file__, "--child", "--pause", str(pause), *(["--within", within] if within else [])],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert side.stdout is not None
    try:
        if _read(side.stdout) != "ready":
            raise RuntimeError(f"the tracing-{mode} side did not start")
    except BaseException:
        _stop(side)
        raise
    return side


def _stop(side: subprocess.Popen[str]) -> None:
    # End of stdin ends the side's loop; it then stops its agent and registry itself.
    assert side.stdin is not None
    side.stdin.close()
    try:
        side.wait(timeout=60)
    except subprocess.TimeoutExpired:
        side.kill()
        side.wait()


def _slice(side: subprocess.Popen[str], command: str) -> Slice:
    assert side.stdin is not None
    assert side.stdout is not None
    side.stdin.write(f"{command}\n")
    side.stdin.flush()
    return Slice(**json.loads(_read(side.stdout)))


def _read(stream: IO[str]) -> str:
    line = stream.readline()
    if not line:
        raise RuntimeError("a benchmark side exited early")
    return line.strip()


def _report(runs: list[dict[str, list[Slice]]], calls: int, pause: float, label: str) -> None:
    slices = {mode: [piece for run in runs for piece in run[mode]] for mode in MODES}
    figures: dict[str, dict[str, float]] = {}
    for mode in MODES:
        values = sorted(x for piece in slices[mode] for x in piece.latencies)
        wall = sum(piece.wall for piece in slices[mode])
        figures[mode] = {
            "p50": statistics.median(values),
            "p90": values[int(len(values) * 0.90)],
            "p99": values[int(len(values) * 0.99)],
            "rate": len(values) / wall,
        } | {name: sum(piece.cpu[name] for piece in slices[mode]) / len(values) * 1e6 for name in PROCESSES}
    pairs = len(runs[0]["off"])
    print(
        f"\none mesh hop, {label}: {len(runs)} trials of {pairs} ABBA pairs of {calls}-call slices"
        f" ({pause:g} s pause after each)\n"
    )
    print(f"{'tracing':<8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'calls/s':>9}")
    for mode in MODES:
        m = figures[mode]
        print(f"{mode:<8} {m['p50']:>8.3f} {m['p90']:>8.3f} {m['p99']:>8.3f} {m['rate']:>9.0f}")
    print(f"\n{'CPU µs per call':<16} {'caller':>8} {'agent':>8} {'registry':>9}")
    for mode in MODES:
        m = figures[mode]
        print(f"{mode:<16} {m['caller']:>8.0f} {m['agent']:>8.0f} {m['registry']:>9.0f}")
    off, on = figures["off"], figures["on"]
    change = {key: (on[key] / off[key] - 1) * 100 for key in ("p50", "p90", "p99", "rate")}
    print(
        f"\npooled: p50 {change['p50']:+.1f}%, p90 {change['p90']:+.1f}%, "
        f"p99 {change['p99']:+.1f}%, throughput {change['rate']:+.1f}%"
    )
    trials = sorted(_overhead(run) for run in runs)
    print(
        f"p50 overhead: median {statistics.median(trials):+.1f}% over {len(trials)} trials"
        f" (range {trials[0]:+.1f}% to {trials[-1]:+.1f}%)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="tracing overhead per mesh hop")
    parser.add_argument("--trials", type=int, default=6, help="trials, each with freshly started sides")
    parser.add_argument("--pairs", type=int, default=4, help="off/on pairs of slices a trial")
    parser.add_argument("--calls", type=int, default=1000, help="sequential calls a slice")
    parser.add_argument("--pause", type=float, default=1.2, help="seconds of rest after each slice")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--aa", action="store_true", help="tracing off on both sides: the noise floor")
    for flag, what in (("--toggle", "recording"), ("--switch", "tracing"), ("--carry", "context")):
        choice.add_argument(flag, dest="within", action="store_const", const=what, help=f"one mesh: {WITHIN[what]}")
    parser.add_argument("--within", choices=WITHIN, help=argparse.SUPPRESS)  # how the parent tells a child
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.pause, args.within)
    else:
        main(args.trials, args.pairs, args.calls, args.pause, args.aa, args.within)
