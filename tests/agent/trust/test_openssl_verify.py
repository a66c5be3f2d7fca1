"""The offline store verdict is OpenSSL's: for every chain shape, the code `verify_chain` keeps equals the
first error the real `openssl verify` prints for the same certificates, at the agent's time and at
reference times before and after it.

The command is `openssl verify -no-CApath -no-CAstore -purpose sslserver -auth_level L -CAfile root.pem
[-untrusted chain.pem] [-verify_hostname N | -verify_ip IP] -attime T leaf.pem`: the store alone (the
command otherwise adds the default CApath and store), as a TLS client checks its server, at the host's
security level L.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tlsfleet.agent.model import Verdict
from tlsfleet.agent.trust import libcrypto
from tlsfleet.agent.trust.certinfo import fingerprint
from tlsfleet.agent.trust.verify import judge_against_stores, verdict_from_openssl_code, verify_chain

from .chains import NOW, Cert, ec_key, issue, loaded_store, openssl_cli, openssl_skip_reason, openssl_verify, rsa_key

pytestmark = pytest.mark.skipif(openssl_cli() is None, reason=openssl_skip_reason())


@dataclass(frozen=True)
class Case:
    leaf: Cert
    untrusted: tuple[Cert, ...]
    roots: tuple[Cert, ...]
    name: str
    code_now: int  # what OpenSSL says at NOW (documents the table; OpenSSL itself is the oracle)


def _pki(*, critical: bool = True, root_key: object = None) -> tuple[Cert, Cert]:
    root = issue("Test Root", ca=True, critical=critical, key=root_key)  # type: ignore[arg-type]
    inter = issue("Test Intermediate", root, ca=True, critical=critical)
    return root, inter


def _standard(name: str = "svc.test", **leaf: object) -> Case:
    root, inter = _pki()
    return Case(issue("svc.test", inter, **leaf), (inter,), (root,), name, 0)  # type: ignore[arg-type]


def case_ok_critical() -> Case:
    return _standard()


def case_ok_not_critical() -> Case:
    root, inter = _pki(critical=False)
    return Case(issue("svc.test", inter), (inter,), (root,), "svc.test", 0)


def case_leaf_without_aki() -> Case:
    root, inter = _pki()
    return Case(issue("svc.test", inter, aki=False), (inter,), (root,), "svc.test", 0)


def case_not_critical_and_no_aki() -> Case:
    root, inter = _pki(critical=False)
    return Case(issue("svc.test", inter, aki=False), (inter,), (root,), "svc.test", 0)


def case_expired() -> Case:
    c = _standard(not_before=NOW - timedelta(days=60), not_after=NOW - timedelta(days=1))
    return Case(c.leaf, c.untrusted, c.roots, c.name, 10)


def case_not_yet_valid() -> Case:
    c = _standard(not_before=NOW + timedelta(days=1), not_after=NOW + timedelta(days=60))
    return Case(c.leaf, c.untrusted, c.roots, c.name, 9)


def case_expired_intermediate() -> Case:
    root = issue("Test Root", ca=True)
    old = issue("Old Intermediate", root, ca=True, not_after=NOW - timedelta(days=2))
    return Case(issue("svc.test", old), (old,), (root,), "svc.test", 10)


def case_wrong_host() -> Case:
    c = _standard("other.test")
    return Case(c.leaf, c.untrusted, c.roots, c.name, 62)


def case_wildcard_one_label_too_deep() -> Case:
    root, inter = _pki()
    return Case(issue("*.lab.test", inter), (inter,), (root,), "a.b.lab.test", 62)


def case_partial_wildcard() -> Case:
    root, inter = _pki()
    return Case(issue("web", inter, san=["s*.lab.test"]), (inter,), (root,), "svc.lab.test", 0)


def case_cn_only() -> Case:
    root, inter = _pki()
    return Case(issue("legacy.test", inter, san=[]), (inter,), (root,), "legacy.test", 0)


def case_underscore_name() -> Case:
    root, inter = _pki()
    return Case(issue("my_host.test", inter), (inter,), (root,), "my_host.test", 0)


def case_ip_san() -> Case:
    root, inter = _pki()
    return Case(issue("svc.test", inter, san=["svc.test", "192.0.2.10"]), (inter,), (root,), "192.0.2.10", 0)


def case_ipv6_san() -> Case:
    root, inter = _pki()
    return Case(issue("svc.test", inter, san=["2001:db8::1"]), (inter,), (root,), "2001:db8::1", 0)


def case_ip_mismatch() -> Case:
    root, inter = _pki()
    return Case(issue("svc.test", inter, san=["192.0.2.10"]), (inter,), (root,), "192.0.2.11", 64)


def case_ip_spelled_as_dns() -> Case:
    root, inter = _pki()
    return Case(issue("svc.test", inter, san=["svc.test"]), (inter,), (root,), "192.0.2.10", 64)


def case_sha1_intermediate() -> Case:
    root = issue("Test RSA Root", ca=True, key=rsa_key())
    inter = issue("SHA-1 Intermediate", root, ca=True, digest="sha1")
    return Case(issue("svc.test", inter), (inter,), (root,), "svc.test", 68)


def case_md5_leaf() -> Case:
    root = issue("Test Root", ca=True)
    inter = issue("RSA Intermediate", root, ca=True, key=rsa_key())
    return Case(issue("svc.test", inter, digest="md5"), (inter,), (root,), "svc.test", 68)


def case_sha1_self_signed_root() -> Case:
    # The trust anchor's own signature is never judged: a SHA-1 root is fine.
    key = rsa_key()
    root = issue("SHA-1 Root", ca=True, key=key, digest="sha1")
    inter = issue("Test Intermediate", root, ca=True)
    return Case(issue("svc.test", inter), (inter,), (root,), "svc.test", 0)


def case_rsa1024_ca_key() -> Case:
    root = issue("Test Root", ca=True)
    inter = issue("RSA-1024 Intermediate", root, ca=True, key=rsa_key(1024))
    return Case(issue("svc.test", inter), (inter,), (root,), "svc.test", 67)


def case_rsa1024_leaf_key() -> Case:
    root, inter = _pki()
    return Case(issue("svc.test", inter, key=rsa_key(1024)), (inter,), (root,), "svc.test", 66)


def case_ca_without_basic_constraints() -> Case:
    root = issue("Test Root", ca=True)
    inter = issue("No-BC Intermediate", root, ca=True, basic_constraints=False)
    return Case(issue("svc.test", inter), (inter,), (root,), "svc.test", 79)


def case_root_without_basic_constraints() -> Case:
    root = issue("No-BC Root", ca=True, basic_constraints=False)
    inter = issue("Test Intermediate", root, ca=True)
    return Case(issue("svc.test", inter), (inter,), (root,), "svc.test", 0)


def case_leaf_as_issuer() -> Case:
    root, inter = _pki()
    not_a_ca = issue("not-a-ca.test", inter)
    return Case(issue("svc.test", not_a_ca), (not_a_ca, inter), (root,), "svc.test", 79)


def case_ca_without_key_cert_sign() -> Case:
    root = issue("Test Root", ca=True)
    no_sign = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    inter = issue("No-KeyCertSign Intermediate", root, ca=True, key_usage=no_sign)
    return Case(issue("svc.test", inter), (inter,), (root,), "svc.test", 79)


def case_unhandled_critical_extension() -> Case:
    root, inter = _pki()
    return Case(issue("svc.test", inter, unknown_critical=True), (inter,), (root,), "svc.test", 34)


def case_path_length_violation() -> Case:
    root = issue("Test Root", ca=True)
    upper = issue("Pathlen-0 Intermediate", root, ca=True, path_length=0)
    lower = issue("Lower Intermediate", upper, ca=True)
    return Case(issue("svc.test", lower), (lower, upper), (root,), "svc.test", 25)


def case_leaf_for_clients_only() -> Case:
    root, inter = _pki()
    leaf = issue("svc.test", inter, eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    return Case(leaf, (inter,), (root,), "svc.test", 26)


def case_chain_too_long() -> Case:
    # 101 intermediates in the store: the served chain stays small (it is bounded), the path does not.
    root = issue("Deep Root", ca=True)
    cas = [root]
    for i in range(101):
        cas.append(issue(f"Deep Intermediate {i}", cas[-1], ca=True))
    return Case(issue("svc.test", cas[-1]), (), tuple(cas), "svc.test", 22)


def case_self_signed_leaf() -> Case:
    root, _inter = _pki()
    return Case(issue("svc.test", None, san=["svc.test"]), (), (root,), "svc.test", 18)


def case_self_signed_leaf_trusted() -> Case:
    leaf = issue("svc.test", None, san=["svc.test"])
    return Case(leaf, (), (leaf,), "svc.test", 0)


def case_untrusted_root_served() -> Case:
    root, _inter = _pki()
    other_root, other_inter = _pki()
    return Case(issue("svc.test", other_inter), (other_inter, other_root), (root,), "svc.test", 19)


def case_missing_intermediate() -> Case:
    root, inter = _pki()
    return Case(issue("svc.test", inter), (), (root,), "svc.test", 20)


def case_wrong_intermediate_served() -> Case:
    root, inter = _pki()
    _other_root, other_inter = _pki()
    return Case(issue("svc.test", inter), (other_inter,), (root,), "svc.test", 20)


def case_same_name_other_key() -> Case:
    root, _inter = _pki()
    _twin_root, twin_inter = _pki()  # same names, other keys: a private CA re-created
    return Case(issue("svc.test", twin_inter), (twin_inter,), (root,), "svc.test", 20)


def case_store_holds_intermediate_only() -> Case:
    _root, inter = _pki()
    return Case(issue("svc.test", inter), (), (inter,), "svc.test", 2)


def case_bad_signature() -> Case:
    root, inter = _pki()
    impostor = Cert(inter.cert, ec_key())  # the intermediate's name and key id, another key signs
    leaf = issue("svc.test", impostor, aki_from=inter.key)
    return Case(leaf, (inter,), (root,), "svc.test", 7)


def case_empty_store() -> Case:
    _root, inter = _pki()
    return Case(issue("svc.test", inter), (inter,), (), "svc.test", 20)


CASES: dict[str, Callable[[], Case]] = {
    name.removeprefix("case_"): fn for name, fn in sorted(globals().items()) if name.startswith("case_")
}
# Agent time, a reference time three weeks back (leaves not yet valid) and 45 days on (leaves expired).
TIMES = {"now": NOW, "ref_past": NOW - timedelta(days=20), "ref_future": NOW + timedelta(days=45)}


def _ours(case: Case, at: datetime) -> int:
    chain = (case.leaf.der, *(c.der for c in case.untrusted))
    return verify_chain(chain, loaded_store(case.roots), case.name, at).code


@pytest.fixture(scope="module")
def cases() -> dict[str, Case]:
    return {name: make() for name, make in CASES.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_code_equals_openssl_verify(name: str, cases: dict[str, Case], tmp_path: Path) -> None:
    case = cases[name]
    level = libcrypto.security_level()
    for label, at in TIMES.items():
        cli = openssl_verify(tmp_path / label, case.leaf, case.untrusted, case.roots, case.name, at, level)
        ours = _ours(case, at)
        assert ours == cli.code, f"{name} at {label}: ours {ours}, openssl {cli.code} ({cli.command})"
        if label == "now":
            assert cli.code == case.code_now, f"{name}: openssl says {cli.code} now, the table says {case.code_now}"


def test_agent_and_reference_codes_are_kept_beside_the_verdicts(cases: dict[str, Case], tmp_path: Path) -> None:
    case = cases["ok_critical"]
    chain = (case.leaf.der, *(c.der for c in case.untrusted))
    (v,) = judge_against_stores(chain, (loaded_store(case.roots),), case.name, NOW, TIMES["ref_future"])
    assert (v.at_agent_time, v.verify_code) == (Verdict.OK, 0)
    assert (v.at_reference_time, v.reference_verify_code) == (Verdict.EXPIRED, 10)
    path = (case.leaf, *case.untrusted, *case.roots)
    assert v.verified_path == tuple(fingerprint(c.der) for c in path)
    level = libcrypto.security_level()
    ref = openssl_verify(tmp_path, case.leaf, case.untrusted, case.roots, case.name, TIMES["ref_future"], level)
    assert ref.code == v.reference_verify_code


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_validity_edges_to_the_second(offset: int, cases: dict[str, Case], tmp_path: Path) -> None:
    """OpenSSL treats a certificate as valid from notBefore and expired from notAfter on; the cache never
    carries a verdict across either edge."""
    case = cases["ok_critical"]
    level = libcrypto.security_level()
    for edge in (case.leaf.cert.not_valid_before_utc, case.leaf.cert.not_valid_after_utc):
        at = edge + timedelta(seconds=offset)
        cli = openssl_verify(tmp_path, case.leaf, case.untrusted, case.roots, case.name, at, level)
        assert _ours(case, at) == cli.code, f"{at.isoformat()}: openssl {cli.code}"


def test_weak_digest_is_not_a_bad_signature(cases: dict[str, Case]) -> None:
    sha1 = cases["sha1_intermediate"]
    j = verify_chain((sha1.leaf.der, *(c.der for c in sha1.untrusted)), loaded_store(sha1.roots), sha1.name, NOW)
    assert (j.verdict, j.code) == (Verdict.INVALID, 68)
    assert "SHA-1" in j.detail and "too weak" in j.detail and "security level" in j.detail
    bad = cases["bad_signature"]
    j = verify_chain((bad.leaf.der, *(c.der for c in bad.untrusted)), loaded_store(bad.roots), bad.name, NOW)
    assert (j.verdict, j.code) == (Verdict.INVALID, 7)
    assert "signature" in j.detail and "does not verify" in j.detail


def test_weak_digest_accepted_below_its_security_level(cases: dict[str, Case]) -> None:
    """At level 0 OpenSSL takes SHA-1; the same call the verdicts use, with the level spelled out."""
    case = cases["sha1_intermediate"]
    store = libcrypto.X509Store([r.der for r in case.roots])
    at = int(NOW.timestamp())
    untrusted = [c.der for c in case.untrusted]
    assert libcrypto.verify(store, case.leaf.der, untrusted, at=at, host="svc.test", auth_level=0).code == 0
    assert libcrypto.verify(store, case.leaf.der, untrusted, at=at, host="svc.test", auth_level=1).code == 68


@pytest.mark.parametrize(
    ("name", "verdict"),
    [
        ("missing_intermediate", Verdict.LEAF_ONLY_UNVERIFIABLE),  # OpenSSL's 20 for a lone leaf
        ("wrong_intermediate_served", Verdict.UNKNOWN_ISSUER),
        ("store_holds_intermediate_only", Verdict.UNKNOWN_ISSUER),
        ("self_signed_leaf", Verdict.SELF_SIGNED),
        ("untrusted_root_served", Verdict.UNTRUSTED_ROOT),
        ("chain_too_long", Verdict.INVALID),
        ("unhandled_critical_extension", Verdict.INVALID),
        ("path_length_violation", Verdict.INVALID),
        ("ca_without_basic_constraints", Verdict.INVALID),
        ("rsa1024_ca_key", Verdict.INVALID),
        ("wrong_host", Verdict.HOSTNAME_MISMATCH),
        ("ip_mismatch", Verdict.IP_MISMATCH),
        ("expired", Verdict.EXPIRED),
        ("not_yet_valid", Verdict.NOT_YET_VALID),
    ],
)
def test_verdict_follows_the_code(name: str, verdict: Verdict, cases: dict[str, Case]) -> None:
    case = cases[name]
    j = verify_chain((case.leaf.der, *(c.der for c in case.untrusted)), loaded_store(case.roots), case.name, NOW)
    assert j.verdict is verdict, j
    if verdict is not Verdict.LEAF_ONLY_UNVERIFIABLE:
        assert verdict_from_openssl_code(j.code) is verdict
    assert j.detail
    assert j.verified_path == () or j.code not in (2, 18, 19, 20, 21, 22)


def test_details_name_the_certificate(cases: dict[str, Case]) -> None:
    def detail(name: str) -> str:
        c = cases[name]
        return verify_chain((c.leaf.der, *(x.der for x in c.untrusted)), loaded_store(c.roots), c.name, NOW).detail

    assert "Pathlen-0 Intermediate" in detail("path_length_violation")
    assert "1.3.6.1.4.1.55555.1.1" in detail("unhandled_critical_extension")
    assert "RSA 1024" in detail("rsa1024_ca_key")
    assert "RSA 1024" in detail("rsa1024_leaf_key")
    assert "not a CA" in detail("ca_without_basic_constraints")
    assert "not self-signed" in detail("store_holds_intermediate_only")
    assert "only the leaf" in detail("missing_intermediate")
    assert "store holds no certificates" in detail("empty_store")
    assert "depth limit" in detail("chain_too_long")


_SECLEVEL_PROBE = """
import sys
from datetime import UTC, datetime
from tlsfleet.agent.trust import libcrypto
from tlsfleet.agent.trust.verify import verify_chain
from tests.agent.trust.chains import issue, loaded_store, rsa_key
now = datetime.now(UTC)
root = issue("Root", ca=True)
inter = issue("RSA-1024 Intermediate", root, ca=True, key=rsa_key(1024))
leaf = issue("svc.test", inter)
j = verify_chain((leaf.der, inter.der), loaded_store((root,)), "svc.test", now)
print(libcrypto.security_level(), j.code)
"""


@pytest.mark.parametrize(("level", "code"), [(1, 0), (2, 67)])
def test_the_host_security_level_comes_from_the_openssl_configuration(level: int, code: int, tmp_path: Path) -> None:
    """SECLEVEL in the OpenSSL configuration decides (Python's own context would say 2 either way)."""
    import subprocess
    import sys

    conf = tmp_path / "openssl.cnf"
    conf.write_text(
        "openssl_conf = default_conf\n[default_conf]\nssl_conf = ssl_sect\n[ssl_sect]\n"
        "system_default = system_default_sect\n[system_default_sect]\n"
        f"CipherString = DEFAULT@SECLEVEL={level}\n"
    )
    root_dir = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-c", _SECLEVEL_PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=root_dir,
        env={"OPENSSL_CONF": str(conf), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(root_dir)},
    )
    assert done.stdout.split() == [str(level), str(code)], done.stderr
