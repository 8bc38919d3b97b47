"""A second terminal finds the mesh running on this host: the markers, and when the CLI picks one."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mesh.cli.options import found_mesh
from mesh.config import mesh_paths
from mesh.runtime.running import marked_running, running_meshes


@pytest.fixture
def no_mesh_name(mesh_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A private MESH_HOME, and no MESH_NAME: as in a fresh terminal."""
    del mesh_env
    monkeypatch.delenv("MESH_NAME")


@pytest.mark.usefixtures("no_mesh_name")
def test_a_mesh_counts_as_running_only_while_its_marker_is_held() -> None:
    assert running_meshes() == []
    with marked_running(mesh_paths("support-desk")) as marker:
        assert running_meshes() == ["support-desk"]
    assert running_meshes() == []
    assert not marker.exists()


@pytest.mark.usefixtures("no_mesh_name")
def test_a_marker_left_by_a_dead_process_is_ignored_and_swept() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = mesh_paths("crashed").ensure().data_dir / "running"
    folder.mkdir()
    (folder / str(dead.pid)).write_text("1")

    assert running_meshes() == []
    assert list(folder.iterdir()) == []


@pytest.mark.usefixtures("no_mesh_name")
def test_a_marker_whose_pid_was_recycled_by_another_process_does_not_count() -> None:
    folder = mesh_paths("recycled").ensure().data_dir / "running"
    folder.mkdir()
    (folder / str(1)).write_text("not-the-start-time-of-pid-1")

    assert running_meshes() == []


@pytest.mark.usefixtures("no_mesh_name")
def test_with_no_name_given_the_one_mesh_running_here_is_used_and_said(capsys: pytest.CaptureFixture[str]) -> None:
    with marked_running(mesh_paths("support-desk")):
        chosen = found_mesh(None)

    assert chosen == "support-desk"
    assert capsys.readouterr().err == "mesh: using mesh 'support-desk' (the one running here; --mesh to choose)\n"


@pytest.mark.usefixtures("no_mesh_name")
def test_a_name_given_wins_over_the_mesh_running_here(capsys: pytest.CaptureFixture[str]) -> None:
    with marked_running(mesh_paths("support-desk")):
        chosen = found_mesh("other")

    assert chosen == "other"
    assert capsys.readouterr().err == ""


@pytest.mark.usefixtures("no_mesh_name")
def test_with_two_meshes_running_none_is_guessed_and_both_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    with marked_running(mesh_paths("desk-a")), marked_running(mesh_paths("desk-b")):
        chosen = found_mesh(None)

    assert chosen is None
    assert capsys.readouterr().err == "mesh: using mesh 'default'; running here: desk-a, desk-b (--mesh to choose)\n"


@pytest.mark.usefixtures("no_mesh_name")
def test_a_running_default_mesh_is_used_as_before(capsys: pytest.CaptureFixture[str]) -> None:
    with marked_running(mesh_paths("default")), marked_running(mesh_paths("support-desk")):
        chosen = found_mesh(None)

    assert chosen is None
    assert capsys.readouterr().err == ""
