"""Decision traces on the library side: stitching spans into trees, rendering them, exporting spans.

`stitch` and `render` are pure; the OTLP receiver and the trace store live in `registry`.
"""
