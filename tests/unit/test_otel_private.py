"""The OpenTelemetry internals the mesh reads are found on the pinned versions, and without them the
tracing suite passes on the public API alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from opentelemetry import baggage, context, trace

from mesh.tracing import otel_private

ROOT = Path(__file__).resolve().parents[2]


def test_on_the_pinned_versions_every_internal_is_found_and_is_what_the_public_api_uses() -> None:
    assert otel_private.CONTEXT_VAR is not None
    assert otel_private.SPAN_KEY is not None
    assert otel_private.BAGGAGE_KEY is not None
    assert otel_private.SPAN_CONTEXT_IS_TUPLE
    assert otel_private.SPAN_KIND_SUNDER_VALUE
    span = trace.NonRecordingSpan(trace.SpanContext(1, 2, False))
    token = context.attach(baggage.set_baggage("k", "v", trace.set_span_in_context(span)))
    try:
        current = otel_private.CONTEXT_VAR.get()
        assert current is context.get_current()
        assert current[otel_private.SPAN_KEY] is span
        assert current[otel_private.BAGGAGE_KEY] == {"k": "v"}
    finally:
        context.detach(token)


def test_public_api_only_turns_every_fast_path_off() -> None:
    script = (
        "from mesh.tracing import otel_private as p\n"
        "from mesh.tracing import current\n"
        "assert p.PUBLIC_ONLY\n"
        "assert (p.CONTEXT_VAR, p.SPAN_KEY, p.BAGGAGE_KEY) == (None, None, None)\n"
        "assert not p.SPAN_CONTEXT_IS_TUPLE and not p.SPAN_KIND_SUNDER_VALUE\n"
        "assert current._CONTEXT_VAR is None\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "MESH_TRACING_PUBLIC_API": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_tracing_suite_passes_on_the_public_api_alone() -> None:
    suite = [
        "tests/unit/test_spans.py",
        "tests/unit/test_propagation.py",
        "tests/unit/test_server_spans.py",
        "tests/unit/test_otlp_wire.py",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", *suite],
        cwd=ROOT,
        env={**os.environ, "MESH_TRACING_PUBLIC_API": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
