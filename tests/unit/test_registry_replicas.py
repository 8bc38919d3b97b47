"""Several registry replicas: the list an agent takes, and staying with the one in use while it answers."""

from __future__ import annotations

import pytest

from mesh.runtime.node import MeshNode, registry_urls


def test_a_comma_list_names_each_replica_once_in_order() -> None:
    assert registry_urls(" http://a:1/, http://b:2 ,,http://a:1") == ["http://a:1", "http://b:2"]
    assert registry_urls("") == []


@pytest.mark.usefixtures("mesh_env")
def test_the_replica_in_use_is_tried_first_and_the_others_follow_in_order() -> None:
    node = MeshNode("probe", registry="http://a:1,http://b:2,http://c:3", mdns=False)
    assert node._registry_candidates() == ["http://a:1", "http://b:2", "http://c:3"]  # pyright: ignore[reportPrivateUsage]
    node._services.registry = "http://b:2"  # pyright: ignore[reportPrivateUsage]
    assert node._registry_candidates() == ["http://b:2", "http://a:1", "http://c:3"]  # pyright: ignore[reportPrivateUsage]


@pytest.mark.usefixtures("mesh_env")
def test_replicas_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_REGISTRY", "http://a:1,http://b:2")
    assert MeshNode("probe", mdns=False).explicit_registries == ["http://a:1", "http://b:2"]
