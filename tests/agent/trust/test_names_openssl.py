"""The name rules of `agent.trust.names` are OpenSSL's own X509_check_host, asked in process for every pattern:
with its default flags (openssl s_client, the openssl view) and with X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS (Python's
contexts), for a subjectAltName and for the subject CN a certificate without DNS SANs falls back to."""

from __future__ import annotations

import functools
import ssl
from datetime import UTC, datetime

import pytest

from tlsfleet.agent.trust.names import (
    a_labels,
    curl_wildcard_matches,
    host_matches,
    match_name,
    openssl_wildcard_matches,
    parse_expected_name,
    partial_wildcard_covers,
)
from tlsfleet.agent.trust.verify import NativeCheck, NativeVerifier
from tlsfleet.coordinator.lab.pki import LabPKI, chain_pem, write_pem

# (pattern, name): the name normalized, as a probe asks it.
PAIRS = [
    ("*.lab.test", "a.lab.test"),
    ("*.LAB.TEST", "a.lab.test"),
    ("*.lab.test", "a_b.lab.test"),  # a wildcard stands for letters, digits and hyphens only
    ("*.lab.test", "a-.lab.test"),
    ("*.a_b.lab.test", "x.a_b.lab.test"),  # an underscore anywhere: compared literally, no wildcard
    ("*.a_b.lab.test", "*.a_b.lab.test"),
    ("*.-x.lab.test", "a.-x.lab.test"),  # a label starting with a hyphen: no wildcard either
    ("*.x-.lab.test", "a.x-.lab.test"),
    ("*.lab.test.", "a.lab.test"),  # a trailing dot: compared literally
    ("*.test", "lab.test"),
    ("*", "lab"),
    ("*.*.lab.test", "a.b.lab.test"),
    ("a.*.lab.test", "a.b.lab.test"),
    ("**.lab.test", "ab.lab.test"),
    ("a*.lab.test", "ab.lab.test"),
    ("a*.lab.test", "a.lab.test"),
    ("a*.lab.test", "a_b.lab.test"),
    ("*b.lab.test", "ab.lab.test"),
    ("a*c.lab.test", "abc.lab.test"),
    ("x*.lab.test", "xn--bcher-kva.lab.test"),
    ("xn--*.lab.test", "xn--bcher-kva.lab.test"),
    ("*.lab.test", "xn--bcher-kva.lab.test"),
    ("*.xn--bcher-kva.test", "a.xn--bcher-kva.test"),
    ("*.lab.test", "lab.test"),
    ("*.lab.test", "a.b.lab.test"),
    ("a_b.lab.test", "a_b.lab.test"),
    ("A_B.Lab.Test", "a_b.lab.test"),
]


@pytest.fixture(scope="module")
def pki() -> LabPKI:
    return LabPKI("Names")


@pytest.fixture(scope="module")
def verifier(pki: LabPKI, tmp_path_factory: pytest.TempPathFactory) -> NativeVerifier:
    roots = write_pem(tmp_path_factory.mktemp("names") / "roots.pem", chain_pem(pki.root))
    return NativeVerifier(str(roots))


@functools.cache
def _security_level() -> int:
    return ssl.create_default_context().security_level  # loads the system store: once


def _openssl_accepts(verifier: NativeVerifier, chain: tuple[bytes, ...], name: str, *, partial: bool) -> bool:
    check = NativeCheck(name, _security_level(), 0, True, partial)
    code = verifier.verify(chain, check, int(datetime.now(UTC).timestamp()))
    assert code in (0, 62), code  # nothing but the name may fail here
    return code == 0


@pytest.mark.parametrize(("pattern", "name"), PAIRS)
def test_san_rules_are_x509_check_hosts(pki: LabPKI, verifier: NativeVerifier, pattern: str, name: str) -> None:
    chain = (pki.issue_leaf(pattern, common_name="no name").der, pki.intermediate.der)
    assert openssl_wildcard_matches(pattern, name) is _openssl_accepts(verifier, chain, name, partial=True)
    assert host_matches(pattern, name, partial=False) is _openssl_accepts(verifier, chain, name, partial=False)


@pytest.mark.parametrize(("pattern", "name"), PAIRS)
def test_the_cn_fallback_follows_the_same_rules(pki: LabPKI, verifier: NativeVerifier, pattern: str, name: str) -> None:
    leaf = pki.issue_leaf(common_name=pattern, san=False).der
    chain = (leaf, pki.intermediate.der)
    openssl, python = (_openssl_accepts(verifier, chain, name, partial=p) for p in (True, False))
    # What the openssl view accepts and Python's contexts refuse is named: the python view is probed.
    assert bool(partial_wildcard_covers(leaf, name)) is (openssl and not python)


def test_a_cn_partial_wildcard_is_named_and_a_san_one_hides_the_cn(pki: LabPKI) -> None:
    cn_only = pki.issue_leaf(common_name="f*.lab.test", san=False).der
    assert partial_wildcard_covers(cn_only, "foo.lab.test") == "f*.lab.test"
    with_san = pki.issue_leaf("other.lab.test", common_name="f*.lab.test").der
    assert partial_wildcard_covers(with_san, "foo.lab.test") == ""  # a DNS SAN: OpenSSL never reads the CN


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("*.lab.test", "a_b.lab.test", True),  # curl looks at no character of the matched label
        ("*.a_b.lab.test", "x.a_b.lab.test", True),
        ("*.lab.test.", "a.lab.test", True),  # and drops trailing dots
        ("*.lab.test", "lab.test", False),
        ("*.test", "lab.test", False),
        ("a*.lab.test", "ab.lab.test", False),
        ("xn--*.lab.test", "xn--a.lab.test", False),
    ],
)
def test_curls_wildcard_rule(pattern: str, name: str, matches: bool) -> None:
    assert curl_wildcard_matches(pattern, name) is matches


def test_the_verifier_really_checks_the_name(pki: LabPKI, verifier: NativeVerifier) -> None:
    chain = (pki.issue_leaf("a.lab.test").der, pki.intermediate.der)
    assert _openssl_accepts(verifier, chain, "a.lab.test", partial=False)
    assert not _openssl_accepts(verifier, chain, "b.lab.test", partial=False)


def test_why_a_wildcard_only_curl_takes_does_not_cover_the_name(pki: LabPKI) -> None:
    said = {
        pattern: match_name(pki.issue_leaf(pattern).cert, parse_expected_name(name))
        for pattern, name in [("*.lab.test", "a_b.lab.test"), ("*.a_b.lab.test", "x.a_b.lab.test")]
    }
    assert said["*.lab.test"] == (
        False,
        "a_b.lab.test not among the certificate's DNS SANs (*.lab.test); OpenSSL lets wildcard *.lab.test stand for "
        "letters, digits and hyphens only (curl accepts it)",
    )
    assert said["*.a_b.lab.test"][1].endswith(
        "OpenSSL takes *.a_b.lab.test for a literal name, not a wildcard (curl accepts it)"
    )


def test_an_ipv6_zone_is_no_part_of_the_name_checked() -> None:
    assert str(parse_expected_name("fe80::1%eth0")) == "fe80::1"
    assert str(parse_expected_name("[::1%1]")) == "::1"


@pytest.mark.parametrize(
    ("name", "encoded"),
    [
        ("bücher.lab.test", "xn--bcher-kva.lab.test"),
        ("straße.lab.test", "xn--strae-oqa.lab.test"),  # IDNA 2008, as curl and browsers; IDNA 2003 says "strasse"
        ("BÜCHER.Lab.Test", "xn--bcher-kva.lab.test"),
        ("a_b.bücher.test", "a_b.xn--bcher-kva.test"),
        ("☃.lab.test", "xn--n3h.lab.test"),  # a symbol IDNA 2008 refuses: IDNA 2003, as before
    ],
)
def test_internationalized_names_become_the_a_labels_curl_sends(name: str, encoded: str) -> None:
    assert a_labels(name) == encoded
    assert parse_expected_name(name).dns == encoded
