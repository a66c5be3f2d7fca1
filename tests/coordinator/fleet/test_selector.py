"""`--agents` selectors: names with wildcards, label equality and inequality, and their combinations."""

from __future__ import annotations

import pytest

from tlsfleet.coordinator.fleet.selector import Selector, SelectorError, parse_selector

FLEET: dict[str, dict[str, str]] = {
    "local": {},
    "web-1": {"env": "prod", "region": "eu-west"},
    "web-2": {"env": "prod", "region": "us-east"},
    "web-10": {"env": "staging", "region": "eu-west"},
    "db-1": {"env": "prod", "region": "eu-west", "tier": "data"},
    "db-2": {"env": "staging"},
    "batch": {"env": "", "region": "eu-west"},
}


def _select(text: str | None) -> set[str]:
    selector = parse_selector(text)
    return {name for name, labels in FLEET.items() if selector.matches(name, labels)}


@pytest.mark.parametrize("text", [None, "", "   ", "\t"])
def test_empty_selector_selects_every_vantage(text: str | None) -> None:
    assert parse_selector(text) == Selector()
    assert _select(text) == set(FLEET)


def test_exact_names_any_one_matches() -> None:
    assert _select("web-1") == {"web-1"}
    assert _select("local,db-1") == {"local", "db-1"}
    assert _select(" web-2 , db-2 ") == {"web-2", "db-2"}
    assert _select("nosuch") == set()


def test_parsed_structure_keeps_terms_in_order() -> None:
    selector = parse_selector("web-*,env=prod,region!=us-east,local")
    assert selector.names == ("web-*", "local")
    assert selector.equal == (("env", "prod"),)
    assert selector.not_equal == (("region", "us-east"),)


def test_shell_wildcards() -> None:
    assert _select("web-*") == {"web-1", "web-2", "web-10"}
    assert _select("web-?") == {"web-1", "web-2"}
    assert _select("*-1") == {"web-1", "db-1"}
    assert _select("db-[2]") == {"db-2"}
    assert _select("*") == set(FLEET)


def test_name_match_is_whole_name_and_case_sensitive() -> None:
    assert _select("web") == set()
    assert parse_selector("web-1").matches("web-1x", {}) is False
    assert parse_selector("web-*").matches("WEB-1", {}) is False


def test_key_equals_value() -> None:
    assert _select("env=prod") == {"web-1", "web-2", "db-1"}
    assert _select("tier=data") == {"db-1"}
    # A missing label never equals a value, not even the empty one.
    assert _select("env=") == {"batch"}


def test_key_not_equals_value() -> None:
    # A vantage without the label is "not equal" to any value: it is kept.
    assert _select("region!=eu-west") == {"local", "web-2", "db-2"}
    assert _select("env!=prod") == {"local", "web-10", "db-2", "batch"}


def test_all_label_terms_must_hold() -> None:
    assert _select("env=prod,region=eu-west") == {"web-1", "db-1"}
    assert _select("env=prod,region!=us-east") == {"web-1", "db-1"}
    assert _select("env=prod,region!=us-east,tier!=data") == {"web-1"}
    assert _select("env=prod,env=staging") == set()


def test_names_and_labels_combine_with_and() -> None:
    assert _select("web-*,env=prod") == {"web-1", "web-2"}
    assert _select("web-*,db-*,region=eu-west") == {"web-1", "web-10", "db-1"}
    assert _select("web-*,db-*,env!=prod") == {"web-10", "db-2"}
    assert _select("local,env=prod") == set()


def test_dotted_dashed_underscored_label_keys() -> None:
    selector = parse_selector("topology.zone=a,app_name=x-y.z,_x=1,Team-Name=SRE Ops")
    assert selector.equal == (
        ("topology.zone", "a"),
        ("app_name", "x-y.z"),
        ("_x", "1"),
        ("Team-Name", "SRE Ops"),
    )
    labels = {"topology.zone": "a", "app_name": "x-y.z", "_x": "1", "Team-Name": "SRE Ops"}
    assert selector.matches("any", labels) is True
    assert selector.matches("any", {**labels, "_x": "2"}) is False


@pytest.mark.parametrize(
    "text",
    [
        "Web-1",  # names are lowercase, as the inventory requires
        "web_1",
        "web-1,,db-1",  # an empty term
        "web-1,",
        "env==prod",
        "env=a=b",
        "env!==prod",
        "env=prod!",
        "1env=prod",
        "=prod",
        "!=prod",
        "env = prod",
        "web 1",
        "web/1",
    ],
)
def test_bad_terms_are_refused_naming_the_term_and_the_accepted_forms(text: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse_selector(text)
    message = str(caught.value)
    assert "selector term" in message
    assert "is not accepted" in message
    assert "KEY=VALUE" in message
    assert "KEY!=VALUE" in message
    assert "agent name" in message


def test_refusal_quotes_the_offending_term() -> None:
    with pytest.raises(SelectorError, match=r"'env==prod'"):
        parse_selector("web-1,env==prod")
    with pytest.raises(SelectorError, match=r"term ''"):
        parse_selector("web-1,,db-1")


def test_selector_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_selector("Bad Name")
