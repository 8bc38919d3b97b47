"""The helpers every layer shares: `one_line` (mesh.text), `is_loopback` (mesh.hosts), `bearer_token`."""

from __future__ import annotations

import pytest
from starlette.types import Scope

from mesh.errors import ConfigError, IdentityError
from mesh.hosts import is_loopback
from mesh.runtime.auth import bearer_token
from mesh.runtime.process import RunOptions
from mesh.text import ONE_LINE_LIMIT, one_line

# -- one_line --------------------------------------------------------------------------------------


def test_a_text_folds_every_run_of_whitespace_into_one_space() -> None:
    assert one_line("  policy.cedar:\n  line 3\t unexpected\r\n token  ") == "policy.cedar: line 3 unexpected token"


def test_an_exception_reads_as_its_message_with_later_lines_kept() -> None:
    error = ValueError("1 validation error for Message\njsonrpc\n  Field required")

    assert one_line(error) == "1 validation error for Message jsonrpc Field required"


def test_an_exception_without_a_message_reads_as_its_type() -> None:
    assert one_line(ConnectionResetError()) == "ConnectionResetError"


def test_an_empty_text_stays_empty() -> None:
    assert one_line(" \n ") == ""


def test_a_long_text_is_cut_at_the_limit_with_an_ellipsis() -> None:
    cut = one_line("x" * 500)

    assert len(cut) == ONE_LINE_LIMIT
    assert cut == "x" * (ONE_LINE_LIMIT - 3) + "..."
    assert one_line("abcdefghij", limit=6) == "abc..."


def test_a_text_at_the_limit_is_kept_whole() -> None:
    assert one_line("y" * ONE_LINE_LIMIT) == "y" * ONE_LINE_LIMIT
    assert one_line("abcdef", limit=6) == "abcdef"


def test_no_limit_keeps_the_whole_text() -> None:
    assert one_line("z " * 400, limit=None) == ("z " * 400).strip()


# -- is_loopback -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["localhost", "LocalHost", "127.0.0.1", "127.1.2.3", "::1", "[::1]", "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1"],
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host",
    ["127.example.com", "127.0.0.1.nip.io", "0.0.0.0", "::", "10.0.0.1", "192.168.1.5", "::ffff:10.0.0.1", "", "[::1"],
)
def test_hosts_that_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_an_agent_on_a_name_that_merely_starts_with_127_is_public_and_needs_auth() -> None:
    assert RunOptions(mesh="t", host="127.example.com").public
    assert not RunOptions(mesh="t", host="[::1]").public
    with pytest.raises(ConfigError, match="--no-auth"):
        RunOptions(mesh="t", host="127.example.com", auth=False)


# -- bearer_token ----------------------------------------------------------------------------------


def _scope(*headers: tuple[bytes, bytes]) -> Scope:
    return {"type": "http", "path": "/mcp", "headers": list(headers)}


def test_the_token_of_a_bearer_header_is_read_whatever_the_schemes_case() -> None:
    assert bearer_token(_scope((b"authorization", b"Bearer abc.def"))) == "abc.def"
    assert bearer_token(_scope((b"authorization", b"bearer  abc.def "))) == "abc.def"


def test_a_request_without_an_authorization_header_has_no_token() -> None:
    assert bearer_token(_scope((b"cookie", b"session=x"))) is None


@pytest.mark.parametrize("value", [b"Basic Y3JtOg==", b"Bearer", b"Bearer   ", b"abc.def"])
def test_another_scheme_or_an_empty_token_is_an_identity_error(value: bytes) -> None:
    with pytest.raises(IdentityError, match="not a Bearer token"):
        bearer_token(_scope((b"authorization", value)))
