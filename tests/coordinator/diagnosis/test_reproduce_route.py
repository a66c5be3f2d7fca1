"""The commands to reproduce a finding take the road the probes took: a STARTTLS dialogue, an HTTPS proxy."""

from __future__ import annotations

from dataclasses import replace

from tests.judged import NAME, der, judged, store
from tests.outcomes import observe
from tlsfleet.agent.model import Starttls
from tlsfleet.coordinator.diagnosis.engine import diagnose
from tlsfleet.coordinator.diagnosis.reproduce import route_options, routed
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.outcomes import ProbeOutcome

PKI = LabPKI("Route")
ELSEWHERE = LabPKI("Elsewhere")


def untrusting(agent: str, *, starttls: Starttls = Starttls.NONE, proxy: str = "") -> ProbeOutcome:
    """An agent whose store lacks the server's root: findings with commands to reproduce."""
    chain = (der(PKI.issue_leaf(NAME).cert), PKI.intermediate.der)
    outcome = judged(agent, chain, [store("system", [ELSEWHERE.root.cert])])
    assert outcome.result is not None
    return replace(outcome, result=replace(outcome.result, starttls=starttls, proxy=proxy))


def s_clients(outcomes: list[ProbeOutcome]) -> list[str]:
    commands = [c for f in diagnose(observe(*outcomes)) for c in f.reproduce if "openssl s_client" in c]
    assert commands, "the findings give commands to reproduce"
    return commands


def test_starttls_and_the_one_proxy_are_in_every_s_client_command() -> None:
    proxy = "http://ops:***@proxy.internal:8080"
    commands = s_clients([untrusting("edge-1", starttls=Starttls.SMTP, proxy=proxy)])
    assert all("-connect 10.0.0.1:443 -starttls smtp -proxy proxy.internal:8080" in c for c in commands), commands
    assert not any("ops" in c or "***" in c for c in commands), "no credentials on a command line"


def test_tls_from_the_first_byte_straight_to_the_address_adds_nothing() -> None:
    commands = s_clients([untrusting("edge-1")])
    assert not any("-starttls" in c or "-proxy" in c for c in commands)


def test_agents_behind_different_proxies_get_no_proxy_option() -> None:
    outcomes = [
        untrusting("edge-1", starttls=Starttls.POSTGRES, proxy="proxy-a.internal:3128"),
        untrusting("edge-2", starttls=Starttls.POSTGRES, proxy="proxy-b.internal"),
    ]
    commands = s_clients(outcomes)
    assert all("-starttls postgres" in c and "-proxy" not in c for c in commands), commands


def test_a_proxy_without_a_port_is_the_agents_default_port() -> None:
    [outcome] = [untrusting("edge-1", proxy="proxy.internal")]
    assert route_options(observe(outcome)) == ("-proxy", "proxy.internal:1080")  # curl's default, as the agent's
    assert routed(["openssl s_client -connect [::1]:443 -noservername"], ("-starttls", "imap")) == (
        "openssl s_client -connect [::1]:443 -starttls imap -noservername",
    )


def test_xmpp_names_the_stream_domain_as_the_agents_sent_it() -> None:
    """Without -xmpphost s_client sends to='ADDRESS', which a server that does not serve it ends with host-unknown."""
    commands = s_clients([untrusting("edge-1", starttls=Starttls.XMPP)])
    assert all(f"-starttls xmpp -xmpphost {NAME} " in c for c in commands), commands
