"""The person a call chain runs for: carried hop by hop so every callee's policy can see who asked.

A person enters the mesh in a token (the CLI's, the gateway's, a script's); the first agent
serving that call keeps them in `person_var` while its tool runs, and the pool carries them
to the next hop in `_meta` under `PERSON_META_KEY`. A callee believes that `_meta` only from an
agent token (agents hold the mesh secret and could mint the person's token anyway); from any
other token the person is the one the token itself names.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from mesh.identity import Claims
from mesh.wire import PERSON_META_KEY

__all__ = ["Person", "person_of", "person_var"]


@dataclass(frozen=True, slots=True)
class Person:
    """A person by name, with the groups their token was minted with."""

    name: str
    groups: tuple[str, ...] = ()

    def meta(self) -> dict[str, Any]:
        """The `_meta` value that carries this person to the next hop."""
        return {"name": self.name, "groups": list(self.groups)}


person_var: ContextVar[Person | None] = ContextVar("mesh_person", default=None)
"""The person the request being served runs for, if any."""


def person_of(claims: Claims | None, meta: Mapping[str, Any]) -> Person | None:
    """Who a call runs for: from an agent token, what the calling agent carried; else the token's own person."""
    if claims is None:
        return None
    if claims.role != "agent":
        return Person(claims.person, claims.groups) if claims.person else None
    carried = meta.get(PERSON_META_KEY)
    if not isinstance(carried, dict):
        return None
    name, groups = carried.get("name"), carried.get("groups", [])  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    if not isinstance(name, str) or not name or not isinstance(groups, list):
        return None
    return Person(name, tuple(str(g) for g in groups if isinstance(g, str)))  # pyright: ignore[reportUnknownVariableType]
