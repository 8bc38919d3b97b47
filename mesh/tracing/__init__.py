"""Decision traces on the library side: recording spans, exporting them, stitching and rendering them.

Recording: `telemetry` (`ProcessTelemetry`, the process's wiring), `lean_provider` (the tracer and provider),
`span_data`, `activation`, `current`, `trace_ids`, `sampling`, `processors` (SDK span processors)
and `otel_private` (what is read of OpenTelemetry's internals). Export: `batch`, `otlp_wire`,
`export`, `spool`, `otlp_options`, `otlp_json`. Calls: `propagation`, `server_spans`. `stitch`,
`outcome` and `render` are pure; the OTLP receiver and the trace store live in `registry`.
"""
