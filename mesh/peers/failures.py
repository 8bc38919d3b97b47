"""Where transport failures become mesh errors: the one translation table (STYLE habit 8).

httpx2, anyio and SDK exceptions raised inside `translate(...)` leave it as `PeerError`
subclasses with one-line messages; nothing else in the mesh catches transport errors.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from contextlib import contextmanager, suppress
from typing import Any

import anyio
import httpx2
from mcp import MCPError

from mesh.errors import DeadlineExceeded, PeerError, PeerRejected, PeerUnavailable

__all__ = ["NotSent", "first_leaf", "translate"]


class NotSent(PeerUnavailable):
    """The request never reached the peer (connect refused or timed out): always safe to retry."""


@contextmanager
def translate(where: str, tool: str, agent: str | None) -> Generator[None]:
    """Re-raise transport failures inside the block as PeerError subclasses."""
    try:
        yield
    except PeerError:
        raise
    except MCPError as exc:
        raise _from_mcp(exc, where, tool, agent) from None
    except httpx2.HTTPStatusError as exc:
        raise _from_status(exc.response.status_code, exc.response.text, where, tool, agent) from None
    except (httpx2.ConnectError, httpx2.ConnectTimeout, ConnectionRefusedError) as exc:
        raise NotSent(f"cannot reach {where}: {_reason(exc)}", agent=agent, tool=tool) from None
    except (httpx2.TimeoutException, TimeoutError) as exc:
        raise DeadlineExceeded(
            f"{where} did not answer in time ({type(exc).__name__})", agent=agent, tool=tool
        ) from None
    except (httpx2.HTTPError, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
        raise PeerUnavailable(f"lost {where} mid-call: {_reason(exc)}", agent=agent, tool=tool) from None
    except ValueError as exc:  # a body that is not JSON
        raise PeerRejected(f"{where} sent a malformed answer: {_reason(exc)}", agent=agent, tool=tool) from None
    except ExceptionGroup as group:
        with translate(where, tool, agent):
            raise first_leaf(group) from None


def _from_mcp(exc: MCPError, where: str, tool: str, agent: str | None) -> PeerError:
    message = exc.error.message
    lowered = message.lower()
    if "401" in message or "unauthorized" in lowered:
        return PeerRejected(f"{where} refused the call: {message}", agent=agent, tool=tool)
    if "closed" in lowered or "connect" in lowered:
        return PeerUnavailable(f"lost {where}: {message}", agent=agent, tool=tool)
    if "timed out" in lowered or "timeout" in lowered:
        return DeadlineExceeded(f"{where} did not answer in time: {message}", agent=agent, tool=tool)
    return PeerRejected(f"{where} rejected {tool!r}: {message}", agent=agent, tool=tool)


def _from_status(status: int, body: str, where: str, tool: str, agent: str | None) -> PeerError:
    detail = body.strip().splitlines()[0][:200] if body.strip() else ""
    with suppress(ValueError, KeyError, TypeError):
        detail = json.loads(body)["error"]["message"]
    if status in (502, 503, 504):
        return PeerUnavailable(f"{where} is unavailable (HTTP {status})", agent=agent, tool=tool)
    return PeerRejected(f"{where} answered HTTP {status}: {detail}", agent=agent, tool=tool)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def first_leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first non-group exception inside a (nested) exception group."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]  # pyright: ignore[reportUnknownMemberType]
    return exc
