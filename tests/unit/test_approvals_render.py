"""`mesh approvals ls` in a terminal: whole ids at 80 columns, and the call's arguments under each request."""

from __future__ import annotations

from typing import Any

from mesh.cli.approvals import arguments_line, render_approvals
from mesh.wire import Approval, Decider

NOW = 1_700_000_000.0


def approval(approval_id: str, status: str = "pending", **fields: Any) -> Approval:
    return Approval.model_validate(
        {
            "id": approval_id,
            "agent": "keyring",
            "tool": "rotate",
            "caller": "rotation-bot",
            "arguments_digest": "0" * 64,
            "requested_at": NOW,
            "expires_at": NOW + 300,
            "status": status,
            **fields,
        }
    )


PENDING = approval(
    "66b9b9163e98",
    requested_by="bob",
    arguments={"service": "billing db", "password": "***", "card": {"holder": "Ann", "pin": "***"}, "n": 3},
)
DECIDED = approval("1f2e3d4c5b6a", "approved", decided_by=Decider(person="alice", groups=["finance"]))


def lines(rows: list[Approval], width: int) -> list[str]:
    return render_approvals(rows, width=width).plain.splitlines()


def test_at_80_columns_every_id_is_whole_and_no_line_is_longer() -> None:
    shown = lines([PENDING, DECIDED], 80)

    assert shown[0].split()[:3] == ["id", "call", "caller"]
    assert shown[1].startswith("66b9b9163e98  keyring.rotate  rotation-bot")
    assert shown[3].startswith("1f2e3d4c5b6a  keyring.rotate")
    assert "approved" in shown[3]
    assert all(len(line) <= 80 for line in shown)


def test_the_arguments_are_on_the_line_under_their_request_with_secrets_as_masked() -> None:
    shown = lines([PENDING, DECIDED], 120)

    assert shown[2] == '  service="billing db" password=*** card={"holder":"Ann","pin":"***"} n=3'
    assert shown[3].startswith("1f2e3d4c5b6a")  # no arguments shown to us: no line


def test_a_narrow_terminal_drops_columns_before_it_cuts_an_id() -> None:
    shown = lines([PENDING, DECIDED], 50)

    assert shown[0].split() == ["id", "call", "expires", "status"]  # the caller's name is too long to join
    assert shown[1].split()[0] == "66b9b9163e98"
    assert shown[1].split()[-1] == "pending"
    assert shown[2].endswith("…")
    assert len(shown[2]) == 50


def test_a_wide_terminal_shows_who_decided_and_for_whom() -> None:
    shown = lines([PENDING, DECIDED], 200)

    assert shown[0].split() == ["id", "call", "caller", "for", "requested", "expires", "status", "decided", "by"]
    assert shown[1].split()[3] == "bob"
    assert shown[3].endswith("alice (finance)")


def test_an_argument_cannot_steer_the_terminal() -> None:
    line = arguments_line({"note": "a\x1b[2Jb\u202e"}, 200)

    assert line == 'note="a\\u001b[2Jb\\u202e"'


def test_a_call_with_no_arguments_says_so() -> None:
    assert arguments_line({}, 80) == "(no arguments)"
