"""echo: the smallest agent. `echo(text)` returns `text`; tests and docs use it.

Run it with `mesh run echo` (or `mesh run agents/echo.py`).
"""

from mesh import Agent

agent = Agent(
    "echo",
    description="Returns what it is given",
    owner="platform-team",
    jurisdiction="eu",
    data_class="public",
)


@agent.tool(read_only=True, idempotent=True)
async def echo(text: str) -> str:
    """Return `text` unchanged."""
    return text
