"""Hosts that differ in their environment: the address family their resolver offers, a hosts-file pin to an
address where nothing listens, an SSL_CERT_FILE that overrides a system bundle holding the root, a store that
holds a missing intermediate, and a backend pool where each backend fails its own way."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tests.outcomes import NOW_NS, address, observe, outcome, request
from tlsfleet.agent.model import AddressResult, Failure, TrustStore, Verdict
from tlsfleet.agent.trust.certinfo import fingerprint
from tlsfleet.coordinator.diagnosis.engine import diagnose
from tlsfleet.coordinator.diagnosis.model import Cause, Finding, Severity
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.outcomes import ProbeOutcome

NOW = datetime.fromtimestamp(NOW_NS / 1e9, tz=UTC)
HOST = "api.example.test"
V4, V6 = "127.0.2.1", "::1"
B1, B2, B3 = "127.0.3.1", "127.0.3.2", "127.0.3.3"
SYSTEM = "/etc/ssl/certs/ca-certificates.crt"
PUBLIC_ONLY = "/opt/app/public-roots.pem"


class Certs:
    def __init__(self) -> None:
        self.pki = LabPKI("Acme Internal")
        intermediate = self.pki.intermediate.der
        self.good = (self.pki.issue_leaf(HOST).der, intermediate)
        expired = self.pki.issue_leaf(HOST, not_before=NOW - timedelta(days=90), not_after=NOW - timedelta(days=1))
        self.expired = (expired.der, intermediate)
        self.leaf_only = (self.pki.issue_leaf(HOST).der,)
        self.path = (fingerprint(self.good[0]), fingerprint(intermediate), fingerprint(self.pki.root.der))


@pytest.fixture(scope="module")
def certs() -> Certs:
    return Certs()


def _of(found: tuple[Finding, ...], cause: Cause) -> list[Finding]:
    return [f for f in found if f.cause is cause]


# --- address families ------------------------------------------------------------------------------


def _dual(agent: str, certs: Certs) -> ProbeOutcome:
    return outcome(agent, [address(V4, certs.good), address(V6, certs.expired, native=Verdict.EXPIRED)])


def test_a_host_without_ipv6_is_no_dns_difference_and_the_ipv6_backend_is_the_fault(certs: Certs) -> None:
    found = diagnose(
        observe(_dual("web-1", certs), _dual("web-2", certs), outcome("legacy", [address(V4, certs.good)]))
    )
    assert not _of(found, Cause.DNS_DIFFERENCE), "an IPv4-only host gets no other answer, only less of it"
    top = found[0]
    assert (top.cause, top.severity, set(top.agents)) == (
        Cause.INCONSISTENT_BACKENDS,
        Severity.CRITICAL,
        {"web-1", "web-2"},
    )
    assert "install the current certificate (and its chain) on ::1," in top.fix
    assert V4 not in top.fix
    assert f"legacy resolves the name to its IPv4 address only ({V4}), so it does not reach ::1." in top.summary


def test_an_ipv4_only_host_failing_on_the_bad_ipv4_backend_is_named(certs: Certs) -> None:
    def dual(agent: str) -> ProbeOutcome:
        return outcome(agent, [address(V4, certs.expired, native=Verdict.EXPIRED), address(V6, certs.good)])

    legacy = outcome("legacy", [address(V4, certs.expired, native=Verdict.EXPIRED)])
    found = diagnose(observe(dual("web-1"), dual("web-2"), legacy))
    assert not _of(found, Cause.DNS_DIFFERENCE)
    (backends,) = _of(found, Cause.INCONSISTENT_BACKENDS)
    assert set(backends.agents) == {"web-1", "web-2", "legacy"}
    assert V4 in backends.fix and V6 not in backends.fix
    assert "does not reach" not in backends.summary, "legacy reaches the bad backend: nothing is hidden from it"


def test_disjoint_answers_are_still_a_dns_difference(certs: Certs) -> None:
    found = diagnose(
        observe(
            outcome("inside", [address(B2, certs.expired, native=Verdict.EXPIRED)]),
            outcome("outside-1", [address(B1, certs.good)]),
            outcome("outside-2", [address(B1, certs.good)]),
        )
    )
    assert found[0].cause is Cause.DNS_DIFFERENCE


# --- a pool where backends fail differently -------------------------------------------------------------


def test_three_backends_failing_two_ways_lead_with_the_finding_that_covers_both(certs: Certs) -> None:
    def pool(agent: str) -> ProbeOutcome:
        return outcome(
            agent,
            [
                address(B1, certs.good),
                address(B2, certs.leaf_only, native=Verdict.UNKNOWN_ISSUER),
                address(B3, certs.expired, native=Verdict.EXPIRED),
            ],
        )

    found = diagnose(observe(pool("web-1"), pool("web-2")))
    top = found[0]
    assert top.cause is Cause.INCONSISTENT_BACKENDS, [(f.cause, f.addresses) for f in found]
    assert f"on {B2}, {B3}," in top.fix
    (incomplete,) = _of(found, Cause.INCOMPLETE_CHAIN)
    assert incomplete.addresses == (B2,) and B2 in incomplete.fix


# --- resolution to an address where nothing listens -------------------------------------------------


def test_a_pin_to_a_dead_address_says_the_answer_is_stale(certs: Certs) -> None:
    found = diagnose(
        observe(
            outcome("web-1", [address(B1, certs.good)]),
            outcome("web-2", [address(B1, certs.good)]),
            outcome("pinned", [address(B2, connect_failure=Failure.REFUSED)]),
        )
    )
    (top,) = [f for f in found if f.severity >= Severity.WARNING]
    assert (top.cause, top.agents, top.addresses) == (Cause.UNREACHABLE, ("pinned",), (B2,))
    assert (
        f"pinned resolves {HOST} to {B2} (refused); the other vantages resolve it to {B1} and connect there"
        in top.summary
    )
    assert f"Find what answers {HOST} with {B2} on pinned" in top.fix


def test_a_dead_backend_in_a_shared_pool_is_not_a_stale_answer(certs: Certs) -> None:
    def pool(agent: str) -> ProbeOutcome:
        return outcome(agent, [address(B1, certs.good), address(B2, connect_failure=Failure.REFUSED)])

    found = diagnose(observe(pool("web-1"), pool("web-2")))
    (unreachable,) = _of(found, Cause.UNREACHABLE)
    assert "stale" not in unreachable.summary
    assert unreachable.fix.startswith("Check that the service listens on that port")


# --- trust files ---------------------------------------------------------------------------------------


def test_ssl_cert_file_hiding_an_installed_root_says_so(certs: Certs) -> None:
    trusting = outcome(
        "web-1",
        [address(B1, certs.good, stores={"system": Verdict.OK}, verified_path=certs.path)],
        trust_stores=[TrustStore("system", "file", SYSTEM, 141, "aa" * 32)],
    )
    overridden_row = address(
        B1,
        certs.good,
        native=Verdict.UNKNOWN_ISSUER,
        stores={"system": Verdict.OK, "ssl_cert_file": Verdict.UNKNOWN_ISSUER},
        verified_path=certs.path,
    )
    overridden = outcome(
        "batch-1",
        [overridden_row],
        trust_stores=[
            TrustStore("system", "file", SYSTEM, 141, "aa" * 32),
            TrustStore("ssl_cert_file", "file", PUBLIC_ONLY, 140, "bb" * 32, declared=True),
        ],
    )
    (top,) = _of(diagnose(observe(trusting, overridden)), Cause.PRIVATE_CA_NOT_TRUSTED)
    assert top.agents == ("batch-1",)
    assert "is installed on batch-1, yet SSL_CERT_FILE on batch-1 names /opt/app/public-roots.pem" in top.summary
    assert f"instead of the system bundle {SYSTEM}, which holds it" in top.summary
    assert top.fix.startswith("On batch-1, unset SSL_CERT_FILE or point it at the system bundle")
    assert "update-ca-certificates" not in top.fix, "installing the root again changes nothing there"


def test_a_store_holding_the_missing_intermediate_is_named(certs: Certs) -> None:
    def leaf_only(agent: str, verdict: Verdict) -> ProbeOutcome:
        return outcome(agent, [address(B1, certs.leaf_only, native=verdict)])

    found = diagnose(
        observe(
            leaf_only("web-1", Verdict.UNKNOWN_ISSUER),
            leaf_only("web-2", Verdict.UNKNOWN_ISSUER),
            leaf_only("patched", Verdict.OK),
        )
    )
    top = found[0]
    assert (top.cause, set(top.agents)) == (Cause.INCOMPLETE_CHAIN, {"web-1", "web-2"})
    assert "patched verifies it only thanks to that" in top.summary


# --- through the host's HTTPS proxy ------------------------------------------------------------------


PROXY_A, PROXY_B = "10.9.9.1", "10.9.9.2"
VIA_PROXY = replace(request(), options=replace(request().options, via_proxy=True))


def _via(agent: str, proxy: str, row: AddressResult) -> ProbeOutcome:
    probed = outcome(agent, [row], resolved=[proxy], req=VIA_PROXY)
    assert probed.result is not None
    return replace(probed, result=replace(probed.result, proxy=f"http://{proxy}:3128"))


def _refused(proxy: str, status: str) -> AddressResult:
    row = address(proxy, connect_failure=Failure.PROXY_REFUSED)
    said = f"proxy http://{proxy}:3128 refused CONNECT {HOST}:443: 'HTTP/1.1 {status}'"
    return replace(row, connect_error=said, proxy_status=int(status.split()[0]))


def test_a_proxy_refusal_says_which_proxy_answered_what_and_asks_it_for_the_name(certs: Certs) -> None:
    found = diagnose(
        observe(
            outcome("direct", [address(B1, certs.good)], req=VIA_PROXY),
            _via("forbidden", PROXY_A, _refused(PROXY_A, "403 Forbidden")),
            _via("no-credentials", PROXY_B, _refused(PROXY_B, "407 Proxy Authentication Required")),
            req=VIA_PROXY,
        )
    )
    (top,) = [f for f in found if f.severity >= Severity.WARNING]
    assert (top.cause, set(top.agents)) == (Cause.UNREACHABLE, {"forbidden", "no-credentials"})
    assert f"the proxy did not open the tunnel to {HOST}:443" in top.summary
    assert f"for forbidden, its proxy http://{PROXY_A}:3128 answers 403" in top.summary
    assert "answers 407: it wants credentials the host does not send" in top.summary
    assert f"Allow {HOST}:443 in the policy of the proxy that forbidden goes through" in top.fix
    assert "give no-credentials the proxy credentials its applications use" in top.fix
    assert set(top.reproduce) == {
        f"openssl s_client -connect {HOST}:443 -proxy {p}:3128 -servername {HOST} -showcerts </dev/null"
        for p in (PROXY_A, PROXY_B)
    }


def test_through_one_proxy_the_commands_ask_the_proxy_for_the_name_not_for_its_own_address(certs: Certs) -> None:
    untrusted = address(PROXY_A, certs.good, native=Verdict.UNKNOWN_ISSUER)
    found = diagnose(
        observe(outcome("direct", [address(B1, certs.good)]), _via("egress", PROXY_A, untrusted), req=VIA_PROXY)
    )
    commands = [c for f in found for c in f.reproduce if "s_client" in c]
    assert commands, found
    proxied = [c for c in commands if "-proxy" in c]
    assert proxied and all(f"-connect {HOST}:443 -proxy {PROXY_A}:3128" in c for c in proxied), commands
    assert not [c for c in commands if f"-connect {PROXY_A}:" in c], "s_client would ask the proxy for itself"


def test_ipv4_only_and_ipv6_only_hosts_are_told_to_fix_the_certificate_not_a_resolver(certs: Certs) -> None:
    found = diagnose(
        observe(
            outcome("v4-host", [address(V4, certs.good)]),
            outcome("v6-host", [address(V6, certs.expired, native=Verdict.EXPIRED)]),
        )
    )
    top = found[0]
    assert (top.cause, top.severity) == (Cause.DNS_DIFFERENCE, Severity.CRITICAL)
    assert top.fix.startswith("Update the certificate on ::1, which v6-host reaches: the sets differ only in address")
    assert "resolver" not in top.fix.replace("no resolver is wrong", "")
    assert "so v6-host fails because of the address family it uses" in top.summary


def _absent_cert_file(agent: str, certs: Certs, system_verdict: Verdict) -> ProbeOutcome:
    row = address(
        B1,
        certs.good,
        native=Verdict.UNKNOWN_ISSUER,
        stores={"system": system_verdict, "ssl_cert_file": Verdict.UNKNOWN_ISSUER},
        verified_path=certs.path,
    )
    missing = f"SSL_CERT_FILE points at {PUBLIC_ONLY}, which does not exist"
    return outcome(
        agent,
        [row],
        trust_stores=[
            TrustStore("system", "file", SYSTEM, 141, "aa" * 32),
            TrustStore("ssl_cert_file", "file", PUBLIC_ONLY, 0, "", error=missing, declared=True),
        ],
    )


def test_an_absent_ssl_cert_file_is_said_to_hold_no_root_and_is_not_to_be_added_to(certs: Certs) -> None:
    trusting = outcome(
        "web-1",
        [address(B1, certs.good, stores={"system": Verdict.OK}, verified_path=certs.path)],
        trust_stores=[TrustStore("system", "file", SYSTEM, 141, "aa" * 32)],
    )
    installed = diagnose(observe(trusting, _absent_cert_file("batch-1", certs, Verdict.OK)))
    (top,) = _of(installed, Cause.PRIVATE_CA_NOT_TRUSTED)
    assert f"names {PUBLIC_ONLY}, which holds no root (SSL_CERT_FILE points at" in top.summary
    assert PUBLIC_ONLY not in top.fix, "nothing can be added to a file that is not there"
    not_installed = diagnose(observe(trusting, _absent_cert_file("batch-2", certs, Verdict.UNKNOWN_ISSUER)))
    (top,) = _of(not_installed, Cause.PRIVATE_CA_NOT_TRUSTED)
    assert "so OpenSSL-based clients there trust no root at all, public ones included." in top.summary
    assert "On batch-2, point SSL_CERT_FILE at the bundle the root is added to, or unset it." in top.fix
