"""Session fixtures: the third-party programs, installed once from npm and PyPI (see `installs`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.thirdparty.installs import NodeTools, install_node_tools, install_time_server


@pytest.fixture(scope="session")
def node_tools() -> NodeTools:
    """Node 22, the everything server and the conformance suite, from npm."""
    return install_node_tools()


@pytest.fixture(scope="session")
def time_server() -> Path:
    """The `mcp-server-time` console script, from PyPI, in a venv of its own."""
    return install_time_server()
