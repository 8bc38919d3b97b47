"""progress-echo: the echo tool of bench/hop.py, plus one that reports progress and logs while it runs.

`echo(text)` answers at once; `echo_progress(text)` first sends one progress report and one info
log message, so a caller that asked for them gets an event stream.
"""

from mesh import Agent, Context

agent = Agent("progress-echo", description="Echo, with progress", owner="platform-team", jurisdiction="eu")


@agent.tool(read_only=True, idempotent=True)
async def echo(text: str) -> str:
    """Return `text` unchanged."""
    return text


@agent.tool(read_only=True, idempotent=True)
async def echo_progress(text: str, ctx: Context) -> str:
    """Report progress and log once, then return `text` unchanged."""
    await ctx.report_progress(1, 1, "echoed")
    await ctx.info("echoed")
    return text
