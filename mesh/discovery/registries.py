"""Where a process looks for its mesh's registry before mDNS says: the URLs it is given, else this host's default port.

Pure naming, no I/O: proving a candidate is `proof`'s, choosing among the proven the node's.
"""

from __future__ import annotations

from typing import Final

from mesh.config import DEFAULT_REGISTRY_PORT

__all__ = ["DEFAULT_REGISTRY", "registry_urls"]

DEFAULT_REGISTRY: Final = f"http://127.0.0.1:{DEFAULT_REGISTRY_PORT}"
"""The registry `mesh registry` (and `mesh up`) serves unless told another port."""


def registry_urls(given: str) -> list[str]:
    """`--registry URL1,URL2` / `MESH_REGISTRY`: the replicas named, in order, without blanks or repeats."""
    return list(dict.fromkeys(u.strip().rstrip("/") for u in given.split(",") if u.strip()))
