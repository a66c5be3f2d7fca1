"""A judgement made for one name serves another only where OpenSSL would conclude the same: the same chain,
store and time judged for name A and then for name B gives exactly what B gets from empty caches, for chains
that fail before OpenSSL checks the name, after it, or not at all; and a second name the leaf covers costs no
second X509_verify_cert."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from tlsfleet.agent.model import Verdict
from tlsfleet.agent.trust import libcrypto, verify
from tlsfleet.agent.trust.stores import LoadedStore
from tlsfleet.agent.trust.verify import NativeCheck, NativeVerifier, clear_caches, judge_against_stores, verify_chain
from tlsfleet.coordinator.lab.pki import LabPKI, chain_pem, write_pem

from .chains import NOW, Cert, count_verifications, issue, loaded_store, rsa_key

ROOT = issue("Names Root", key=rsa_key(), ca=True)
INTERMEDIATE = issue("Names Intermediate", ROOT, key=rsa_key(), ca=True)
OTHER_ROOT = issue("Other Root", ca=True)
LAX_ROOT = issue("Lax Root", ca=True, critical=False)
LAX_INTERMEDIATE = issue("Lax Intermediate", LAX_ROOT, ca=True, critical=False)
WILDCARD = ["*.lab.test", "lab.test"]


def _from(issuer: Cert, **knobs: object) -> Cert:
    return issue("svc.lab.test", issuer, **({"san": WILDCARD} | knobs))  # type: ignore[arg-type]


Case = tuple[tuple[bytes, ...], tuple[Cert, ...]]


def _cases() -> dict[str, Case]:
    """Served chain (DER, leaf first) and store roots, for each fault the verification can find."""
    chain = {
        "ok": (_from(INTERMEDIATE), INTERMEDIATE),
        "expired": (_from(INTERMEDIATE, not_before=NOW - timedelta(days=20), not_after=NOW - timedelta(days=2)),),
        "not yet valid": (_from(INTERMEDIATE, not_before=NOW + timedelta(days=2)),),
        "cn only": (issue("cn.lab.test", INTERMEDIATE, san=[]),),
        "ip and name": (_from(INTERMEDIATE, san=["127.0.0.1", "::1", "host.lab.test"]),),
        "partial wildcard": (_from(INTERMEDIATE, san=["a*.lab.test"]),),
        "underscore": (_from(INTERMEDIATE, san=["*.lab.test", "a_b.lab.test", "c.lab.test"]),),
        # Both profiles take the listed name; only OpenSSL's the partial wildcard: the notes differ by name.
        "listed and partial": (_from(INTERMEDIATE, san=["a.lab.test", "b*.lab.test"]),),
        "weak leaf key": (_from(INTERMEDIATE, key=rsa_key(1024)),),
        "not for servers": (_from(INTERMEDIATE, eku=[ExtendedKeyUsageOID.CLIENT_AUTH]),),
        "unknown critical": (_from(INTERMEDIATE, unknown_critical=True),),
    }
    cases: dict[str, Case] = {name: ((leaf.der, INTERMEDIATE.der), (ROOT,)) for name, (leaf, *_) in chain.items()}
    weak_ca = issue("Weak Intermediate", ROOT, key=rsa_key(1024), ca=True)
    sha1_ca = issue("SHA-1 Intermediate", ROOT, key=rsa_key(), ca=True, digest="sha1")
    not_a_ca = issue("Not A CA", ROOT, ca=False, san=[])
    lax_leaf = issue("svc.lab.test", LAX_INTERMEDIATE, san=WILDCARD, aki=False)
    self_signed = issue("svc.lab.test", san=WILDCARD)
    more: dict[str, Case] = {
        "no intermediate": ((_from(INTERMEDIATE).der,), (ROOT,)),
        "untrusted root": ((_from(INTERMEDIATE).der, INTERMEDIATE.der), (OTHER_ROOT,)),
        "served untrusted root": ((_from(INTERMEDIATE).der, INTERMEDIATE.der, ROOT.der), (OTHER_ROOT,)),
        "self-signed": ((self_signed.der,), (ROOT,)),
        "weak CA key": ((_from(weak_ca).der, weak_ca.der), (ROOT,)),
        "SHA-1 CA": ((_from(sha1_ca).der, sha1_ca.der), (ROOT,)),
        "invalid CA": ((_from(not_a_ca).der, not_a_ca.der), (ROOT,)),
        "lax profile": ((lax_leaf.der, LAX_INTERMEDIATE.der), (LAX_ROOT,)),
    }
    return cases | more


CASES = _cases()
NAMES = [
    "a.lab.test",
    "b.lab.test",
    "lab.test",
    "a.b.lab.test",
    "ab.lab.test",
    "a_b.lab.test",
    "c.lab.test",
    "bx.lab.test",
    "other.test",
    "cn.lab.test",
    "host.lab.test",
    "127.0.0.1",
    "::1",
]
FIRST_NAMES = ["a.lab.test", "127.0.0.1", "other.test", "cn.lab.test", "ab.lab.test"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_name_judged_after_another_is_judged_as_from_cold(case: str) -> None:
    chain, roots = CASES[case]
    store = loaded_store(roots, case.replace(" ", "-"))
    cold = {}
    for name in NAMES:
        clear_caches()
        cold[name] = verify_chain(chain, store, name, NOW)
    for first in FIRST_NAMES:
        clear_caches()
        verify_chain(chain, store, first, NOW)
        for name in NAMES:
            assert verify_chain(chain, store, name, NOW) == cold[name], (case, first, name)
    clear_caches()


# Each case's own store, one that trusts another root, and one of the lax profile's: a probe's stores, which
# reach the name check, stop before it, or accept, in one set of verdicts.
def _probe_stores(case: str) -> tuple[LoadedStore, ...]:
    return (
        loaded_store(CASES[case][1], case.replace(" ", "-")),
        loaded_store((OTHER_ROOT,), "other"),
        loaded_store((LAX_ROOT,), "lax"),
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_probes_verdicts_for_a_name_after_another_are_its_verdicts_from_cold(case: str) -> None:
    chain = CASES[case][0]
    stores = _probe_stores(case)
    later = NOW + timedelta(minutes=5)  # the reference time: a second time, judged in the same span
    cold = {}
    for name in NAMES:
        clear_caches()
        cold[name] = judge_against_stores(chain, stores, name, NOW, later)
    for first in FIRST_NAMES:
        clear_caches()
        judge_against_stores(chain, stores, first, NOW, later)
        for name in NAMES:
            assert judge_against_stores(chain, stores, name, NOW, later) == cold[name], (case, first, name)
    clear_caches()


def test_a_probes_verdicts_serve_a_covered_name_without_judging_each_store(monkeypatch: pytest.MonkeyPatch) -> None:
    chain = CASES["ok"][0]
    stores = _probe_stores("ok")
    clear_caches()
    judged: list[str] = []
    real = verify.verify_chain

    def counting(chain: tuple[bytes, ...], store: LoadedStore, name: str, at: datetime) -> verify.ChainJudgement:
        judged.append(store.info.name)
        return real(chain, store, name, at)

    monkeypatch.setattr(verify, "verify_chain", counting)
    first = judge_against_stores(chain, stores, "a.lab.test", NOW, None)
    assert [v.at_agent_time for v in first] == [Verdict.OK, Verdict.UNKNOWN_ISSUER, Verdict.UNKNOWN_ISSUER]
    assert len(judged) == 3
    assert judge_against_stores(chain, stores, "b.lab.test", NOW, None) == first
    assert len(judged) == 3, "a name the leaf covers took the first name's verdicts"
    other = judge_against_stores(chain, stores, "other.test", NOW, None)
    assert other[0].verify_code == 62 and len(judged) == 6, "a name it does not cover was judged at every store"
    clear_caches()


def test_the_cases_reach_every_kind_of_outcome() -> None:
    """The property above is worth only the outcomes it meets: before the name check, at it, after it."""
    codes = set()
    for chain, roots in CASES.values():
        store = loaded_store(roots)
        codes |= {verify_chain(chain, store, name, NOW).code for name in NAMES}
    clear_caches()
    expected = {0, 9, 10, 18, 19, 20, 26, 34, 79, 62, 64}
    if libcrypto.security_level() >= 2:
        expected |= {66, 67, 68}
    assert expected <= codes, sorted(expected - codes)
    strict = loaded_store(CASES["lax profile"][1])
    assert verify_chain(CASES["lax profile"][0], strict, "a.lab.test", NOW).strict_note


def test_a_covered_name_costs_no_second_verification(monkeypatch: pytest.MonkeyPatch) -> None:
    chain, roots = CASES["ok"]
    store = loaded_store(roots)
    clear_caches()
    seen = count_verifications(monkeypatch)
    assert verify_chain(chain, store, "a.lab.test", NOW).code == 0
    assert verify_chain(chain, store, "b.lab.test", NOW).code == 0
    assert verify_chain(chain, store, "lab.test", NOW).code == 0
    assert len(seen) == 1
    assert verify_chain(chain, store, "other.test", NOW).code == 62  # not covered: OpenSSL is asked
    assert len(seen) == 2
    clear_caches()


def test_the_profile_is_asked_again_only_where_its_name_check_may_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    real = verify.strict_note

    def counting(path: object, intermediates: object, store: object, expected: object, at: object) -> str:
        asked.append(str(expected))
        return real(path, intermediates, store, expected, at)  # type: ignore[arg-type]

    monkeypatch.setattr(verify, "strict_note", counting)
    chain, roots = CASES["listed and partial"]
    store = loaded_store(roots)
    clear_caches()
    for name in ("a.lab.test", "bx.lab.test", "by.lab.test"):
        verify_chain(chain, store, name, NOW)
    # bx after a: a is listed as written; by after bx: the profile refused bx, and its note names the name.
    assert asked == ["a.lab.test", "bx.lab.test", "by.lab.test"]
    chain, roots = CASES["ok"]
    store = loaded_store(roots)
    asked.clear()
    for name in ("a.lab.test", "b.lab.test", "c.lab.test", "lab.test"):
        verify_chain(chain, store, name, NOW)
    assert asked == ["a.lab.test", "lab.test"]  # b and c: only "*.lab.test" covers them, as it covers a
    clear_caches()


def test_a_fault_found_before_the_name_holds_for_every_name(monkeypatch: pytest.MonkeyPatch) -> None:
    no_path, roots = CASES["no intermediate"]
    expired, _ = CASES["expired"]
    store = loaded_store(roots)
    clear_caches()
    seen = count_verifications(monkeypatch)
    assert {verify_chain(no_path, store, n, NOW).code for n in ("a.lab.test", "other.test")} == {20}
    assert len(seen) == 1
    # Expiry is found after the name: a name the leaf does not cover is a mismatch first, and is asked.
    assert verify_chain(expired, store, "a.lab.test", NOW).code == 10
    assert verify_chain(expired, store, "b.lab.test", NOW).code == 10
    assert len(seen) == 2
    assert verify_chain(expired, store, "other.test", NOW).code == 62
    assert len(seen) == 3
    clear_caches()


@pytest.fixture(scope="module")
def pki() -> LabPKI:
    return LabPKI("Across Names")


@pytest.fixture
def verifier(pki: LabPKI, tmp_path: Path) -> NativeVerifier:
    roots = write_pem(tmp_path / "roots.pem", chain_pem(pki.root))
    return NativeVerifier(str(roots))


def _counting_client_verifications(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    seen: list[int] = []
    real = verify._verify_as_client

    def counting(*args: object) -> tuple[int, tuple[bytes, ...]]:
        seen.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(verify, "_verify_as_client", counting)
    return seen


def _check(host: str, *, partial: bool = False) -> NativeCheck:
    return NativeCheck(host, libcrypto.security_level(), 0, True, partial)


def test_a_client_acceptance_serves_the_names_its_leaf_covers(
    pki: LabPKI, verifier: NativeVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = (pki.issue_leaf("*.lab.test", "127.0.0.1", "f*.part.test").der, pki.intermediate.der)
    at = int(NOW.timestamp())
    seen = _counting_client_verifications(monkeypatch)
    assert verifier.verify(chain, _check("a.lab.test"), at) == 0
    assert len(seen) == 1
    assert verifier.verify(chain, _check("b.lab.test"), at) == 0
    assert verifier.verify(chain, _check("127.0.0.1"), at) == 0
    assert len(seen) == 1
    assert verifier.verify(chain, _check("other.test"), at) == 62
    assert verifier.verify(chain, _check("127.0.0.2"), at) == 64
    # A partial wildcard: Python's contexts refuse it, OpenSSL's default check takes it; each as asked.
    assert verifier.verify(chain, _check("foo.part.test"), at) == 62
    assert verifier.verify(chain, _check("foo.part.test", partial=True), at) == 0
    assert verifier.verify(chain, _check("a.lab.test", partial=True), at) == 0
    assert len(seen) == 5
    assert verifier.verify(chain, _check("fab.part.test", partial=True), at) == 0
    assert verifier.verify(chain, _check("fab.part.test"), at) == 62
    assert len(seen) == 6
