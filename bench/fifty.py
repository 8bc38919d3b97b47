"""Fifty agents under one `mesh up`: forked from the preloaded launcher, and each its own process, side by side.

The mesh: a registry, a ten-link chain (`bench/fixtures/chain.py`, `chain-1` → ... → `chain-10`) and
forty echo agents (`echo-1` ... `echo-40`), in a mesh.toml written to a temporary directory; each
mode runs in its own MESH_HOME under its own mesh name. For each mode it measures:

- up: from starting `mesh up` until every agent has answered a `tools/call` (each is called as soon
  as `mesh up` reports it ready);
- start → callable: per agent, from `mesh up`'s `starting` line to its first answer (p50, p95), in the
  burst of fifty starts (the times are when this process read the lines: it is busy calling then);
- restart → callable: `--kills` agents killed one by one (SIGKILL) in the idle mesh, each from its
  new process's `starting` line to its first answer: one agent started by `mesh up`, p50 and p95;
- PSS: the sum of `/proc/PID/smaps_rollup` Pss over `mesh up` and every process below it;
- idle CPU: utime + stime of all those processes over `--idle` seconds, after `--settle` seconds, and
  its split: the agents' event loops (main threads), the agents' other threads, the registry (with its
  ingest workers), the rest (`mesh up`, the launcher);
- `mesh ls`: wall time of `mesh ls --json --registry URL` (the median of three; the count it lists), and
  of `mesh ls --json` with no registry named (the registry, on a port of its own, is found on mDNS);
- chain: one call of `hop(hops=9)` on chain-1, then the time until the registry holds the whole
  trace (ten agents, every span, complete);
- stop: SIGINT to `mesh up`, its exit code, and how many of its processes outlived it.

Then the ratios (own processes ÷ preloaded). Every wait has a deadline; whatever is left at the end
is killed (and counted). `--modes preload` alone halves the time.

The load average of the host is printed at the start and the end of each mode: other work on the
cores moves every figure.

    python bench/fifty.py [--echo 40] [--chain 10] [--idle 20] [--settle 30] [--modes preload,spawn]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx2
from anyio.streams.text import TextReceiveStream

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.proc_cpu import cpu_seconds  # noqa: E402

CHAIN = ROOT / "bench" / "fixtures" / "chain.py"
UP_DEADLINE = 300.0
CALL_DEADLINE = 60.0
TRACE_DEADLINE = 30.0
STOP_DEADLINE = 60.0


@dataclass
class Figures:
    """What one mode measured."""

    mode: str
    agents: int = 0
    up_s: float = float("nan")
    start_p50_s: float = float("nan")
    start_p95_s: float = float("nan")
    ready_p50_s: float = float("nan")
    ready_p95_s: float = float("nan")
    """From `starting` to `ready` as `mesh up` itself reports them (its `/healthz` check)."""
    restart_p50_s: float = float("nan")
    restart_p95_s: float = float("nan")
    """One agent killed in the idle mesh: from its new process's `starting` line to its first answer."""
    start_cpu_s: float = float("nan")
    """CPU seconds of every process of the mesh from its start until every agent answered."""
    pss_mb: float = float("nan")
    processes: int = 0
    idle_core: float = float("nan")
    idle_split: dict[str, float] = field(default_factory=dict[str, float])
    """Idle CPU (share of a core) by part: agents' loops, agents' other threads, registry, the rest."""
    ls_s: float = float("nan")
    ls_listed: int = 0
    ls_cpu_s: float = float("nan")
    """CPU seconds (user + system) of one `mesh ls --registry URL`, median of 3: a busy host disturbs it less."""
    ls_found_s: float = float("nan")
    """`mesh ls --json` with no registry named: the registry (on a port of its own) is found on mDNS."""
    load: tuple[float, float] = (float("nan"), float("nan"))
    """The host's 1-minute load average when the mode started and when it ended."""
    trace_s: float = float("nan")
    trace_spans: int = 0
    stop_code: int | None = None
    left_behind: int = 0
    forked: int = 0
    notes: list[str] = field(default_factory=list[str])


def mesh_toml(echo: int, chain: int) -> str:
    """The mesh file: the chain first (its last link first), then the echo agents."""
    lines = ['[mesh]\nname = "fifty"\n', "[registry]\nport = 0\n"]
    for k in range(chain, 0, -1):
        meta = f'meta = {{ next = "chain-{k + 1}" }}\n' if k < chain else ""
        lines.append(f'[[agents]]\ntarget = "{CHAIN}"\nname = "chain-{k}"\n{meta}')
    for k in range(1, echo + 1):
        lines.append(f'[[agents]]\ntarget = "echo"\nname = "echo-{k}"\n')
    return "\n".join(lines)


def descendants(root: int) -> set[int]:
    """`root` and every live process below it (Linux /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found = {root} if root in parents else set[int]()
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in found and pid not in found:
                found.add(pid)
                grew = True
    return found


def pss_kb(pid: int) -> int:
    """The proportional set size of `pid`, in kB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def total_cpu(pids: set[int]) -> float:
    """CPU seconds so far of every process in `pids` still alive."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            total += cpu_seconds(pid)
    return total


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class UpWatch:
    """`mesh up`'s plain lines, timestamped: each agent's `starting` and `ready`, and its URL."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.ready: dict[str, tuple[float, str]] = {}
        self.registry: str | None = None
        self.events: list[tuple[float, str, str, int, str]] = []
        """(time read, label, state, pid, url) of every state line."""
        self.lines: list[str] = []
        self.changed = anyio.Event()

    def take(self, line: str) -> None:
        now = time.perf_counter()
        self.lines.append(line)
        words = line.split()
        if len(words) >= 3 and words[2].startswith("pid="):
            label, state = words[0], words[1]
            url = words[3] if len(words) >= 4 and words[3].startswith("http") else ""
            self.events.append((now, label, state, int(words[2].removeprefix("pid=")), url))
            if state == "starting":
                self.started.setdefault(label, now)
            elif state == "ready" and len(words) >= 4:
                if label == "registry":
                    self.registry = words[3]
                else:
                    self.ready.setdefault(label, (now, words[3]))
        self.changed.set()
        self.changed = anyio.Event()

    def latest(self, label: str, state: str) -> tuple[float, int, str] | None:
        """(time read, pid, url) of the label's latest line in `state`."""
        found = [(t, pid, url) for t, lab, st, pid, url in self.events if lab == label and st == state]
        return found[-1] if found else None

    async def until(self, condition: Callable[[], object], timeout: float) -> None:
        """Return once `condition()` holds of what was read (bounded)."""
        with anyio.fail_after(timeout):
            while not condition():
                with anyio.move_on_after(0.5):
                    await self.changed.wait()


async def follow(stream: anyio.abc.ByteReceiveStream, take: Any) -> None:
    pending = ""
    async for chunk in TextReceiveStream(stream, errors="replace"):
        *lines, pending = (pending + chunk).split("\n")
        for line in lines:
            take(line)


async def call_tool(http: httpx2.AsyncClient, url: str, tool: str, arguments: dict[str, Any]) -> Any:
    """One `tools/call` with the official SDK client over a shared HTTP client; the structured result."""
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async with Client(streamable_http_client(url, http_client=http)) as client:
        result = await client.call_tool(tool, arguments)
    if result.is_error:
        raise RuntimeError(f"{tool} failed: {result.content}")
    return result.structured_content


async def until_callable(http: httpx2.AsyncClient, label: str, url: str) -> float:
    """Call the agent until it answers (bounded); the time it first did."""
    tool, arguments = ("hop", {"hops": 0}) if label.startswith("chain-") else ("echo", {"text": label})
    with anyio.fail_after(CALL_DEADLINE):
        while True:
            try:
                await call_tool(http, url, tool, arguments)
                return time.perf_counter()
            except Exception:  # not up yet: the deadline bounds the retries
                await anyio.sleep(0.05)


async def measure(mode: str, echo: int, chain: int, idle: float, settle: float, kills: int) -> Figures:
    from mesh.identity import MeshKeys

    figures = Figures(mode=mode)
    workdir = Path(tempfile.mkdtemp(prefix="fifty-"))
    (workdir / "home").mkdir()
    (workdir / "mesh.toml").write_text(mesh_toml(echo, chain))
    name = f"b50-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if k not in ("MESH_REGISTRY", "MESH_TRACER", "MESH_POLICY")}
    env |= {"MESH_HOME": str(workdir / "home"), "MESH_NAME": name, "MESH_UP_PRELOAD": "1" if mode == "preload" else "0"}
    os.environ["MESH_HOME"], os.environ["MESH_NAME"] = env["MESH_HOME"], name  # for the keys and `mesh ls`
    token = MeshKeys.load(name).mint("bench", "*", ttl=3600, role="client")
    watch = UpWatch()
    stderr_log = (workdir / "stderr.log").open("w")
    pids: set[int] = set()
    t0 = time.perf_counter()
    process = await anyio.open_process(
        [sys.executable, "-m", "mesh", "up", str(workdir), "--registry-port", "0"],
        env=env,
        stdin=subprocess.DEVNULL,
        stderr=stderr_log,
    )
    agents = echo + chain
    try:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=10) as http,
            anyio.create_task_group() as tg,
        ):
            assert process.stdout is not None
            tg.start_soon(follow, process.stdout, watch.take)
            callable_at: dict[str, float] = {}

            async def check(label: str, url: str) -> None:
                callable_at[label] = await until_callable(http, label, url)

            with anyio.fail_after(UP_DEADLINE):
                checking: set[str] = set()
                while len(callable_at) < agents:
                    for label, (_, url) in list(watch.ready.items()):
                        if label not in checking:
                            checking.add(label)
                            tg.start_soon(check, label, url)
                    if process.returncode is not None:
                        raise RuntimeError(f"mesh up exited: {watch.lines[-5:]}")
                    with anyio.move_on_after(0.5):
                        await watch.changed.wait()
            figures.agents = len(callable_at)
            figures.up_s = max(callable_at.values()) - t0
            starts = [callable_at[label] - watch.started[label] for label in callable_at]
            figures.start_p50_s, figures.start_p95_s = statistics.median(starts), pct(starts, 0.95)
            readies = [watch.ready[label][0] - watch.started[label] for label in callable_at]
            figures.ready_p50_s, figures.ready_p95_s = statistics.median(readies), pct(readies, 0.95)
            figures.start_cpu_s = total_cpu(descendants(process.pid))

            await anyio.sleep(settle)  # leases, first announcements and probes settle first
            pids = descendants(process.pid)
            figures.processes = len(pids)
            figures.forked = sum(1 for pid in pids if _comm(pid).startswith("mesh "))
            figures.pss_mb = sum(pss_kb(pid) for pid in pids) / 1024
            agent_pids = {pid for pid in pids if _comm(pid).startswith("mesh ")} if mode == "preload" else set[int]()
            agent_pids |= {p for _, label, st, p, _ in watch.events if st == "ready" and label != "registry"}
            before, split_before = total_cpu(pids), _split(pids, agent_pids)
            t_idle = time.perf_counter()
            await anyio.sleep(idle)
            took = time.perf_counter() - t_idle
            figures.idle_core = (total_cpu(pids) - before) / took
            split_after = _split(pids, agent_pids)
            figures.idle_split = {k: (split_after[k] - split_before.get(k, 0.0)) / took for k in split_after}

            assert watch.registry is not None
            progress(f"up {figures.up_s:.1f} s; idle {figures.idle_core:.1%} of a core; killing agents one by one")
            restarts = await time_restarts(http, watch, [f"echo-{k}" for k in range(1, min(echo, kills) + 1)])
            figures.restart_p50_s, figures.restart_p95_s = statistics.median(restarts), pct(restarts, 0.95)
            progress("timing mesh ls")
            figures.ls_s, figures.ls_cpu_s, figures.ls_listed = await time_ls(env, "--registry", watch.registry)
            figures.ls_found_s, _, _ = await time_ls(env)
            progress(f"mesh ls {figures.ls_s:.2f} s; calling the chain")
            figures.trace_s, figures.trace_spans = await time_chain(http, watch, chain)
            pids |= descendants(process.pid)  # the restarted agents too
            progress("stopping")
            tg.cancel_scope.cancel()
        process.send_signal(signal.SIGINT)
        with anyio.move_on_after(STOP_DEADLINE):
            figures.stop_code = await process.wait()
    finally:
        with anyio.CancelScope(shield=True):
            tree = (descendants(process.pid) if process.returncode is None else set[int]()) | pids  # before any kill
            if process.returncode is None:  # a measurement failed: stop it as Ctrl-C would, then for good
                process.send_signal(signal.SIGINT)
                with anyio.move_on_after(STOP_DEADLINE):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                with anyio.move_on_after(10):
                    await process.wait()
            left = [pid for pid in tree if pid != process.pid and _alive(pid)]
            figures.left_behind = len(left)
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await process.aclose()
            stderr_log.close()
    return figures


async def time_restarts(http: httpx2.AsyncClient, watch: UpWatch, labels: list[str]) -> list[float]:
    """Kill each agent of `labels` in turn (SIGKILL) in the idle mesh; seconds from its new process's
    `starting` line to its first answer, for each (the restart's backoff is not counted)."""
    took: list[float] = []
    for label in labels:
        before = watch.latest(label, "ready")
        assert before is not None
        _, old_pid, _ = before
        os.kill(old_pid, signal.SIGKILL)

        def restarted(label: str = label, old_pid: int = old_pid) -> bool:
            ready = watch.latest(label, "ready")
            return ready is not None and ready[1] != old_pid

        await watch.until(restarted, CALL_DEADLINE)
        started, ready = watch.latest(label, "starting"), watch.latest(label, "ready")
        assert started is not None
        assert ready is not None
        took.append(await until_callable(http, label, ready[2]) - started[0])
    return took


async def time_ls(env: dict[str, str], *more: str) -> tuple[float, float, int]:
    """The median wall and CPU times of `mesh ls --json [MORE]` over three runs, and how many it listed."""
    walls: list[float] = []
    cpus: list[float] = []
    listed = 0
    for _ in range(3):
        t, c = time.perf_counter(), _children_cpu()
        with anyio.fail_after(60):
            result = await anyio.run_process(
                [sys.executable, "-m", "mesh", "ls", "--json", *more], env=env, check=False
            )
        walls.append(time.perf_counter() - t)
        cpus.append(_children_cpu() - c)
        with contextlib.suppress(ValueError):
            listed = len(json.loads(result.stdout))
    return statistics.median(walls), statistics.median(cpus), listed


def _children_cpu() -> float:
    """CPU seconds of this process's children that have been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def time_chain(http: httpx2.AsyncClient, watch: UpWatch, chain: int) -> tuple[float, int]:
    """Call the whole chain once; seconds from its answer until the registry holds the complete trace."""
    assert watch.registry is not None
    _, first = watch.ready["chain-1"]
    since = time.time()
    answer = await call_tool(http, first, "hop", {"hops": chain - 1})
    done = time.perf_counter()
    expected_agents = {f"chain-{k}" for k in range(1, chain + 1)}
    if answer != {"result": sorted(expected_agents, key=lambda a: int(a.split("-")[1]))}:
        raise RuntimeError(f"the chain answered {answer}")
    expected_spans = 2 * chain - 1  # a server span on every link, a client span on every link but the last
    with anyio.fail_after(TRACE_DEADLINE):
        while True:
            found = (await http.get(f"{watch.registry}/api/traces", params={"agent": "chain-1"})).json()
            fresh = [t for t in found if t["start"] >= since - 1]
            if fresh and fresh[0]["span_count"] >= expected_spans and set(fresh[0]["agents"]) >= expected_agents:
                tree = (await http.get(f"{watch.registry}/api/traces/{fresh[0]['trace_id']}")).json()
                if tree.get("complete"):
                    return time.perf_counter() - done, fresh[0]["span_count"]
            await anyio.sleep(0.05)


_PARTS = ("agent loops", "agent threads", "registry", "rest")


def _split(pids: set[int], agents: set[int]) -> dict[str, float]:
    """CPU seconds so far by part (`_PARTS`): each agent's main thread and its other threads, the registry
    and its ingest workers, everything else."""
    ticks = dict.fromkeys(_PARTS, 0)
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError, IndexError):
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                if pid in agents:
                    part = "agent loops" if int(task.name) == pid else "agent threads"
                else:
                    part = "registry" if b"\x00registry\x00" in cmdline or b"ingest_worker" in cmdline else "rest"
                ticks[part] += int(fields[11]) + int(fields[12])
    return {part: n / os.sysconf("SC_CLK_TCK") for part, n in ticks.items()}


def progress(message: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def _comm(pid: int) -> str:
    """The process's name (a fork of the launcher names itself `mesh LABEL`)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def cold_import(module: str = "mesh.runtime.process") -> float:
    """Wall seconds of `python -c "import MODULE"`: an agent of its own pays `mesh.runtime.process` first."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
    return time.perf_counter() - t


def report(results: list[Figures], floor: float, cli: float) -> None:
    rows: list[tuple[str, Callable[[Figures], str]]] = [
        ("agents callable (forked)", lambda f: f"{f.agents} ({f.forked})"),
        ("up → every agent callable", lambda f: f"{f.up_s:.2f} s"),
        ("one agent start → callable p50", lambda f: f"{f.start_p50_s:.3f} s"),
        ("one agent start → callable p95", lambda f: f"{f.start_p95_s:.3f} s"),
        (
            "one agent start → ready (mesh up's view) p50, p95",
            lambda f: f"{f.ready_p50_s:.3f} s, {f.ready_p95_s:.3f} s",
        ),
        ("CPU of the whole mesh until every agent answered", lambda f: f"{f.start_cpu_s:.1f} s"),
        (
            "one agent (re)started in the idle mesh → callable p50, p95",
            lambda f: f"{f.restart_p50_s:.3f} s, {f.restart_p95_s:.3f} s",
        ),
        ("PSS, all processes", lambda f: f"{f.pss_mb / 1024:.2f} GB ({f.processes} processes)"),
        ("idle CPU", lambda f: f"{f.idle_core * 100:.1f} % of a core"),
        (
            "idle CPU: agents' loops · agents' other threads · registry · rest",
            lambda f: " · ".join(f"{f.idle_split.get(k, float('nan')) * 100:.1f} %" for k in _PARTS),
        ),
        (
            "mesh ls --registry (median of 3)",
            lambda f: f"{f.ls_s:.2f} s ({f.ls_listed} listed), CPU {f.ls_cpu_s:.2f} s",
        ),
        ("mesh ls, registry found on mDNS (median of 3)", lambda f: f"{f.ls_found_s:.2f} s"),
        ("load average, start → end", lambda f: f"{f.load[0]:.1f} → {f.load[1]:.1f}"),
        ("chain answered → trace complete", lambda f: f"{f.trace_s:.2f} s ({f.trace_spans} spans)"),
        ("Ctrl-C: exit code, processes left", lambda f: f"{f.stop_code}, {f.left_behind}"),
    ]
    print(f"\none cold `import mesh.runtime.process`: {floor:.2f} s")
    print(f"one cold `import mesh.cli.ls` (the floor of `mesh ls`): {cli:.2f} s")
    print(f"\n| what | {' | '.join(f.mode for f in results)} |")
    print(f"|---|{'---|' * len(results)}")
    for title, show in rows:
        print(f"| {title} | {' | '.join(show(f) for f in results)} |")
    by_mode = {f.mode: f for f in results}
    if "preload" in by_mode:
        targets(by_mode["preload"])
    if {"preload", "spawn"} <= set(by_mode):
        p, s = by_mode["preload"], by_mode["spawn"]
        print("\nratios, own processes ÷ preloaded (same run):")
        print(
            f"  up x{s.up_s / p.up_s:.1f}, restart p95 x{s.restart_p95_s / p.restart_p95_s:.1f}, "
            f"PSS x{s.pss_mb / p.pss_mb:.2f}, idle CPU x{s.idle_core / max(p.idle_core, 1e-9):.2f}"
        )


TARGETS: list[tuple[str, Callable[[Figures], float], float, str]] = [
    ("`mesh up` of 50 agents → every agent callable", lambda f: f.up_s, 10.0, "s"),
    ("one agent started by `mesh up` → callable, p95", lambda f: f.restart_p95_s, 0.3, "s"),
    ("memory of the whole mesh, registry included (PSS)", lambda f: f.pss_mb / 1024, 2.0, "GB"),
    ("idle CPU of the mesh", lambda f: f.idle_core * 100, 10.0, "% of a core"),
    ("`mesh ls` with a registry, wall time", lambda f: f.ls_s, 0.5, "s"),
    ("10-hop chain: trace complete after the call returns", lambda f: f.trace_s, 2.0, "s"),
]
"""Issue 25's targets: (what, the figure of a mode, the most it may be, unit)."""


def targets(preloaded: Figures) -> None:
    """The targets table: each figure of the preloaded mesh (how `mesh up` starts agents) against its goal."""
    print("\n| target | goal | measured | |\n|---|---|---|---|")
    for what, figure, most, unit in TARGETS:
        value = figure(preloaded)
        verdict = "met" if value <= most else "missed" if value == value else "not measured"  # NaN: no reading
        print(f"| {what} | ≤ {most:g} {unit} | {value:.2f} {unit} | {verdict} |")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--echo", type=int, default=40)
    parser.add_argument("--chain", type=int, default=10)
    parser.add_argument("--idle", type=float, default=20.0)
    parser.add_argument("--settle", type=float, default=30.0)
    parser.add_argument("--modes", default="preload,spawn")
    parser.add_argument("--kills", type=int, default=10, help="agents killed one by one to time a restart")
    args = parser.parse_args()
    floor, cli = cold_import(), cold_import("mesh.cli.ls")
    results: list[Figures] = []
    for mode in args.modes.split(","):
        print(f"mode {mode}: starting {args.echo + args.chain} agents ...", flush=True)
        load = os.getloadavg()[0]
        figures = await measure(mode, args.echo, args.chain, args.idle, args.settle, args.kills)
        figures.load = (load, os.getloadavg()[0])
        print(f"  {figures}", flush=True)
        results.append(figures)
    report(results, floor, cli)


if __name__ == "__main__":
    anyio.run(main)
