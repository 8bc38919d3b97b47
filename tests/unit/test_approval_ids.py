"""`mesh approvals approve ID` takes the start of an id, as `mesh traces show` does; a miss is one line."""

from __future__ import annotations

import pytest

from mesh.cli.approvals import resolve_id
from mesh.errors import RegistryError
from mesh.wire import Approval


def approval(approval_id: str, status: str = "pending") -> Approval:
    return Approval.model_validate(
        {
            "id": approval_id,
            "agent": "vault",
            "tool": "withdraw",
            "caller": "teller",
            "arguments_digest": "0" * 64,
            "requested_at": 0.0,
            "expires_at": 300.0,
            "status": status,
        }
    )


QUEUE = [approval("66b9b9163e98"), approval("66a0c1d2e3f4", "approved"), approval("1f2e3d4c5b6a")]


def test_a_unique_prefix_names_its_approval() -> None:
    assert resolve_id("1f2", QUEUE) == "1f2e3d4c5b6a"
    assert resolve_id("66B9", QUEUE) == "66b9b9163e98"


def test_a_whole_id_is_taken_as_it_is() -> None:
    assert resolve_id("66a0c1d2e3f4", QUEUE) == "66a0c1d2e3f4"


def test_a_prefix_shared_with_decided_approvals_names_the_one_pending() -> None:
    assert resolve_id("66", QUEUE) == "66b9b9163e98"


def test_an_ambiguous_prefix_names_the_candidates() -> None:
    queue = [*QUEUE, approval("66ffffffffff")]

    with pytest.raises(RegistryError, match=r"^'66' starts 3 approval ids \(66b9b9163e98, 66a0c1d2e3f4, 66ff"):
        resolve_id("66", queue)


def test_no_match_is_one_line() -> None:
    with pytest.raises(RegistryError, match=r"^no approval has an id starting with 'zz' \(see `mesh approvals ls`\)$"):
        resolve_id("zz", QUEUE)
