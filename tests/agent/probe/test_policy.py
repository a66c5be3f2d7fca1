"""The probe policy: every rule form, deny before allow, built-in denials and what lifts them, the agent's own
listeners, IPv6 and IPv4-mapped addresses, and a clear error for every wrong rule or file."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

from tlsfleet.agent.probe.policy import (
    ACCEPTED_RULES,
    PolicyError,
    ProbePolicy,
    is_local_address,
    load_policy,
    parse_rule,
)


def nothing_local(_address: object) -> bool:
    return False


def decide(policy: ProbePolicy, address: str, port: int = 443, name: str = "api.example.test") -> tuple[bool, str]:
    decision = policy.decide(address, port, name, is_local=nothing_local)
    return decision.allowed, decision.rule


# --- rule forms -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("192.0.2.7", "192.0.2.7/32"),
        ("::1/128", "::1/128"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("port:443", "port:443"),
        ("port:8000-8100", "port:8000-8100"),
        ("name:*.Corp.Example.COM", "name:*.corp.example.com"),
        ("port:443   10.0.0.0/8", "10.0.0.0/8 port:443"),
        ("10.0.0.0/8 port:443 name:api.*", "10.0.0.0/8 port:443 name:api.*"),
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),  # IPv4-mapped, judged as IPv4
    ],
)
def test_every_rule_form_parses(text: str, normalised: str) -> None:
    assert parse_rule(text).text == normalised


def test_each_part_of_a_rule_must_match() -> None:
    rule = parse_rule("10.0.0.0/8 port:8000-8100 name:*.corp.example.com")
    ten = ipaddress.ip_address("10.1.2.3")
    assert rule.matches(ten, 8000, "api.corp.example.com")
    assert rule.matches(ten, 8100, "API.Corp.Example.Com.")  # names compare case-insensitively, root dot or not
    assert not rule.matches(ten, 8101, "api.corp.example.com")
    assert not rule.matches(ipaddress.ip_address("11.0.0.1"), 8000, "api.corp.example.com")
    assert not rule.matches(ten, 8000, "corp.example.com")  # the wildcard needs a label
    assert not rule.matches(ipaddress.ip_address("::a00:1"), 8000, "api.corp.example.com")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "it is empty"),
        ("   ", "it is empty"),
        ("10.0.0.1/8", "has host bits set (did you mean 10.0.0.0/8?)"),
        ("10.0.0.0/33", "neither an address"),
        ("api.example.test", "neither an address"),
        ("port:0", "out of range"),
        ("port:65536", "out of range"),
        ("port:9000-8000", "out of range"),
        ("port:https", "not a number"),
        ("port:", "not a number"),
        ("name:", "the name pattern is empty"),
        ("10.0.0.0/8 192.168.0.0/16", "two address parts"),
        ("port:1 port:2", "two port parts"),
        ("name:a name:b", "two name parts"),
    ],
)
def test_a_wrong_rule_is_one_line_naming_it_and_the_accepted_forms(text: str, says: str) -> None:
    with pytest.raises(PolicyError) as refused:
        parse_rule(text, "--deny")
    message = str(refused.value)
    assert message.startswith(f"--deny {text!r} is not accepted: ")
    assert says in message and message.endswith(ACCEPTED_RULES)
    assert "\n" not in message


# --- precedence -------------------------------------------------------------------------------------


def test_with_no_rules_loopback_and_private_networks_are_allowed() -> None:
    policy = ProbePolicy()
    for address in ("127.0.0.1", "127.0.0.2", "::1", "10.0.0.1", "192.168.1.1", "2001:db8::1"):
        assert decide(policy, address) == (True, "no rule denies it"), address


def test_deny_wins_over_allow() -> None:
    policy = load_policy(allow=["127.0.0.0/8"], deny=["127.0.0.2/32"])
    assert decide(policy, "127.0.0.2") == (False, "deny 127.0.0.2/32")
    assert decide(policy, "127.0.0.3") == (True, "allow 127.0.0.0/8")


def test_with_allow_rules_an_address_must_match_one() -> None:
    policy = load_policy(allow=["10.0.0.0/8 port:443", "name:*.corp.example.com"])
    assert decide(policy, "10.9.9.9", 443) == (True, "allow 10.0.0.0/8 port:443")
    assert decide(policy, "192.0.2.1", 8443, "db.corp.example.com") == (True, "allow name:*.corp.example.com")
    allowed, rule = decide(policy, "10.9.9.9", 80)
    assert not allowed
    assert rule == "no allow rule matches (allow: 10.0.0.0/8 port:443, name:*.corp.example.com)"
    assert not decide(policy, "127.0.0.1")[0], "loopback too, once allow rules exist"


def test_a_deny_by_port_or_name_alone() -> None:
    policy = load_policy(deny=["port:22", "name:*.internal"])
    assert decide(policy, "192.0.2.1", 22) == (False, "deny port:22")
    assert decide(policy, "192.0.2.1", 443, "db.internal") == (False, "deny name:*.internal")
    assert decide(policy, "192.0.2.1", 443, "db.example") == (True, "no rule denies it")


# --- built-in denials -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("169.254.169.254", "built-in deny 169.254.0.0/16 (link-local)"),
        ("169.254.0.1", "built-in deny 169.254.0.0/16 (link-local)"),
        ("fe80::1", "built-in deny fe80::/10 (IPv6 link-local)"),
        ("fe80::1%2", "built-in deny fe80::/10 (IPv6 link-local)"),
        ("fd00:ec2::254", "built-in deny fd00:ec2::254/128 (cloud metadata)"),
        ("::ffff:169.254.169.254", "built-in deny 169.254.0.0/16 (link-local)"),  # IPv4-mapped
    ],
)
def test_built_in_denials_are_always_on(address: str, rule: str) -> None:
    assert decide(ProbePolicy(), address, 80) == (False, rule)
    # A broad allow rule does not lift them: it does not name the range.
    assert decide(load_policy(allow=["0.0.0.0/0", "::/0", "port:80"]), address, 80) == (False, rule)


def test_an_exact_allow_rule_lifts_a_built_in_denial() -> None:
    policy = load_policy(allow=["169.254.10.5/32 port:443", "fd00:ec2::254"])
    assert decide(policy, "169.254.10.5", 443) == (True, "allow 169.254.10.5/32 port:443")
    assert decide(policy, "fd00:ec2::254", 80) == (True, "allow fd00:ec2::254/128")
    assert decide(policy, "169.254.10.5", 80)[0] is False, "the lifting rule itself must match"
    assert decide(policy, "169.254.169.254", 443) == (False, "built-in deny 169.254.0.0/16 (link-local)")


def test_a_deny_rule_still_wins_over_a_lifted_built_in() -> None:
    policy = load_policy(allow=["169.254.0.0/16"], deny=["169.254.169.254"])
    assert decide(policy, "169.254.169.254") == (False, "deny 169.254.169.254/32")
    assert decide(policy, "169.254.1.1") == (True, "allow 169.254.0.0/16")


# --- the agent's own listeners ----------------------------------------------------------------------


def test_the_own_listener_on_one_address() -> None:
    policy = ProbePolicy().with_listener("127.0.0.1", 7443, "gRPC")
    assert decide(policy, "127.0.0.1", 7443) == (False, "built-in deny own gRPC listener 127.0.0.1:7443")
    assert decide(policy, "127.0.0.1", 7444)[0], "another port of the same address"
    assert decide(policy, "127.0.0.2", 7443)[0], "another address on that port"
    assert not decide(policy, "0.0.0.0", 7443)[0], "0.0.0.0 lands on this host"
    assert not decide(policy, "::ffff:127.0.0.1", 7443)[0]


@pytest.mark.parametrize("listen", ["0.0.0.0", "::", "[::]", "agent-1.example"])
def test_a_wildcard_or_named_listener_means_every_local_address(listen: str) -> None:
    policy = ProbePolicy().with_listener(listen, 7443, "gRPC")
    rule = "built-in deny own gRPC listener *:7443 (every local address)"
    local = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.0.0.5")}
    for address in ("127.0.0.1", "10.0.0.5"):
        assert policy.decide(address, 7443, "x", is_local=local.__contains__).rule == rule
    assert policy.decide("10.0.0.6", 7443, "x", is_local=local.__contains__).allowed, "not this host's"


def test_an_ipv6_listener() -> None:
    policy = ProbePolicy().with_listener("::1", 7443, "gRPC")
    assert decide(policy, "::1", 7443) == (False, "built-in deny own gRPC listener [::1]:7443")
    assert decide(policy, "127.0.0.1", 7443)[0]


def test_only_an_allow_rule_naming_the_port_lifts_the_own_listener() -> None:
    listener = "built-in deny own gRPC listener 127.0.0.1:7443"
    broad = load_policy(allow=["127.0.0.0/8"]).with_listener("127.0.0.1", 7443, "gRPC")
    assert decide(broad, "127.0.0.1", 7443) == (False, listener)
    exact = load_policy(allow=["127.0.0.1 port:7443"]).with_listener("127.0.0.1", 7443, "gRPC")
    assert decide(exact, "127.0.0.1", 7443) == (True, "allow 127.0.0.1/32 port:7443")


def test_the_real_local_check_knows_this_hosts_addresses() -> None:
    assert is_local_address(ipaddress.ip_address("127.0.0.1"))
    assert is_local_address(ipaddress.ip_address("127.0.0.77"))  # all of 127.0.0.0/8 is this host's
    assert is_local_address(ipaddress.ip_address("0.0.0.0"))
    assert not is_local_address(ipaddress.ip_address("192.0.2.1"))  # TEST-NET-1, never assigned
    if socket.has_ipv6:
        assert not is_local_address(ipaddress.ip_address("2001:db8::1"))
    policy = ProbePolicy().with_listener("0.0.0.0", 7443, "gRPC")
    assert not policy.decide("127.0.0.9", 7443, "x").allowed
    assert policy.decide("192.0.2.1", 7443, "x").allowed


def test_a_target_that_is_not_an_address_is_denied() -> None:
    assert decide(ProbePolicy(), "api.example.test") == (False, "'api.example.test' is not an IP address")


# --- what is told -----------------------------------------------------------------------------------


def test_the_policy_describes_itself_in_checking_order() -> None:
    policy = load_policy(allow=["10.0.0.0/8 port:443"], deny=["10.0.0.7"]).with_listener("0.0.0.0", 7443, "gRPC")
    assert policy.describe() == (
        "deny 10.0.0.7/32",
        "built-in deny 169.254.0.0/16 (link-local)",
        "built-in deny fe80::/10 (IPv6 link-local)",
        "built-in deny fd00:ec2::254/128 (cloud metadata)",
        "built-in deny own gRPC listener *:7443 (every local address)",
        "allow 10.0.0.0/8 port:443",
        "deny everything else",
    )
    assert ProbePolicy().describe()[-1] == "allow everything else"


def test_a_decision_says_its_rule_in_words() -> None:
    decision = ProbePolicy().decide("169.254.169.254", 80, "metadata")
    assert decision.message == "denied by policy: built-in deny 169.254.0.0/16 (link-local)"


# --- the policy file --------------------------------------------------------------------------------


def test_a_policy_file_and_flags_add_up(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('allow = ["10.0.0.0/8", "port:443"]\ndeny = ["10.0.0.7"]\n')
    policy = load_policy(allow=["192.168.0.0/16"], deny=["port:22"], file=path)
    assert [r.text for r in policy.allow] == ["10.0.0.0/8", "port:443", "192.168.0.0/16"]
    assert [r.text for r in policy.deny] == ["10.0.0.7/32", "port:22"]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("allow = [", "is not TOML"),
        ("allow = " + "[" * 100_000 + "]" * 100_000, "nests arrays or tables too deeply"),
        ("permit = ['10.0.0.0/8']", "unknown key 'permit'"),
        ("allow = '10.0.0.0/8'", "allow must be a list of rule strings"),
        ("deny = [22]", "deny must be a list of rule strings"),
        ("deny = ['10.0.0.1/8']", ": deny '10.0.0.1/8' is not accepted: '10.0.0.1/8' has host bits set"),
    ],
)
def test_a_wrong_policy_file_is_one_line_naming_it(tmp_path: Path, content: str, says: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(content)
    with pytest.raises(PolicyError) as refused:
        load_policy(file=path)
    assert str(path) in str(refused.value) and says in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_missing_policy_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read it"):
        load_policy(file=tmp_path / "absent.toml")
