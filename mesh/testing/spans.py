"""An in-memory span sink: install the mesh's provider with it and assert on what was recorded."""

from __future__ import annotations

from typing import final

from mesh.tracing.spans import MeshSpan

__all__ = ["RecordingSink"]


@final
class RecordingSink:
    """Keeps every finished span, in the order they ended.

    ```python
    sink = RecordingSink()
    tracer = MeshTracerProvider(Resource.create({"service.name": "t"}), sink).get_tracer("t")
    with tracer.start_as_current_span("work"):
        record_decision("route", choice="b")
    assert sink.decisions() == [("work", "route", "b")]
    ```
    """

    def __init__(self) -> None:
        self.spans: list[MeshSpan] = []

    def on_end(self, span: MeshSpan) -> None:
        """Record a finished span."""
        self.spans.append(span)

    def decisions(self) -> list[tuple[str, object, object]]:
        """(span name, decision kind, choice) for every `mesh.decision` event, in order."""
        return [
            (span.name, event.attributes.get("mesh.decision.kind"), event.attributes.get("mesh.decision.choice"))
            for span in self.spans
            for event in span.events
            if event.name == "mesh.decision"
        ]
