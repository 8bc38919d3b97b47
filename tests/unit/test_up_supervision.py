"""What `mesh up` decides without processes: the restart key of a mesh file, the tally of its footer,
and the launcher's control messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh.errors import ConfigError
from mesh.runtime.launcher import MAX_MESSAGE, Exited, ForkSpec, Spawn, decode, encode
from mesh.runtime.meshfile import load_plan
from mesh.runtime.supervised import ChildState, ChildStatus, summary


def test_agents_restart_on_failure_unless_their_entry_says_no(tmp_path: Path) -> None:
    (tmp_path / "mesh.toml").write_text(
        '[[agents]]\ntarget = "echo"\n[[agents]]\ntarget = "echo"\nname = "once"\nrestart = "no"\n'
    )
    plan = load_plan(tmp_path)

    assert [(a.label, a.restart) for a in plan.agents] == [("echo", "on-failure"), ("once", "no")]


def test_an_unknown_restart_policy_is_one_line_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "mesh.toml").write_text('[[agents]]\ntarget = "echo"\nrestart = "always"\n')
    with pytest.raises(ConfigError) as caught:
        load_plan(tmp_path)

    assert "agents[0].restart:" in str(caught.value)
    assert "\n" not in str(caught.value)


def agent(label: str, state: ChildState, *, code: int | None = None, restarts: int = 0) -> ChildStatus:
    return ChildStatus(label=label, kind="agent", state=state, exit_code=code, restarts=restarts)


def test_the_tally_counts_what_is_ready_starting_restarting_crashed_and_exited() -> None:
    statuses = [
        ChildStatus(label="registry", kind="registry", state="ready"),
        agent("a", "ready"),
        agent("b", "ready", restarts=2),
        agent("c", "starting"),
        agent("d", "restarting", code=-9),
        agent("e", "starting", restarts=1),
        agent("f", "exited", code=1),
        agent("g", "exited", code=0),
    ]

    assert summary(statuses) == "ready: 2 of 7 agents · 1 starting · 2 restarting · 1 crashed · 1 exited"


def test_the_tally_of_a_healthy_mesh_is_one_phrase() -> None:
    assert summary([agent("a", "ready"), agent("b", "ready")]) == "ready: 2 of 2 agents"


def test_launcher_messages_round_trip_and_refuse_garbage() -> None:
    spawn = Spawn(id=7, spec=ForkSpec(label="kb#2", target="/x/kb.py", mesh="m", meta=(("owner", "a"),)))

    assert decode(encode(spawn)) == spawn
    assert decode(encode(Exited(pid=12, code=-9))) == Exited(pid=12, code=-9)
    with pytest.raises(ValueError, match="not a launcher message"):
        decode(b'{"op": "fork-bomb"}')
    with pytest.raises(ValueError, match="over"):
        encode(Spawn(id=1, spec=ForkSpec(label="x", target="y" * MAX_MESSAGE, mesh="m")))
