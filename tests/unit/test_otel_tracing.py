"""An agent's tracing as the environment sets it up: OTEL_TRACES_EXPORTER, MESH_TRACING, span processors.

Each case runs `ProcessTelemetry` in a fresh interpreter, as an agent process does (the global tracer
provider is set once per process), against a real OTLP receiver standing in for the user's backend.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mesh.tracing.telemetry import traces_exporters, tracing_mode
from tests.otlp_receiver import OtlpReceiver

ROOT = Path(__file__).resolve().parents[2]

AGENT = """
import json, os, sys
from pathlib import Path
from opentelemetry import trace
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import mesh
from mesh.identity import MeshKeys
from mesh.tracing.telemetry import ProcessTelemetry

before, after = InMemorySpanExporter(), InMemorySpanExporter()
mesh.add_span_processor(BatchSpanProcessor(before))  # before the agent's tracing starts
tracing = ProcessTelemetry(service="agent", instance="i1", mesh=os.environ["MESH_NAME"], spool_dir=Path(sys.argv[1]),
                           tracer_base=lambda: None, credentials=MeshKeys.load())
mesh.add_span_processor(BatchSpanProcessor(after))  # and after
provider = type(trace.get_tracer_provider()).__name__
tracer = trace.get_tracer("script")
for n in range(20):
    with tracer.start_as_current_span(f"work {n}"):
        with tracer.start_as_current_span("inner"):
            pass
stats = tracing.stats()
tracing.shutdown()
print(json.dumps({"provider": provider, "before": len(before.get_finished_spans()),
                  "after": len(after.get_finished_spans()), "stats": stats}))
"""


def _agent(tmp_path: Path, env: dict[str, str]) -> tuple[dict[str, Any], str]:
    """Run the agent script with `env` added; its report and its stderr."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MESH_TRACING"))}
    result = subprocess.run(
        [sys.executable, "-c", AGENT, str(tmp_path / "spool")],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def _console_spans(stderr: str) -> list[dict[str, Any]]:
    """The JSON objects the SDK's console exporter printed (each span's `to_json()`)."""
    decoder, found, at = json.JSONDecoder(), [], stderr.find("{")
    while at >= 0:
        value, end = decoder.raw_decode(stderr, at)
        found.append(value)
        at = stderr.find("{", end)
    return found


@pytest.mark.usefixtures("mesh_env")
@pytest.mark.parametrize("mode", ["mesh", "sdk"])
def test_otlp_and_console_send_every_span_to_the_backend_and_print_it(tmp_path: Path, mode: str) -> None:
    with OtlpReceiver(require={"x-api-key": "k=1"}) as backend:
        report, stderr = _agent(
            tmp_path,
            {
                "MESH_TRACING": mode,
                "OTEL_TRACES_EXPORTER": "otlp,console",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": backend.url,
                "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=k%3D1",
                "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
            },
        )
        received = backend.requests()
    assert report["provider"] == ("TracerProvider" if mode == "sdk" else "MeshTracerProvider")
    assert sum(len(r.span_ids) for r in received) == 40
    assert all(r.headers["x-api-key"] == "k=1" and r.headers["content-encoding"] == "gzip" for r in received)
    assert not any("authorization" in r.headers for r in received)  # no mesh token to the user's backend
    printed = _console_spans(stderr)
    assert sorted(span["name"] for span in printed) == sorted([f"work {n}" for n in range(20)] + ["inner"] * 20)
    assert all(
        span["kind"] == "SpanKind.INTERNAL" and span["resource"]["attributes"]["service.name"] == "agent"
        for span in printed
    )
    assert report["before"] == report["after"] == 40  # span processors added through the public API


@pytest.mark.usefixtures("mesh_env")
@pytest.mark.parametrize("mode", ["mesh", "sdk"])
def test_none_exports_nothing_but_added_processors_still_get_every_span(tmp_path: Path, mode: str) -> None:
    with OtlpReceiver() as backend:
        report, stderr = _agent(
            tmp_path,
            {"MESH_TRACING": mode, "OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": backend.url},
        )
        assert backend.requests() == []
    assert report == {"provider": report["provider"], "before": 40, "after": 40, "stats": {}}
    assert _console_spans(stderr) == []


def test_the_exporter_list_is_read_as_opentelemetry_names_it(caplog: pytest.LogCaptureFixture) -> None:
    assert traces_exporters({}) == {"otlp"}
    assert traces_exporters({"OTEL_TRACES_EXPORTER": "none"}) == set()
    assert traces_exporters({"OTEL_TRACES_EXPORTER": " OTLP , console "}) == {"otlp", "console"}
    assert traces_exporters({"OTEL_TRACES_EXPORTER": "console,zipkin"}) == {"console"}
    assert "zipkin" in caplog.text


def test_mesh_tracing_names_the_provider(caplog: pytest.LogCaptureFixture) -> None:
    assert tracing_mode({}) == "mesh"
    assert tracing_mode({"MESH_TRACING": "SDK"}) == "sdk"
    assert tracing_mode({"MESH_TRACING": "stock"}) == "mesh"
    assert "MESH_TRACING='stock'" in caplog.text
