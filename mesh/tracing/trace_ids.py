"""Trace and span ids as the mesh makes them: a trace id starts with the time it was made.

Ids of one moment sort together, so the trace store's index on them grows at its end instead of
touching a page per new trace (docs/performance-log.md, "Trace ids"). `MeshIdGenerator` gives the
stock OpenTelemetry SDK provider (`MESH_TRACING=sdk`) the same ids.
"""

from __future__ import annotations

import random
import time
from typing import Final, final

from opentelemetry.sdk.trace.id_generator import IdGenerator

__all__ = ["TRACE_ID_RANDOM_BITS", "MeshIdGenerator", "new_span_id", "new_trace_id", "trace_id_at"]

TRACE_ID_RANDOM_BITS: Final = 88
"""How many of a trace id's 128 bits are random; the time takes the other 40."""


def trace_id_at(time_ns: int, random_bits: int) -> int:
    """A trace id: the Unix time in 256ths of a second (5 bytes), then 88 random bits.

    The first 4 bytes are the second, as AWS X-Ray's ids carry it; W3C Trace Context asks only
    that an id's rightmost 7 bytes be random (what ratio samplers read), and these 11 are.
    """
    return (time_ns * 256 // 1_000_000_000 & 0xFFFFFFFFFF) << TRACE_ID_RANDOM_BITS | random_bits


def new_trace_id() -> int:
    """The id of a new trace, made now (`trace_id_at`)."""
    return trace_id_at(time.time_ns(), random.getrandbits(TRACE_ID_RANDOM_BITS))


def new_span_id() -> int:
    """A span id: 64 random bits, never 0 (the invalid id)."""
    return random.getrandbits(64) or 1


@final
class MeshIdGenerator(IdGenerator):
    """The mesh's ids for the SDK's `TracerProvider`; their low 56 bits are random (W3C's random flag)."""

    def generate_span_id(self) -> int:
        """A new span id."""
        return new_span_id()

    def generate_trace_id(self) -> int:
        """A new trace id, its time first."""
        return new_trace_id()

    def is_trace_id_random(self) -> bool:
        """True: the ids' rightmost 7 bytes are random, as W3C Trace Context level 2's flag says."""
        return True
