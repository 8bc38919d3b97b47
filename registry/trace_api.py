"""The trace registry's query side: the HTTP routes and MCP tools that read stored traces.

Owns `GET /api/traces`, `GET /api/traces/{trace_id}`, `GET /api/tracer/stats`, the MCP tools
`search_traces`, `get_trace` and `explain_decision`, and the parsing of their filters. Queries run
in a worker thread; the store reads through its own connection, so they never wait behind ingest.
A store whose database cannot be reached answers 503 (an MCP tool error), never a wrong answer.
Owns no receiving (`registry.span_intake`), storage (`registry.trace_stores`), stitching or rendering
(`mesh.tracing`): the counters it shows come from the receiver as a callable.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Final, Literal, final

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mesh.tracing.render import explain
from mesh.tracing.stitch import IN_PROGRESS_GRACE, stitch
from mesh.wire import TraceSummary, TraceTree
from registry.stores import StoreUnavailable
from registry.trace_stores import TraceStore

__all__ = ["TraceQueries", "install_trace_api", "parse_since"]

_JSON: Final = "application/json"


@final
class TraceQueries:
    """Searches and stitched trees over a trace store, and the HTTP handlers that serve them."""

    def __init__(
        self, store: TraceStore, counters: Callable[[], Mapping[str, int]], *, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self._counters = counters
        self._clock = clock  # the store's: spans' arrival times are this host's (or its database's writers')

    async def list_traces(self, request: Request) -> Response:
        """GET /api/traces?agent=&tool=&status=&denied=&errors=&since=&min_duration_ms=&limit=: summaries (JSON)."""
        query = request.query_params
        try:
            found = await self.search(
                agent=query.get("agent"),
                tool=query.get("tool"),
                status=query.get("status"),
                denied=_flag(query.get("denied"), "denied"),
                errors=_flag(query.get("errors"), "errors"),
                since=query.get("since"),
                min_duration_ms=_number(query.get("min_duration_ms"), "min_duration_ms"),
                limit=_integer(query.get("limit") or "50", "limit"),
            )
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        except StoreUnavailable as exc:
            return JSONResponse({"error": str(exc)}, 503, headers=_RETRY)
        return Response("[" + ",".join(summary.model_dump_json() for summary in found) + "]", media_type=_JSON)

    async def show_trace(self, request: Request) -> Response:
        """GET /api/traces/{trace_id}: the stitched tree (the id may be shortened), 404 if unknown, 400 if ambiguous."""
        trace_id = str(request.path_params["trace_id"])
        try:
            tree = await self.tree(trace_id)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        except StoreUnavailable as exc:
            return JSONResponse({"error": str(exc)}, 503, headers=_RETRY)
        if tree is None:
            return JSONResponse({"error": f"no trace {trace_id}"}, 404)
        return Response(tree.model_dump_json(), media_type=_JSON)

    async def show_stats(self, _: Request) -> Response:
        """GET /api/tracer/stats: the receiver's counters, plus what is in flight and waiting to be forwarded."""
        return JSONResponse(dict(self._counters()))

    async def search(
        self,
        *,
        agent: str | None = None,
        tool: str | None = None,
        status: str | None = None,
        denied: bool | None = None,
        errors: bool | None = None,
        since: str | None = None,
        min_duration_ms: float | None = None,
        limit: int = 50,
    ) -> list[TraceSummary]:
        """Trace summaries, latest first; raises ValueError for a bad filter.

        `status` is the root's outcome; `denied` and `errors` ask for traces with (True) or without
        (False) a denied call or a failed span beside the root. A trace whose root has not arrived
        while its latest span did moments ago is marked in progress.
        """
        if status is not None and status not in ("ok", "error"):
            raise ValueError(f"status must be ok or error, not {status!r}")
        if not 1 <= limit <= 1000:
            raise ValueError("limit must be between 1 and 1000")
        now = self._clock()
        start = parse_since(since, now) if since else None
        return await anyio.to_thread.run_sync(
            lambda: self.store.list_traces(
                agent,
                tool,
                status,
                start,
                min_duration_ms,
                limit,
                denied=denied,
                errors=errors,
                in_progress_after=now - IN_PROGRESS_GRACE,
            )
        )

    async def tree(self, trace_id: str) -> TraceTree | None:
        """The stitched tree of one trace, or None if no span of it is stored.

        `trace_id` may be the start of an id, as `mesh traces ls` shows it in a narrow terminal;
        raises ValueError when that start is shared by more than one stored trace.
        """
        return await anyio.to_thread.run_sync(self._tree, trace_id.lower())

    def _tree(self, trace_id: str) -> TraceTree | None:
        if len(trace_id) < _FULL_ID:
            found = self.store.trace_ids_starting(trace_id, limit=3)
            if len(found) > 1:
                shown = ", ".join(found[:2]) + (", ..." if len(found) > 2 else "")
                raise ValueError(f"trace id {trace_id} is the start of more than one trace ({shown}): give more of it")
            if not found:
                return None
            trace_id = found[0]
        spans = self.store.get_trace(trace_id)
        if not spans:
            return None
        return stitch(trace_id, spans, arrived=self.store.last_arrival(trace_id), now=self._clock())


def install_trace_api(
    server: MCPServer,
    store: TraceStore,
    counters: Callable[[], Mapping[str, int]],
    *,
    clock: Callable[[], float] = time.time,
) -> TraceQueries:
    """Add the query routes and MCP tools to `server`; `counters` gives the body of GET /api/tracer/stats.

    `clock` tells the time by which spans' arrival is judged (a trace in progress, or incomplete).
    """
    queries = TraceQueries(store, counters, clock=clock)
    server.custom_route("/api/traces", methods=["GET"])(queries.list_traces)
    server.custom_route("/api/traces/{trace_id}", methods=["GET"])(queries.show_trace)
    server.custom_route("/api/tracer/stats", methods=["GET"])(queries.show_stats)
    read_only = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)

    async def search_traces(
        agent: str | None = None,
        tool: str | None = None,
        status: Literal["ok", "error"] | None = None,
        denied: bool | None = None,
        errors: bool | None = None,
        since: str | None = None,
        limit: int = 20,
    ) -> list[TraceSummary]:
        """Find recent decision traces: by agent or tool involved, the root call's status (ok or error),
        whether a call was denied or a span failed beside it, and age (since: "10m", "2h")."""
        try:
            return await queries.search(
                agent=agent, tool=tool, status=status, denied=denied, errors=errors, since=since, limit=limit
            )
        except (ValueError, StoreUnavailable) as exc:
            raise ToolError(str(exc)) from None

    async def found_tree(trace_id: str) -> TraceTree:
        try:
            tree = await queries.tree(trace_id)
        except (ValueError, StoreUnavailable) as exc:
            raise ToolError(str(exc)) from None
        if tree is None:
            raise ToolError(f"no trace {trace_id}")
        return tree

    async def get_trace(trace_id: str) -> TraceTree:
        """The stitched decision trace: who called which tool, when, with what outcome and decisions."""
        return await found_tree(trace_id)

    async def explain_decision(trace_id: str, span_id: str | None = None) -> str:
        """Why agents did what they did in a trace: each decision, who made it, why, alternatives, confidence."""
        return explain(await found_tree(trace_id), span_id)

    for tool in (search_traces, get_trace, explain_decision):
        server.add_tool(tool, name=tool.__name__, annotations=read_only)
    return queries


def parse_since(text: str, now: float) -> float:
    """Epoch seconds from "90s", "10m", "2h", "1d", "1w", epoch seconds or an ISO 8601 time."""
    text = text.strip()
    match = _AGO.fullmatch(text)
    if match:
        return now - float(match[1]) * _UNITS[match[2]]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(f"since must look like 10m, 2h, 1d, epoch seconds or an ISO time, not {text!r}") from None


# -- private helpers ---------------------------------------------------------------------------

_FULL_ID: Final = 32  # hex digits in a trace id
_RETRY: Final = {"Retry-After": "1"}
_AGO: Final = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_FLAGS: Final = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _number(value: str | None, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a number, not {value!r}")
    return number


def _flag(value: str | None, name: str) -> bool | None:
    if value is None or value == "":
        return None
    found = _FLAGS.get(value.lower())
    if found is None:
        raise ValueError(f"{name} must be true or false, not {value!r}")
    return found


def _integer(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, not {value!r}") from None
