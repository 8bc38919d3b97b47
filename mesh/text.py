"""Text helpers every layer shares: an error or a message made fit for one line of output.

A leaf like `mesh.errors`: it imports nothing from mesh, so any module may use it.
"""

from __future__ import annotations

__all__ = ["ONE_LINE_LIMIT", "one_line"]

ONE_LINE_LIMIT = 200
"""How many characters `one_line` keeps by default: enough for a reason, short enough for a log line."""


def one_line(value: BaseException | str, limit: int | None = ONE_LINE_LIMIT) -> str:
    """`value` on one line: runs of whitespace (newlines too) become one space, cut to `limit` with "...".

    An exception with no message reads as its type's name. Whitespace is folded rather than the first
    line kept because many messages (pydantic's, libpq's) put the useful part on their later lines.
    """
    text = " ".join(str(value).split())
    if not text and isinstance(value, BaseException):
        text = type(value).__name__
    if limit is not None and len(text) > limit:
        return text[: max(limit - 3, 0)] + "..."
    return text
