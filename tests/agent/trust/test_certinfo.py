"""Certificate summaries for tables and diagnosis, from real lab certificates."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from tlsfleet.agent.trust.certinfo import CertificateParseError, fingerprint, parse_der, summarize
from tlsfleet.coordinator.lab.pki import LabPKI


def test_leaf_summary() -> None:
    pki = LabPKI("Info")
    nb = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    leaf = pki.issue_leaf(
        "svc.lab.test",
        "*.svc.lab.test",
        "127.0.0.1",
        "::1",
        not_before=nb,
        not_after=nb + timedelta(days=10),
        aia_ca_issuers_url="http://127.0.0.1:8080/inter.der",
    )
    s = summarize(leaf.der)
    assert s.sha256 == hashlib.sha256(leaf.der).hexdigest() == fingerprint(leaf.der)
    assert s.short_fingerprint == s.sha256[:12] and len(s.short_fingerprint) == 12
    assert s.subject == "CN=svc.lab.test"
    assert s.issuer == "CN=Info Intermediate CA"
    assert s.san_dns == ("svc.lab.test", "*.svc.lab.test")
    assert s.san_ip == ("127.0.0.1", "::1")
    assert s.san == ("svc.lab.test", "*.svc.lab.test", "127.0.0.1", "::1")
    assert s.not_before == nb and s.not_before.tzinfo is not None
    assert s.not_after == nb + timedelta(days=10)
    assert not s.is_self_issued and not s.is_ca
    assert s.aia_ca_issuers == ("http://127.0.0.1:8080/inter.der",)
    assert s.authority_key_id == summarize(pki.intermediate.der).subject_key_id != ""
    assert s.serial == format(leaf.cert.serial_number, "x")


def test_ca_and_self_signed_summaries() -> None:
    pki = LabPKI("Info")
    root = summarize(pki.root.der)
    assert root.is_ca and root.is_self_issued
    assert root.subject == root.issuer == "CN=Info Root CA"
    assert root.aia_ca_issuers == ()
    inter = summarize(pki.intermediate.der)
    assert inter.is_ca and not inter.is_self_issued
    assert inter.authority_key_id == root.subject_key_id
    ss = summarize(pki.self_signed_leaf("self.lab.test").der)
    assert ss.is_self_issued and not ss.is_ca


def test_cn_only_certificate_has_no_sans() -> None:
    s = summarize(LabPKI().issue_leaf("legacy.lab.test", san=False).der)
    assert s.san == () and s.subject == "CN=legacy.lab.test"


def test_summaries_are_cached_by_der() -> None:
    der = LabPKI().issue_leaf("a.lab.test").der
    assert summarize(der) is summarize(bytes(bytearray(der)))
    assert parse_der(der) is parse_der(der)


@pytest.mark.parametrize("bad", [b"", b"not a certificate", b"\x30\x03\x02\x01\x00"])
def test_garbage_raises_a_clear_error(bad: bytes) -> None:
    with pytest.raises(CertificateParseError, match=r"not a DER X\.509 certificate"):
        summarize(bad)
    assert issubclass(CertificateParseError, ValueError)


def test_wrong_type_is_named() -> None:
    with pytest.raises(CertificateParseError, match="expected DER certificate bytes, got str"):
        summarize("MIIB...")  # type: ignore[arg-type]
