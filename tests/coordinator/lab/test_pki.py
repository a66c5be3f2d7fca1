"""The lab PKI makes certificates that a real verifier accepts, with the shapes tests rely on."""

from __future__ import annotations

import ipaddress
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID, SignatureAlgorithmOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from tlsfleet.coordinator.lab.ground_truth import openssl_verify
from tlsfleet.coordinator.lab.pki import LabPKI, chain_pem, write_pem


def _verify(pki: LabPKI, leaf: x509.Certificate, name: x509.verification.Subject, at: datetime) -> list:
    verifier = PolicyBuilder().store(Store([pki.root.cert])).time(at).build_server_verifier(name)
    return verifier.verify(leaf, [pki.intermediate.cert])


def test_root_and_intermediate_names_and_ca_extensions() -> None:
    pki = LabPKI("Acme")
    assert pki.root.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Acme Root CA"
    assert pki.root.cert.issuer == pki.root.cert.subject
    inter = pki.intermediate.cert
    assert inter.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Acme Intermediate CA"
    assert inter.issuer == pki.root.cert.subject
    for ca in (pki.root.cert, inter):
        assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
        assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign is True
        ca.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_KEY_IDENTIFIER)
        ca.extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
    inter.verify_directly_issued_by(pki.root.cert)


def test_leaf_chain_verifies_for_dns_and_ip() -> None:
    pki = LabPKI()
    leaf = pki.issue_leaf("svc.lab.test", "127.0.0.1")
    now = datetime.now(UTC)
    path = _verify(pki, leaf.cert, x509.DNSName("svc.lab.test"), now)
    assert [c.subject for c in path] == [
        leaf.cert.subject,
        pki.intermediate.cert.subject,
        pki.root.cert.subject,
    ]
    _verify(pki, leaf.cert, x509.IPAddress(ipaddress.ip_address("127.0.0.1")), now)
    with pytest.raises(VerificationError):
        _verify(pki, leaf.cert, x509.DNSName("other.lab.test"), now)


def test_leaf_extensions_and_san_types() -> None:
    pki = LabPKI()
    leaf = pki.issue_leaf("a.lab.test", "::1", "127.0.0.2", aia_ca_issuers_url="http://127.0.0.1:1/ca.der")
    ext = leaf.cert.extensions
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["a.lab.test"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("127.0.0.2"),
    ]
    assert ExtendedKeyUsageOID.SERVER_AUTH in ext.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ext.get_extension_for_class(x509.KeyUsage).value.digital_signature is True
    assert ext.get_extension_for_class(x509.BasicConstraints).value.ca is False
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    ski = pki.intermediate.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert aki == ski
    aia = ext.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [d.access_location.value for d in aia] == ["http://127.0.0.1:1/ca.der"]


def test_validity_windows() -> None:
    pki = LabPKI()
    now = datetime.now(UTC)
    default = pki.issue_leaf("a.lab.test").cert
    assert now - timedelta(hours=2) < default.not_valid_before_utc <= now
    assert now + timedelta(days=89) < default.not_valid_after_utc <= now + timedelta(days=91)

    expired = pki.issue_leaf("a.lab.test", not_before=now - timedelta(days=10), not_after=now - timedelta(days=1))
    with pytest.raises(VerificationError):
        _verify(pki, expired.cert, x509.DNSName("a.lab.test"), now)
    _verify(pki, expired.cert, x509.DNSName("a.lab.test"), now - timedelta(days=2))


def test_cn_only_leaf_has_no_san_and_is_rejected_by_name() -> None:
    pki = LabPKI()
    leaf = pki.issue_leaf("legacy.lab.test", san=False)
    assert leaf.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "legacy.lab.test"
    with pytest.raises(x509.ExtensionNotFound):
        leaf.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    with pytest.raises(VerificationError):
        _verify(pki, leaf.cert, x509.DNSName("legacy.lab.test"), datetime.now(UTC))
    named = pki.issue_leaf("x.lab.test", common_name="Custom CN", san=False)
    assert named.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Custom CN"


def test_custom_issuer_and_self_signed_leaf() -> None:
    pki = LabPKI()
    other = pki.issue_intermediate("Second Intermediate CA")
    leaf = pki.issue_leaf("b.lab.test", issuer=other)
    leaf.cert.verify_directly_issued_by(other.cert)
    direct = pki.issue_leaf("c.lab.test", issuer=pki.root)
    direct.cert.verify_directly_issued_by(pki.root.cert)
    ss = pki.self_signed_leaf("self.lab.test")
    assert ss.cert.issuer == ss.cert.subject
    ss.cert.verify_directly_issued_by(ss.cert)
    assert ss.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_pem_forms_and_write_pem_modes(tmp_path: Path) -> None:
    pki = LabPKI()
    leaf = pki.issue_leaf("a.lab.test")
    assert pki.root_pem().startswith(b"-----BEGIN CERTIFICATE-----")
    assert leaf.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert x509.load_der_x509_certificate(leaf.der) == leaf.cert
    bundle = chain_pem(leaf, pki.intermediate)
    assert x509.load_pem_x509_certificates(bundle) == [leaf.cert, pki.intermediate.cert]

    key_path = write_pem(tmp_path / "leaf.key", leaf.key_pem)
    cert_path = write_pem(tmp_path / "leaf.pem", bundle)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert cert_path.read_bytes() == bundle


def test_pkis_are_independent() -> None:
    a, b = LabPKI("A"), LabPKI("B")
    leaf = a.issue_leaf("a.lab.test")
    with pytest.raises(VerificationError):
        PolicyBuilder().store(Store([b.root.cert])).build_server_verifier(x509.DNSName("a.lab.test")).verify(
            leaf.cert, [a.intermediate.cert]
        )


def test_an_intermediate_signed_with_sha1_keeps_its_identity_and_openssl_refuses_its_digest(tmp_path: Path) -> None:
    pki = LabPKI("Digest")
    sha1 = pki.issue_intermediate("Digest SHA-1 CA", digest="sha1")
    assert sha1.cert.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA1
    assert sha1.cert.subject.rfc4514_string() == "CN=Digest SHA-1 CA" and sha1.cert.issuer == pki.root.cert.subject
    aki = sha1.cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = pki.root.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert sha1.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    leaf = write_pem(tmp_path / "leaf.pem", pki.issue_leaf("sha1.example.test", issuer=sha1).cert_pem)
    untrusted = write_pem(tmp_path / "sha1.pem", sha1.cert_pem)
    root = write_pem(tmp_path / "root.pem", pki.root_pem())
    assert openssl_verify(leaf, untrusted, cafile=str(root), auth_level=1).code == 68
