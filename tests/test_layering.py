"""Imports point one way (DESIGN §1, STYLE habit 1): a walk over the AST of every module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Inside mesh, a module may import only from its own layer or below.
LAYERS: list[tuple[str, ...]] = [
    ("mesh.errors", "mesh.text", "mesh.hosts", "mesh.naming", "mesh.wire", "mesh.protocols", "mesh.config", "mesh.tls"),
    (
        "mesh.identity",
        "mesh.credentials",
        "mesh.audit",
        "mesh.policy",
        "mesh.decisions",
        "mesh.approvals",
        "mesh.masking",
        "mesh.discovery.txt",
        "mesh.tracing",
    ),
    (
        "mesh.discovery",
        "mesh.peers",
        "mesh.registry_client",
        "mesh.agent",
        "mesh.context",
        "mesh.tracing.batch",
        "mesh.tracing.export",
        "mesh.tracing.otlp_wire",
        "mesh.tracing.telemetry",
        "mesh.tracing.spool",
    ),
    ("mesh.runtime", "mesh.caller", "mesh.gateway"),
    ("mesh.testing", "mesh.cli", "mesh.__main__", "mesh"),
]


def _layer_of(module: str) -> int:
    best = (-1, -1)  # (prefix length, layer)
    for index, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best[0]:
                best = (len(prefix), index)
    return best[1]


def _modules(package: str) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found.append((".".join(parts), path))
    return found


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize(("module", "path"), _modules("mesh"), ids=lambda v: str(v))
def test_mesh_imports_only_downward_and_never_registry_or_agents(module: str, path: Path) -> None:
    own = _layer_of(module)
    assert own >= 0, f"{module} is in no layer: add it to LAYERS"
    for name in _imports(path):
        root = name.split(".")[0]
        assert root not in ("registry", "agents", "examples"), f"{module} imports {name}"
        if root == "mesh":
            assert _layer_of(name) <= own, f"{module} (layer {own}) imports {name} (layer {_layer_of(name)})"


@pytest.mark.parametrize(("module", "path"), _modules("registry"), ids=lambda v: str(v))
def test_registry_never_imports_agents_or_examples(module: str, path: Path) -> None:
    for name in _imports(path):
        assert name.split(".")[0] not in ("agents", "examples"), f"{module} imports {name}"


def test_only_the_mdns_adapter_imports_asyncio() -> None:
    offenders = [
        module
        for package in ("mesh", "registry")
        for module, path in _modules(package)
        if "asyncio" in {n.split(".")[0] for n in _imports(path)} and module != "mesh.discovery.mdns"
    ]
    assert offenders == []


# The OpenTelemetry SDK stays behind the exporter side of mesh.tracing: everything else speaks the
# API only (`opentelemetry.trace`, `.context`, `.propagate`), so it works under any provider.
SDK_IMPORTERS: dict[str, str] = {
    "mesh.tracing.telemetry": "installs the process's TracerProvider, resource and span processors",
    "mesh.tracing.lean_provider": "the mesh's own provider, built on the SDK's sampler and limits types",
    "mesh.tracing.span_data": "its spans carry the SDK's Resource and obey its SpanLimits",
    "mesh.tracing.processors": "span processors plug into the SDK's SpanProcessor seam",
    "mesh.tracing.sampling": "the mesh's samplers implement the SDK's Sampler seam",
    "mesh.tracing.trace_ids": "the id generator implements the SDK's IdGenerator seam",
    "mesh.tracing.export": "the exporter implements the SDK's SpanExporter seam",
    "mesh.tracing.otlp_wire": "encodes the SDK's Resource and InstrumentationScope as OTLP",
}


def test_only_the_exporter_side_of_tracing_imports_the_opentelemetry_sdk() -> None:
    offenders = [
        f"{module} imports {name}"
        for package in ("mesh", "registry")
        for module, path in _modules(package)
        for name in _imports(path)
        if (name == "opentelemetry.sdk" or name.startswith("opentelemetry.sdk.")) and module not in SDK_IMPORTERS
    ]
    assert offenders == [], "import the OpenTelemetry API, or add the module to SDK_IMPORTERS with why"


def test_every_listed_sdk_importer_still_exists() -> None:
    modules = {module for module, _ in _modules("mesh")}
    assert set(SDK_IMPORTERS) <= modules
