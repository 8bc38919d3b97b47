"""What a hop asks its callee for, and how what comes back reaches the caller's caller."""

from __future__ import annotations

from typing import Any

import pytest
from mcp_types import LOG_LEVEL_META_KEY

from mesh.peers.notices import ask_for_notices, at_least
from mesh.testing.notices import RecordingNotices

pytestmark = pytest.mark.anyio


def test_a_sink_that_wants_nothing_leaves_the_hop_lean() -> None:
    meta: dict[str, Any] = {}
    assert ask_for_notices(meta, None) is None
    assert ask_for_notices(meta, RecordingNotices(progress_wanted=False, log_level=None)) is None
    assert meta == {}


def test_a_hop_asks_for_progress_under_a_fresh_token_and_for_the_callers_level() -> None:
    first: dict[str, Any] = {}
    second: dict[str, Any] = {}
    assert ask_for_notices(first, RecordingNotices(log_level="warning")) is not None
    ask_for_notices(second, RecordingNotices(log_level=None))
    assert first[LOG_LEVEL_META_KEY] == "warning"
    assert LOG_LEVEL_META_KEY not in second
    assert first["progressToken"] != second["progressToken"]


async def test_progress_and_messages_from_the_callee_reach_the_sink_and_junk_does_not() -> None:
    sink = RecordingNotices(log_level="info")
    relay = ask_for_notices({}, sink)
    assert relay is not None
    await relay("notifications/progress", {"progressToken": "t", "progress": 2, "total": 4, "message": "half"})
    await relay("notifications/progress", {"progress": True})
    await relay("notifications/progress", {"progress": "lots"})
    await relay("notifications/message", {"level": "info", "data": {"k": 1}, "logger": "worker"})
    await relay("notifications/message", {"level": "loud", "data": "?"})
    await relay("notifications/resources/updated", {"uri": "kb://1"})
    assert sink.progress_seen == [(2.0, 4.0, "half")]
    assert sink.logs_seen == [("info", {"k": 1}, "worker")]


def test_levels_order_as_rfc_5424() -> None:
    assert at_least("error", "warning")
    assert at_least("info", "info")
    assert not at_least("debug", "info")
    assert at_least("emergency", "debug")
