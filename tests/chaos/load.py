"""A bounded load of calls, run inside a host's namespace by the chaos tests: one JSON line per call on stdout.

`python -m tests.chaos.load --url URL` calls the agent at URL with the official SDK client (a client
token of the mesh); `--agent NAME --registry URL` calls it through the mesh (a `MeshNode` that finds
agents by mDNS on the LAN and the registry). Each call carries a deadline (`--deadline`, sent as the
mesh's time budget); a call that has not ended `--grace` seconds after that is recorded as a hang and
abandoned. Calls stop at `--max-calls`, at `--max-seconds` or when stdin closes; the calls in flight
end, a last line says how many calls were made, and the process exits. `Load` runs one inside a
host and reads its lines as they come.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
import time
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Final, Literal, final

import anyio
import anyio.abc
import httpx2
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp_types import RequestParamsMeta, TextContent

from mesh.errors import MeshError
from mesh.identity import MeshKeys
from mesh.runtime.node import MeshNode
from mesh.wire import BUDGET_META_KEY, ERROR_META_KEY
from tests.chaos.netns import ROOT, Lan

__all__ = ["MESH_ERRORS", "Kind", "Load", "Outcome", "classify", "main", "odd", "summary"]

Kind = Literal["ok", "typed", "untyped", "hang"]
"""What became of a call: an answer, a mesh error by name, anything else, or nothing at all in time."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One call of a load: its number, when it began and how long it took (seconds), and what came of it."""

    n: int
    at: float
    elapsed: float
    kind: Kind
    error: str = ""
    """The mesh error's name for `typed`; what came instead for `untyped` and `hang`."""


def _mesh_errors() -> frozenset[str]:
    found: set[str] = set()
    stack: list[type[MeshError]] = [MeshError]
    while stack:
        cls = stack.pop()
        found.add(cls.__name__)
        stack.extend(cls.__subclasses__())
    return frozenset(found)


MESH_ERRORS: Final = _mesh_errors()
"""The names of the mesh's exception types (`mesh.errors`): what a typed failure is named by."""

# What the SDK makes of a ToolError a tool raised; the mesh puts its error's name first inside it.
_TOOL_ERROR: Final = re.compile(r"^Error executing tool [\w.-]+: (\w+): ")


def classify(is_error: bool, text: str, named_in_meta: object = None) -> tuple[Kind, str]:
    """A tool result as an outcome: ok, a typed mesh error (by name), or untyped (the text).

    The mesh names its error in the result's `_meta` (a refusal by the callee's guard) or first in
    the text of a tool's error (a `MeshError` raised inside the tool).
    """
    if not is_error:
        return "ok", ""
    if isinstance(named_in_meta, str) and named_in_meta in MESH_ERRORS:
        return "typed", named_in_meta
    named = _TOOL_ERROR.match(text)
    if named is not None and named.group(1) in MESH_ERRORS:
        return "typed", named.group(1)
    return "untyped", text[:300]


def odd(outcomes: Sequence[Outcome]) -> list[Outcome]:
    """The calls that broke the contract: an untyped failure, or no end within the deadline and grace."""
    return [o for o in outcomes if o.kind in ("untyped", "hang")]


def summary(host: str, outcomes: Sequence[Outcome]) -> str:
    """One line for a test's output: how the calls from `host` ended, by kind and error, the slowest failure
    (seconds) and the first odd ones."""
    kinds = Counter(f"{o.kind}:{o.error}" if o.kind != "ok" else "ok" for o in outcomes)
    slowest = max((o.elapsed for o in outcomes if o.kind != "ok"), default=0.0)
    return f"calls from {host}: {dict(kinds)}, the slowest failure {slowest:g} s; first odd ones: {odd(outcomes)[:5]}"


@final
class Load(anyio.AsyncContextManagerMixin):
    """A load driver (`python -m tests.chaos.load ARGS`) running inside `host`, and the outcomes it reported."""

    def __init__(self, net: Lan, host: str, args: Sequence[str]) -> None:
        self.host = host
        self.command = ["ip", "netns", "exec", net.ns(host), sys.executable, "-m", "tests.chaos.load", *args]
        self.outcomes: list[Outcome] = []
        self.issued: int | None = None
        """How many calls the driver made, once it has ended on its own (None before, or if it was killed)."""
        self.stderr = ""
        self.exited = anyio.Event()
        self._changed = anyio.Event()
        self._process: anyio.abc.Process | None = None

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Load]:
        process = await anyio.open_process(self.command, cwd=ROOT, stdin=-1, stdout=-1, stderr=-1)
        self._process = process
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._read, process)
                tg.start_soon(self._drain_stderr, process)
                try:
                    yield self
                finally:
                    with anyio.CancelScope(shield=True):
                        await self.finish()
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                    await process.wait()

    def count(self, kind: Kind | None = None, *, since: int = 0) -> int:
        """How many outcomes (of `kind`) were reported, among those after the first `since`."""
        return sum(1 for o in self.outcomes[since:] if kind is None or o.kind == kind)

    def failures(self, *, since: int = 0) -> int:
        """How many calls did not succeed, among those after the first `since`."""
        return sum(1 for o in self.outcomes[since:] if o.kind != "ok")

    async def wait_for(self, check: Callable[[Load], bool], *, timeout: float = 60) -> None:
        """Wait (bounded) until `check(self)` holds as outcomes come in; RuntimeError if the driver ends first."""
        with anyio.fail_after(timeout):
            while not check(self):
                if self.exited.is_set():
                    raise RuntimeError(f"the load on {self.host} ended first: {self.stderr.strip()[-2000:]}")
                await self._changed.wait()

    async def finish(self, *, timeout: float = 60) -> list[Outcome]:
        """Stop issuing calls, wait for those in flight (bounded) and return every outcome."""
        process = self._process
        if process is None:
            raise RuntimeError("the load has not been started; use `async with`")
        if process.stdin is not None:
            await process.stdin.aclose()
        with anyio.move_on_after(timeout):
            await self.exited.wait()
        if process.returncode is None:
            process.kill()
        await process.wait()
        return self.outcomes

    async def _read(self, process: anyio.abc.Process) -> None:
        assert process.stdout is not None
        lines = BufferedByteReceiveStream(process.stdout)
        try:
            while True:
                line = json.loads(await lines.receive_until(b"\n", 1 << 16))
                if "issued" in line:
                    self.issued = int(line["issued"])
                else:
                    self.outcomes.append(Outcome(**line))
                self._wake()
        except (anyio.EndOfStream, anyio.IncompleteRead):
            pass
        finally:
            await process.wait()
            self.exited.set()
            self._wake()

    async def _drain_stderr(self, process: anyio.abc.Process) -> None:
        assert process.stderr is not None
        async for chunk in process.stderr:
            self.stderr += chunk.decode(errors="replace")

    def _wake(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()


# -- the driver --------------------------------------------------------------------------------

Call = Callable[[int], Awaitable[tuple[Kind, str]]]


def main(argv: Sequence[str] | None = None) -> None:
    """Run a load as the command line says (see the module's docstring)."""
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.load")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="call the agent at this /mcp URL with the SDK client")
    target.add_argument("--agent", help="call this agent through the mesh")
    parser.add_argument("--registry", help="the registry's URL (with --agent)")
    parser.add_argument("--tool", default="relay")
    parser.add_argument("--deadline", type=float, default=5.0)
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--pause", type=float, default=0.2, help="seconds each worker rests between calls")
    parser.add_argument("--max-calls", type=int, default=2000)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args(argv)
    anyio.run(_run, args)


async def _run(args: argparse.Namespace) -> None:
    caller = _sdk_caller(args) if args.url else _mesh_caller(args)
    stop = anyio.Event()
    async with caller as call, anyio.create_task_group() as tg:
        tg.start_soon(_stop_on_eof, stop)
        started = time.monotonic()
        numbers = itertools.count()
        async with anyio.create_task_group() as workers:
            for _ in range(args.concurrency):
                workers.start_soon(_worker, call, numbers, args, started, stop)
        # The last line, once every call has ended: numbers drawn past --max-calls were never called.
        print(json.dumps({"issued": min(next(numbers), args.max_calls)}), flush=True)
        tg.cancel_scope.cancel()


async def _worker(
    call: Call, numbers: Iterator[int], args: argparse.Namespace, started: float, stop: anyio.Event
) -> None:
    bound = args.deadline + args.grace
    while not stop.is_set() and time.monotonic() - started < args.max_seconds:
        if (n := next(numbers)) >= args.max_calls:
            return
        begin = time.monotonic()
        kind: Kind = "hang"
        error = f"no answer {bound:g} s after the call began"
        with anyio.move_on_after(bound):
            kind, error = await call(n)
        outcome = Outcome(n, round(begin - started, 3), round(time.monotonic() - begin, 3), kind, error)
        print(json.dumps(asdict(outcome)), flush=True)
        with anyio.move_on_after(args.pause):
            await stop.wait()


async def _stop_on_eof(stop: anyio.Event) -> None:
    await anyio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)
    stop.set()


@asynccontextmanager
async def _sdk_caller(args: argparse.Namespace) -> AsyncGenerator[Call]:
    token = MeshKeys.load().mint("chaos-load", "*", ttl=3600, role="client")
    timeout = httpx2.Timeout(args.deadline + args.grace + 5)
    budget: RequestParamsMeta = {BUDGET_META_KEY: int(args.deadline * 1000)}
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=timeout) as http,
        Client(streamable_http_client(args.url, http_client=http)) as client,
    ):

        async def call(n: int) -> tuple[Kind, str]:
            try:
                result = await client.call_tool(args.tool, {"text": f"call {n}"}, meta=budget)
            except MCPError as exc:  # a protocol error: typed when the mesh named its error in it
                data: object = exc.data
                named = data.get(ERROR_META_KEY) if isinstance(data, dict) else None
                return ("typed", str(named)) if named in MESH_ERRORS else ("untyped", f"MCPError: {exc}")
            except Exception as exc:  # the driver's task root: anything else is what the test looks for
                return "untyped", f"{type(exc).__name__}: {exc}"[:300]
            text = " ".join(c.text for c in result.content if isinstance(c, TextContent))
            return classify(result.is_error, text, (result.meta or {}).get(ERROR_META_KEY))

        yield call


@asynccontextmanager
async def _mesh_caller(args: argparse.Namespace) -> AsyncGenerator[Call]:
    async with MeshNode("chaos-load", registry=args.registry, lan=True) as node:
        await node.settle()

        async def call(n: int) -> tuple[Kind, str]:
            try:
                await node.call(args.agent, args.tool, {"text": f"call {n}"}, timeout=args.deadline)
            except MeshError as exc:
                return "typed", type(exc).__name__
            except Exception as exc:  # the driver's task root: anything else is what the test looks for
                return "untyped", f"{type(exc).__name__}: {exc}"[:300]
            return "ok", ""

        yield call


if __name__ == "__main__":
    main()
