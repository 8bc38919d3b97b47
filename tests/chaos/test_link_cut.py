"""A host's cable pulled under load and plugged back: calls fail typed within their deadline, then views agree.

The registry runs on host `reg`, two relays on each of hosts `a` and `b` (`tests.chaos.deployment`);
on each agent host the official SDK client calls its `front` relay, which calls the `back` relay of
the other host. Host `a`'s interface goes down under that load, stays down until the registry has
let the leases of its agents lapse, and comes back up. Then `mesh ls` on every host (the registry's
too) must show the same mesh: every agent's current instance, healthy, found by mDNS and listed by
the registry.
"""

from __future__ import annotations

import json
import time

import anyio
import pytest

from mesh.runtime.process import LEASE_SECONDS
from tests.chaos.deployment import AGENTS, REGISTRY_HOST, Deployment, deployment
from tests.chaos.load import Load, odd, summary
from tests.chaos.netns import Lan, host_mesh, lan
from tests.integration.helpers import until

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]

DEADLINE = 4.0
"""Each call's deadline (seconds), sent as the mesh's time budget."""
GRACE = 10.0
"""How long past its deadline a call may take to end before it counts as a hang (a generous bound)."""
AGREE_WITHIN = 2 * LEASE_SECONDS
"""The bound on the start of the first round of `mesh ls` (on every host at once) that finds the hosts
agreeing once the cable is back: a lease, and as much again for a busy machine."""

MDNS_WAIT = "3"
"""Seconds each `mesh ls` listens on mDNS (asked for: with a registry it would not listen at all)."""

View = tuple[str, str, str, bool, tuple[str, ...]]
"""One line of a host's `mesh ls`: name, instance, url, healthy, sources."""


async def test_calls_across_a_pulled_cable_fail_typed_in_time_and_every_host_agrees_once_it_is_back(
    mesh_env: dict[str, str],
) -> None:
    agreement: list[tuple[dict[str, set[View]], float | None]] = []
    with lan(REGISTRY_HOST, "a", "b") as net:
        async with deployment(net) as mesh:
            loads = [_load(net, mesh, host) for host in ("a", "b")]
            async with loads[0], loads[1]:
                for load in loads:
                    await load.wait_for(lambda it: it.count("ok") >= 5)
                before = [len(load.outcomes) for load in loads]
                net.cut("a")
                for load, mark in zip(loads, before, strict=True):
                    await load.wait_for(lambda it, mark=mark: it.failures(since=mark) >= 3)
                lapsed = await _lapsed(mesh, {"front-a", "back-a"})
                net.restore("a")
                restored = time.monotonic()
                after = [len(load.outcomes) for load in loads]
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_agreement, net, mesh, restored, agreement)
                    for load, mark in zip(loads, after, strict=True):
                        await load.wait_for(lambda it, mark=mark: it.count("ok", since=mark) >= 5)
                outcomes = {load.host: await load.finish() for load in loads}
            expected = _expected(mesh)
    [(views, agreed_after)] = agreement

    print(f"\nhosts agreed in a round begun {agreed_after} s after the cable came back; ", end="")
    print("; ".join(summary(load.host, outcomes[load.host]) for load in loads))
    assert lapsed, "the registry still listed host a's agents a lease after their cable was pulled"
    for load in loads:
        seen = outcomes[load.host]
        assert load.issued == len(seen), f"calls from {load.host} never ended: {load.issued} made, {len(seen)} ended"
        assert not odd(seen), summary(load.host, seen)
        assert [o for o in seen if o.kind == "typed"], (
            f"no call failed while the cable was out: {summary(load.host, seen)}"
        )
    assert agreed_after is not None, f"no round begun within {AGREE_WITHIN:g} s found the hosts agreeing: {views}"
    for host, view in views.items():
        assert view == expected, (host, view)


def _load(net: Lan, mesh: Deployment, host: str) -> Load:
    front = mesh.agents[f"front-{host}"]
    args = ["--url", front.local_url, "--deadline", str(DEADLINE), "--grace", str(GRACE)]
    return Load(net, host, [*args, "--concurrency", "2", "--max-seconds", "150"])


async def _lapsed(mesh: Deployment, names: set[str]) -> bool:
    """Wait (bounded) until the registry lists none of `names`: their leases lapsed while they could not renew."""

    def gone(records: list[dict[str, object]]) -> bool:
        return not names & {str(record["name"]) for record in records}

    try:
        await until(mesh.registered, gone, timeout=3 * LEASE_SECONDS)
    except TimeoutError:
        return False
    return True


async def _agreement(
    net: Lan, mesh: Deployment, since: float, into: list[tuple[dict[str, set[View]], float | None]]
) -> None:
    """Rounds of `mesh ls` on every host at once, from `since` until every host sees the whole mesh healthy.

    Appends the last round's views and when that round began (seconds after `since`), or None if no
    round begun within AGREE_WITHIN found them agreeing.
    """
    expected = _expected(mesh)
    views: dict[str, set[View]] = {}
    while (began := time.monotonic()) - since <= AGREE_WITHIN:
        views = {}
        async with anyio.create_task_group() as tg:
            for host in net.hosts:
                tg.start_soon(_view, net, mesh, host, views)
        if all(view == expected for view in views.values()):
            into.append((views, round(began - since, 2)))
            return
    into.append((views, None))


def _expected(mesh: Deployment) -> set[View]:
    """The whole mesh, healthy, each agent learned of both by mDNS and from the registry."""
    return {(name, agent.instance, agent.url, True, ("mdns", "registry")) for name, agent in mesh.agents.items()}


async def _view(net: Lan, mesh: Deployment, host: str, into: dict[str, set[View]]) -> None:
    listed = await host_mesh(net, host, "ls", "--json", "--lan", "--registry", mesh.registry_url, "--wait", MDNS_WAIT)
    if listed.returncode != 0:
        raise RuntimeError(f"mesh ls on {host}: {listed.stderr.decode(errors='replace')}")
    into[host] = {
        (v["name"], v["instance"], v["url"], bool(v["healthy"]), tuple(v["sources"]))
        for v in json.loads(listed.stdout)
        if v["name"] in AGENTS
    }
