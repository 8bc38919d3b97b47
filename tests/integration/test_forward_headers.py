"""`mesh tracer --forward URL` reaches an authenticated backend: the OTEL_EXPORTER_OTLP_* headers, gzip
when asked, every span, and never a mesh token."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx2
import pytest

from mesh.identity import MeshKeys
from mesh.testing import MeshProcess, free_port
from mesh.tracing.export import SPANS_AUDIENCE
from mesh.wire import SpanRecord
from registry.otlp import PROTOBUF, encode_spans
from tests.integration.helpers import until
from tests.otlp_receiver import OtlpReceiver

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def _batches(count: int, size: int) -> list[bytes]:
    return [
        encode_spans(
            SpanRecord(
                trace_id=f"{batch + 1:032x}",
                span_id=f"{batch * size + n + 1:016x}",
                name="tools/call x",
                kind="server",
                agent="sender",
                start_ns=1_700_000_000_000_000_000 + n,
                end_ns=1_700_000_000_000_000_000 + n + 1,
            )
            for n in range(size)
        )
        for batch in range(count)
    ]


@pytest.mark.parametrize(("compression", "protocol"), [("gzip", "http/protobuf"), ("none", "http/json")])
async def test_a_backend_that_requires_a_key_gets_every_span_forwarded(
    mesh_env: dict[str, str], tmp_path: Path, compression: str, protocol: str
) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=team%2Csecret",  # percent-encoded: the key holds a comma
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": compression,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
    }
    batches = _batches(count=6, size=40)
    token = MeshKeys.load().mint("operator", SPANS_AUDIENCE, role="admin")
    with OtlpReceiver(require={"x-api-key": "team,secret"}) as backend:
        args = ["tracer", "--port", str(free_port()), "--db", str(tmp_path / "t.sqlite3"), "--no-mdns"]
        async with (
            MeshProcess([*args, "--forward", backend.url], env=env) as tracer,
            httpx2.AsyncClient(base_url=tracer.base_url, headers={"authorization": f"Bearer {token}"}) as http,
        ):
            for batch in batches:
                answer = await http.post("/v1/traces", content=batch, headers={"content-type": PROTOBUF})
                assert answer.status_code == 200, answer.text
            await until(lambda: anyio.to_thread.run_sync(backend.span_ids), lambda ids: len(ids) >= 240)
            stats = (await http.get("/api/tracer/stats")).json()
        received = backend.requests()
    assert sorted(backend.span_ids()) == sorted(bytes.fromhex(f"{n + 1:016x}") for n in range(240))
    assert (stats["forwarded"], stats["forward_failures"], backend.refused) == (240, 0, 0)
    for request in received:
        assert request.headers["x-api-key"] == "team,secret"
        assert request.headers.get("content-encoding") == ("gzip" if compression == "gzip" else None)
        assert request.headers["content-type"] == ("application/json" if protocol == "http/json" else PROTOBUF)
        assert "authorization" not in request.headers  # the backend is not of this mesh: no mesh token


async def test_a_backend_refusing_the_key_is_counted_and_ingest_goes_on(
    mesh_env: dict[str, str], tmp_path: Path
) -> None:
    token = MeshKeys.load().mint("operator", SPANS_AUDIENCE, role="admin")
    with OtlpReceiver(require={"x-api-key": "right"}) as backend:
        args = ["tracer", "--port", str(free_port()), "--db", str(tmp_path / "t.sqlite3"), "--no-mdns"]
        env = {"OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=wrong"}
        async with (
            MeshProcess([*args, "--forward", backend.url], env=env) as tracer,
            httpx2.AsyncClient(base_url=tracer.base_url, headers={"authorization": f"Bearer {token}"}) as http,
        ):
            for batch in _batches(count=2, size=5):
                answer = await http.post("/v1/traces", content=batch, headers={"content-type": PROTOBUF})
                assert answer.status_code == 200
            stats = await until(
                lambda: _stats(http), lambda found: found["forward_failures"] == 2 and found["stored"] == 10
            )
    assert stats["forwarded"] == 0
    assert backend.requests() == []
    assert backend.refused >= 2


async def _stats(http: httpx2.AsyncClient) -> dict[str, int]:
    return (await http.get("/api/tracer/stats")).json()
