"""The built-in echo agent plus a tool that switches its process's tracing: for `bench/tracing_overhead.py --switch`.

`tracing(on)` sets `MeshTracerProvider.enabled`, so the bench can turn the tracing of a whole
mesh hop (its caller and this agent) off and on between slices, in the very same processes.
"""

from opentelemetry import trace

from mesh.runtime.loader import load_agent
from mesh.tracing.spans import MeshTracerProvider

agent = load_agent("echo")


@agent.tool(idempotent=True)
async def tracing(on: bool) -> bool:
    """Switch this process's tracing on or off; False if it has none to switch (OTEL_SDK_DISABLED)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, MeshTracerProvider):
        return False
    provider.enabled = on
    return True
