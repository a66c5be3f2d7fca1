"""The chain's shape from evidence: the stores' verified paths and the certificates agents saw decide
whether what the server did not send is a root (a trust question) or an intermediate (an incomplete chain).

Store verdicts are OpenSSL's own (tests/judged.py).
"""

from __future__ import annotations

import pytest

from tests.judged import NAME, der, judged, store
from tests.outcomes import observe
from tlsfleet.agent.model import AiaFetch, Verdict
from tlsfleet.agent.trust.certinfo import fingerprint, summarize
from tlsfleet.coordinator.diagnosis.chain import findings as chain_findings
from tlsfleet.coordinator.diagnosis.chain_shape import Shape, shape_of
from tlsfleet.coordinator.diagnosis.engine import diagnose
from tlsfleet.coordinator.diagnosis.model import Cause, Finding, Severity
from tlsfleet.coordinator.lab.pki import Issued, LabPKI
from tlsfleet.coordinator.observation import DiagnosisSettings, Observation

AIA = "http://pki.acme.test/policy-ca.der"


def _chain(obs: Observation) -> list[Finding]:
    return list(chain_findings(obs, DiagnosisSettings.for_request(obs.request)))


def _causes(obs: Observation) -> list[tuple[Cause, Severity]]:
    return [(f.cause, f.severity) for f in diagnose(obs)]


def _evidence(finding: Finding, name: str) -> dict[str, str]:
    return dict(next(e for e in finding.evidence if e.field == name).values)


@pytest.fixture
def pki() -> LabPKI:
    return LabPKI("Acme Internal")


# --- a leaf issued by the root itself (mkcert, small internal CAs) ---------------------------------


def _mkcert(pki: LabPKI) -> tuple[bytes, ...]:
    return (pki.issue_leaf(NAME, issuer=pki.root).der,)


def test_leaf_from_a_root_every_host_trusts_is_quiet(pki: LabPKI) -> None:
    chain = _mkcert(pki)
    trusting = [store("system", [pki.root.cert])]
    obs = observe(judged("dev-1", chain, trusting), judged("dev-2", chain, trusting))
    [path] = {v[2] for v in _store_paths(obs)}
    assert len(path) == 2, "OpenSSL's path: the leaf, then the root that issued it"
    assert diagnose(obs) == ()


def test_leaf_from_a_root_some_hosts_lack_is_a_trust_question(pki: LabPKI) -> None:
    chain = _mkcert(pki)
    obs = observe(
        judged("dev-1", chain, [store("system", [pki.root.cert])]),
        judged("dev-2", chain, [store("system", [pki.root.cert])]),
        judged("ci-1", chain, [store("system", [LabPKI("Public").root.cert])]),
    )
    found = diagnose(obs)
    assert [(f.cause, f.agents) for f in found] == [(Cause.PRIVATE_CA_NOT_TRUSTED, ("ci-1",))]
    assert "'CN=Acme Internal Root CA'" in found[0].summary
    assert "the other 2 vantages trust it" in found[0].summary


def test_leaf_from_a_root_nobody_trusts_stays_an_incomplete_chain(pki: LabPKI) -> None:
    """No store verified it and no vantage saw the issuer: nothing says it is a root, so the usual reading
    stands (public CAs never sign leaves from a root), with the way out if it is one."""
    chain = _mkcert(pki)
    obs = observe(judged("a", chain, [store("system", [LabPKI("Public").root.cert])]))
    [finding] = _chain(obs)
    assert finding.cause is Cause.INCOMPLETE_CHAIN and "itself a root" in finding.fix


# --- a certificate missing in the middle of a longer hierarchy --------------------------------------


class Hierarchy:
    """root -> policy CA -> issuing CA -> leaf; the server sends the leaf and the issuing CA only."""

    def __init__(self, pki: LabPKI) -> None:
        self.pki = pki
        self.policy: Issued = pki.issue_intermediate("Acme Policy CA")
        self.issuing: Issued = pki.issue_intermediate("Acme Issuing CA", issuer=self.policy, aia_ca_issuers_url=AIA)
        self.leaf = pki.issue_leaf(NAME, issuer=self.issuing)
        self.served = (self.leaf.der, self.issuing.der)


def test_missing_policy_ca_fetched_from_aia_is_an_incomplete_chain_not_an_untrusted_one(pki: LabPKI) -> None:
    h = Hierarchy(pki)
    trusting = [store("system", [pki.root.cert])]
    fetched = AiaFetch(url=AIA, fetched=True, certificate=h.policy.der, completes_chain=True, verdict=Verdict.OK)
    obs = observe(judged("web-1", h.served, trusting), judged("web-2", h.served, trusting, aia=fetched))
    found = diagnose(obs)
    assert [f.cause for f in found] == [Cause.INCOMPLETE_CHAIN]
    [finding] = found
    assert finding.severity is Severity.CRITICAL and finding.agents == ("web-1", "web-2")
    aki = summarize(h.issuing.der).authority_key_id
    assert "serves the chain up to 'CN=Acme Issuing CA'" in finding.summary
    assert f"'CN=Acme Policy CA' (key id {aki})" in finding.summary
    assert (
        "returns the missing certificate and completes the chain"
        in _evidence(finding, "AIA caIssuers")[f"'CN=Acme Issuing CA' (sha256 {fingerprint(h.issuing.der)[:12]})"]
    )
    assert AIA in finding.fix and "itself a root" not in finding.fix


def test_missing_policy_ca_a_store_holds_is_an_incomplete_chain(pki: LabPKI) -> None:
    """The hosts that verify have the policy CA in their store: serving it is the fix, not the trust stores."""
    h = Hierarchy(pki)
    holds = [store("system", [pki.root.cert, h.policy.cert])]
    obs = observe(judged("old-1", h.served, holds), judged("new-1", h.served, [store("system", [pki.root.cert])]))
    found = diagnose(obs)
    assert [(f.cause, f.severity, f.agents) for f in found] == [(Cause.INCOMPLETE_CHAIN, Severity.CRITICAL, ("new-1",))]
    held = _evidence(found[0], "issuer held by a trust store")
    assert held == {"old-1@10.0.0.1": f"sha256 {fingerprint(h.policy.der)[:12]} from the store system"}
    assert "the other vantage holds that certificate in a trust store" in found[0].summary


def test_missing_policy_ca_every_store_holds_is_a_warning(pki: LabPKI) -> None:
    h = Hierarchy(pki)
    holds = [store("system", [pki.root.cert, h.policy.cert])]
    [finding] = diagnose(observe(judged("a", h.served, holds), judged("b", h.served, holds)))
    assert (finding.cause, finding.severity) == (Cause.INCOMPLETE_CHAIN, Severity.WARNING)
    assert "every vantage still verifies it only because their trust stores hold that certificate" in finding.summary


def test_missing_policy_ca_without_any_evidence_reads_as_an_unsent_root(pki: LabPKI) -> None:
    """Nobody holds it, nobody fetched it: an intermediate's unseen issuer is taken as the root, and the fix
    says what to do if it is an intermediate after all."""
    h = Hierarchy(pki)
    [finding] = _chain(observe(judged("a", h.served, [store("system", [pki.root.cert])])))
    assert finding.cause is Cause.UNTRUSTED_CHAIN
    assert "the server must serve it too" in finding.fix


# --- an unrelated certificate in a complete chain ---------------------------------------------------


def test_unrelated_certificate_in_a_complete_chain_is_an_info_note(pki: LabPKI) -> None:
    stale = LabPKI("Old Vendor").intermediate
    chain = (pki.issue_leaf(NAME).der, pki.intermediate.der, stale.der)
    stores = [store("system", [pki.root.cert])]
    obs = observe(judged("a", chain, stores), judged("b", chain, stores))
    found = diagnose(obs)
    assert [(f.cause, f.severity) for f in found] == [(Cause.UNRELATED_CERTIFICATE, Severity.INFO)]
    assert "'CN=Old Vendor Intermediate CA'" in found[0].summary
    assert "Remove" in found[0].fix


# --- shape_of from paths ----------------------------------------------------------------------------


def test_shape_of_reads_the_paths_the_stores_verified(pki: LabPKI) -> None:
    h = Hierarchy(pki)
    leaf, issuing = summarize(h.leaf.der), summarize(h.issuing.der)
    root_fp, policy_fp = fingerprint(pki.root.der), fingerprint(h.policy.der)
    direct = shape_of([summarize(pki.issue_leaf(NAME, issuer=pki.root).der)], [], [])
    assert direct is not None and direct.shape is Shape.MISSING_ISSUER and not direct.issuer_known
    mk = pki.issue_leaf(NAME, issuer=pki.root)
    anchored = shape_of([summarize(mk.der)], [], [(fingerprint(mk.der), root_fp)])
    assert anchored is not None and anchored.shape is Shape.ROOT_NOT_SERVED and anchored.anchor == root_fp
    through = shape_of([leaf, issuing], [], [(leaf.sha256, issuing.sha256, policy_fp, root_fp)])
    assert through is not None and through.shape is Shape.MISSING_ISSUER and through.held == (policy_fp,)
    # A path for another chain says nothing about this one.
    other = shape_of([leaf, issuing], [], [("0" * 64, issuing.sha256, root_fp)])
    assert other is not None and other.shape is Shape.ROOT_NOT_SERVED and not other.issuer_known


def _store_paths(obs: Observation) -> list[tuple[str, Verdict, tuple[str, ...]]]:
    return [(s.store, s.at_agent_time, s.verified_path) for r in obs.rows for s in r.address.stores]


def test_every_store_verdict_here_is_openssls(pki: LabPKI) -> None:
    """The recordings above carry what OpenSSL says: a lone leaf from an unknown issuer is 20 (leaf only)."""
    chain = _mkcert(pki)
    obs = observe(judged("a", chain, [store("system", [LabPKI("Public").root.cert])]))
    assert _store_paths(obs) == [("system", Verdict.LEAF_ONLY_UNVERIFIABLE, ())]
    assert obs.rows[0].address.native.verify_code == 20
    assert der(pki.root.cert) == pki.root.der
