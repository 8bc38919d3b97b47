"""`mesh call` to an agent that is not there says so in one line, with the names close to it."""

from __future__ import annotations

from mesh.cli.call import unknown_agent


def test_a_typo_suggests_the_close_names() -> None:
    assert unknown_agent("trage", "support-desk", {"triage", "crm", "kb"}) == (
        "no agent named 'trage' in mesh 'support-desk'; did you mean triage?"
    )


def test_several_close_names_are_all_offered() -> None:
    message = unknown_agent("kb", "m", {"kb1", "kb2", "crm"})

    assert message.endswith("did you mean kb1 or kb2?")


def test_nothing_close_lists_the_agents_there_are() -> None:
    assert unknown_agent("zzz", "m", {"echo", "crm"}) == "no agent named 'zzz' in mesh 'm' (its agents: crm, echo)"


def test_a_long_list_is_cut_and_counted() -> None:
    message = unknown_agent("zzz", "m", {f"agent-{i:02}" for i in range(20)})

    assert message.endswith("agent-11, ... (20 in all))")


def test_an_empty_mesh_says_nothing_runs_in_it() -> None:
    message = unknown_agent("echo", "m", set())

    assert message == "no agent named 'echo' in mesh 'm': no agent is running in it (see `mesh ls`)"
