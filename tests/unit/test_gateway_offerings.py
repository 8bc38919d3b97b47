"""The gateway's names for resources and prompts: `mesh://{agent}/{uri}` and `{agent}__{prompt}`, reversibly."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mesh.gateway.catalog import Offering, OfferingCache, build_offerings, mesh_uri, split_name, split_uri

KB_FACTS = {"owner": "support-team", "jurisdiction": "eu", "data_class": "public"}

agent_names = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?\Z")
uris = st.text(min_size=1, max_size=80).filter(lambda u: "\n" not in u)


@given(agent_names, uris)
def test_a_mesh_uri_splits_back_into_its_agent_and_the_agents_own_uri(agent: str, uri: str) -> None:
    assert split_uri(mesh_uri(agent, uri)) == (agent, uri)


def test_a_uri_that_is_not_a_mesh_uri_does_not_split() -> None:
    assert split_uri("kb://articles/KB-101") is None
    assert split_uri("mesh://kb") is None
    assert split_uri("mesh://kb/") is None
    assert split_uri("mesh://Not_A_Label/x://y") is None


def test_every_agents_offerings_are_listed_under_its_name_with_its_governance_facts() -> None:
    kb = Offering(
        resources=({"uri": "kb://articles", "name": "articles", "mimeType": "text/markdown"},),
        templates=({"uriTemplate": "kb://articles/{id}", "name": "article", "description": "One article."},),
        prompts=({"name": "answer_ticket", "arguments": [{"name": "ticket", "required": True}]},),
    )
    library = Offering(resources=({"uri": "library://catalog", "name": "catalog"},))
    listed = build_offerings({"kb": (KB_FACTS, kb), "library": ({}, library)})

    assert [(r.uri, r.name, r.mime_type) for r in listed.resources] == [
        ("mesh://kb/kb://articles", "kb__articles", "text/markdown"),
        ("mesh://library/library://catalog", "library__catalog", None),
    ]
    [template] = listed.templates
    assert (template.uri_template, template.name) == ("mesh://kb/kb://articles/{id}", "kb__article")
    assert template.description == "[kb · owner support-team · eu · public] One article."
    [prompt] = listed.prompts
    assert prompt.name == "kb__answer_ticket"
    assert split_name(prompt.name) == ("kb", "answer_ticket")
    assert [(a.name, a.required) for a in prompt.arguments or []] == [("ticket", True)]


def test_an_entry_mcp_would_not_accept_is_left_out_and_the_rest_listed() -> None:
    broken = Offering(
        resources=({"uri": "kb://fine", "name": "fine"}, {"uri": "kb://no-name", "name": 42, "size": "big"})
    )
    listed = build_offerings({"kb": ({}, broken)})
    assert [r.uri for r in listed.resources] == ["mesh://kb/kb://fine"]


def test_the_cache_keeps_an_offering_for_its_ttl_and_forgets_instances_that_left() -> None:
    cache = OfferingCache(ttl=30.0)
    nothing = Offering()
    cache.put(("kb", "a1"), nothing, now=100.0)
    cache.put(("crm", "b2"), nothing, now=100.0)
    assert cache.get(("kb", "a1"), now=129.0) is nothing
    assert cache.get(("kb", "a1"), now=130.0) is None
    cache.keep_only([("crm", "b2")])
    assert cache.get(("kb", "a1"), now=101.0) is None
    assert cache.get(("crm", "b2"), now=101.0) is nothing


def test_a_listing_fingerprint_changes_with_its_own_list_only() -> None:
    shelf = Offering(resources=({"uri": "shelf://first", "name": "first"},), prompts=({"name": "pick"},))
    grown = Offering(resources=(*shelf.resources, {"uri": "shelf://dune", "name": "dune"}), prompts=shelf.prompts)
    before, after = build_offerings({"shelf": ({}, shelf)}), build_offerings({"shelf": ({}, grown)})
    assert before.fingerprint("resources") != after.fingerprint("resources")
    assert before.fingerprint("prompts") == after.fingerprint("prompts")
    assert before.fingerprint("resources") == build_offerings({"shelf": ({}, shelf)}).fingerprint("resources")


def test_a_forgotten_offering_is_asked_again_and_a_known_one_is_trusted_past_its_ttl() -> None:
    cache = OfferingCache(ttl=30.0)
    kept = Offering()
    cache.put(("kb", "a1"), kept, now=100.0)
    cache.put(("shelf", "c3"), Offering(), now=100.0)
    cache.forget(("shelf", "c3"))
    assert cache.get(("kb", "a1"), now=500.0) is None  # a listing asks again after the TTL
    assert cache.known(("kb", "a1")) is kept  # the watch trusts it until the agent says it changed
    assert cache.known(("shelf", "c3")) is None
