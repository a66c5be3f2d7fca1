"""Selection that says what it did: a name that matches nothing is refused with the close names, and
the labels an agent reports merge with the inventory's (the inventory wins, the difference is kept)."""

from __future__ import annotations

import pytest

from tlsfleet.coordinator.fleet.inventory import MergedLabels, merge_labels
from tlsfleet.coordinator.fleet.selector import SelectorError, check_names_exist, parse_selector

KNOWN = ["local", "web-1", "web-2", "web-10", "db-1", "billing-1"]


def _refusal(text: str, known: list[str] = KNOWN) -> str:
    with pytest.raises(SelectorError) as caught:
        check_names_exist(parse_selector(text), known, "inventory /etc/tlsfleet/inventory.toml")
    return str(caught.value)


def test_names_and_patterns_that_match_something_pass() -> None:
    for text in ("web-1", "web-*", "local,db-1", "*-1,env=prod", "env=prod", "", "billing-?"):
        check_names_exist(parse_selector(text), KNOWN, "inventory x")


def test_a_misspelt_name_is_refused_with_the_close_names() -> None:
    message = _refusal("web-l")
    assert message.startswith("selector term 'web-l' matches no vantage in inventory /etc/tlsfleet/inventory.toml")
    assert "close names: " in message
    close = message.split("close names: ")[1].split(", ")
    assert set(close) <= set(KNOWN) and "web-1" in close
    assert "\n" not in message


def test_one_bad_name_among_good_ones_is_refused_not_dropped() -> None:
    assert "'bilingg-1'" in _refusal("web-1,bilingg-1,db-1")
    assert "billing-1" in _refusal("web-1,bilingg-1,db-1")


def test_a_pattern_that_matches_nothing_is_refused_too() -> None:
    assert "'cache-*'" in _refusal("cache-*")


def test_with_nothing_close_some_known_names_are_shown_bounded() -> None:
    message = _refusal("zzz")
    assert "known: billing-1, db-1, local, web-1, web-10 and 1 more" in message
    many = [f"host-{i}" for i in range(10_000)]
    assert len(_refusal("zzz", many)) < 200


def test_names_repeated_among_the_known_count_once() -> None:
    assert "known: a, b and" not in _refusal("zzz", ["a", "a", "b"])
    assert _refusal("zzz", ["a", "a", "b"]).endswith("known: a, b")


def test_a_selector_error_is_a_usage_error_with_one_line() -> None:
    with pytest.raises(ValueError):
        check_names_exist(parse_selector("nope"), KNOWN, "x")


def test_names_text_keeps_only_the_name_terms() -> None:
    assert parse_selector("web-*,env=prod,db-1").names_text() == "web-*,db-1"
    assert parse_selector("env=prod,region!=us").names_text() is None
    assert parse_selector(parse_selector("web-*,env=prod").names_text()).names == ("web-*",)


@pytest.mark.parametrize(
    ("text", "name", "listed", "ruled_out"),
    [
        ("env=prod", "web-1", {"env": "staging"}, True),  # the inventory wins: the agent cannot change it
        ("env=prod", "web-1", {"env": "prod"}, False),
        ("env=prod", "web-1", {}, False),  # the agent may report env=prod: ask it
        ("region!=us", "web-1", {"region": "us"}, True),
        ("region!=us", "web-1", {"region": "eu"}, False),
        ("region!=us", "web-1", {}, False),
        ("db-*", "web-1", {}, True),
        ("web-*,team=edge", "web-1", {"env": "prod"}, False),
    ],
)
def test_an_agent_is_ruled_out_before_asking_only_when_the_inventory_decides(
    text: str, name: str, listed: dict[str, str], ruled_out: bool
) -> None:
    selector = parse_selector(text)
    assert selector.rules_out(name, listed) is ruled_out
    if ruled_out:
        # Whatever the agent reports, the merged labels cannot match.
        for reported in ({}, {"env": "prod", "region": "eu", "team": "edge"}, {"region": "us"}):
            merged = merge_labels(tuple(listed.items()), tuple(reported.items()))
            assert not selector.matches(name, dict(merged.labels))


def test_labels_merge_with_the_inventory_winning() -> None:
    merged = merge_labels((("env", "prod"), ("region", "eu-west")), (("env", "staging"), ("team", "edge")))
    assert merged.labels == (("env", "prod"), ("region", "eu-west"), ("team", "edge"))
    assert merged.conflicts == (("env", "prod", "staging"),)
    assert merged.shown() == (("env", "prod (agent says env=staging)"), ("region", "eu-west"), ("team", "edge"))


def test_agreeing_or_missing_labels_are_no_conflict() -> None:
    assert merge_labels((("env", "prod"),), (("env", "prod"),)) == MergedLabels(labels=(("env", "prod"),))
    assert merge_labels((), ()) == MergedLabels()
    assert merge_labels((), (("zone", "a"),)).labels == (("zone", "a"),)
    assert merge_labels((("zone", "a"),), ()).shown() == (("zone", "a"),)


def test_selection_reads_the_merged_labels() -> None:
    merged = merge_labels((("env", "prod"),), (("env", "staging"), ("team", "edge")))
    assert parse_selector("team=edge").matches("web-1", dict(merged.labels))
    assert parse_selector("env=prod,team=edge").matches("web-1", dict(merged.labels))
    assert not parse_selector("env=staging").matches("web-1", dict(merged.labels))
