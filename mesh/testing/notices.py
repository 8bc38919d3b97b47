"""`RecordingNotices`: a `NoticeSink` that keeps what reaches it, for tests and benchmarks.

Set it as the sink of the code under test (`sink_var.set(RecordingNotices(...))`) and every hop the
pool makes asks its callee for the notices it wants; what comes back up is kept in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, final

from mcp_types import LoggingLevel

from mesh.peers.notices import at_least

__all__ = ["RecordingNotices"]

Progress = tuple[float, float | None, str | None]
"""One progress report: progress, total, message."""
LogEntry = tuple[LoggingLevel, Any, str | None]
"""One log message: level, data, logger."""


@final
@dataclass
class RecordingNotices:
    """Wants progress and/or log messages from `log_level` up; records each that arrives."""

    progress_wanted: bool = True
    log_level: LoggingLevel | None = "debug"
    progress_seen: list[Progress] = field(default_factory=list[Progress])
    logs_seen: list[LogEntry] = field(default_factory=list[LogEntry])

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        """Keep one progress report (only if progress was wanted, as a real sink sends only then)."""
        if self.progress_wanted:
            self.progress_seen.append((progress, total, message))

    async def log(self, level: LoggingLevel, data: Any, logger: str | None) -> None:
        """Keep one log message at or above `log_level`."""
        if self.log_level is not None and at_least(level, self.log_level):
            self.logs_seen.append((level, data, logger))
