"""Trust that differs between hosts for one chain, and between the stores of one host."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tests.outcomes import NOW_NS, address, observe, outcome, silent
from tlsfleet.agent.model import AddressResult, StoreVerdict, TrustStore, Verdict
from tlsfleet.agent.trust.certinfo import fingerprint
from tlsfleet.coordinator.diagnosis.engine import diagnose
from tlsfleet.coordinator.diagnosis.model import Cause, Finding, Severity
from tlsfleet.coordinator.diagnosis.trust import findings
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.observation import DiagnosisSettings, Observation
from tlsfleet.coordinator.outcomes import ProbeOutcome

NAME = "api.example.test"
BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
UNKNOWN = Verdict.UNKNOWN_ISSUER


def _run(obs: Observation) -> list[Finding]:
    return list(findings(obs, DiagnosisSettings.for_request(obs.request)))


def _of(found: list[Finding], cause: Cause) -> list[Finding]:
    return [f for f in found if f.cause is cause]


def _evidence(finding: Finding, name: str) -> dict[str, str]:
    return dict(next(e for e in finding.evidence if e.field == name).values)


def _system(roots: int) -> TrustStore:
    return TrustStore("system", "file", BUNDLE, roots, f"{roots:02x}" * 32)


class Lab:
    """A private PKI, one leaf with its served chain, and the path a trusting store verifies."""

    def __init__(self) -> None:
        self.pki = LabPKI("Acme Internal")
        self.leaf = self.pki.issue_leaf(NAME).der
        self.chain = (self.leaf, self.pki.intermediate.der)
        self.path = (fingerprint(self.leaf), fingerprint(self.pki.intermediate.der), fingerprint(self.pki.root.der))

    def trusting(self, agent: str, ip: str = "10.0.0.1", **stores: Verdict) -> ProbeOutcome:
        row = address(ip, self.chain, stores={"system": Verdict.OK, **stores}, verified_path=self.path)
        return outcome(agent, [row], trust_stores=_identities(_system(141), stores))

    def failing(self, agent: str, ip: str = "10.0.0.1", **stores: Verdict) -> ProbeOutcome:
        row = address(ip, self.chain, native=UNKNOWN, stores={"system": UNKNOWN, **stores})
        return outcome(agent, [row], trust_stores=_identities(_system(140), stores))


def _identities(system: TrustStore, stores: dict[str, Verdict]) -> list[TrustStore]:
    """The host's store identities; a certifi store is pip's own bundle (Mozilla's list), not the host's."""
    identities = [system]
    if "certifi" in stores:
        identities.append(TrustStore("certifi", "file", "/venv/certifi/cacert.pem", 117, "cc" * 32))
    return identities


JAVA_NAMED = "/usr/lib/jvm/java-17/lib/security/cacerts (--runtime java=/usr/lib/jvm/java-17)"


def _declared(outcome_: ProbeOutcome, **found_by: str) -> ProbeOutcome:
    """The outcome with identities for the named stores, found as `found_by` says (a declaration or not)."""
    assert outcome_.result is not None
    kinds = {"java": "java-keystore"}
    added = tuple(
        TrustStore(
            name,
            kinds.get(name.split(":")[0], "file"),
            f"/stores/{name}",
            100,
            "ab" * 32,
            runtime={"certifi": "python", "java": "java"}.get(name.split(":")[0], ""),
            found_by=why,
        )
        for name, why in found_by.items()
    )
    kept = tuple(t for t in outcome_.result.trust_stores if t.name not in found_by)
    return replace(outcome_, result=replace(outcome_.result, trust_stores=kept + added))


@pytest.fixture
def lab() -> Lab:
    return Lab()


# --- PRIVATE_CA_NOT_TRUSTED -----------------------------------------------------------------------


def test_root_missing_on_some_hosts_names_root_hosts_and_stores(lab: Lab) -> None:
    obs = observe(
        lab.trusting("web-1"),
        lab.trusting("web-2"),
        lab.trusting("web-3"),
        lab.failing("billing-1"),
        lab.failing("billing-2"),
    )
    [finding] = _run(obs)
    assert finding.cause is Cause.PRIVATE_CA_NOT_TRUSTED
    assert finding.severity is Severity.CRITICAL
    assert "'CN=Acme Internal Root CA'" in finding.summary
    assert "missing from the trust store of billing-1 and billing-2" in finding.summary
    assert "the other 3 vantages trust it" in finding.summary
    assert finding.agents == ("billing-1", "billing-2")
    stores = _evidence(finding, "trust store")
    assert stores["billing-1"].startswith(f"system {BUNDLE}: 140 roots, sha256 8c8c")
    assert stores["web-1"].startswith(f"system {BUNDLE}: 141 roots, sha256 8d8d")
    roots = _evidence(finding, "verified root")
    assert roots["web-1@10.0.0.1"] == f"CN=Acme Internal Root CA (sha256 {lab.path[-1][:12]})"
    assert "update-ca-certificates" in finding.fix and "billing-1, billing-2" in finding.fix
    assert any(f"-CAfile {BUNDLE}" in cmd for cmd in finding.reproduce)
    assert any("grep -F 'Acme Internal Root CA'" in cmd for cmd in finding.reproduce)


def test_certifi_tells_a_private_root_from_a_public_one(lab: Lab) -> None:
    private = observe(lab.trusting("a", certifi=UNKNOWN), lab.failing("b", certifi=UNKNOWN))
    [finding] = _of(_run(private), Cause.PRIVATE_CA_NOT_TRUSTED)
    assert "The private root" in finding.summary
    public = observe(lab.trusting("a", certifi=Verdict.OK), lab.failing("b", certifi=Verdict.OK))
    [finding] = _of(_run(public), Cause.PRIVATE_CA_NOT_TRUSTED)
    assert "The public root" in finding.summary
    assert "ca-certificates package on b" in finding.fix
    unknown = observe(lab.trusting("a"), lab.failing("b"))
    [finding] = _run(unknown)
    assert finding.summary.startswith("The root ")


def test_a_certifi_that_is_the_host_bundle_says_nothing_about_mozilla(lab: Lab) -> None:
    """Debian's python3-certifi returns the system bundle: it trusting the root does not make the root public."""

    def host_certifi(outcome_: ProbeOutcome) -> ProbeOutcome:
        assert outcome_.result is not None
        system = outcome_.result.trust_stores[0]
        same = TrustStore("certifi", "file", system.path, system.root_count, system.fingerprint)
        return replace(outcome_, result=replace(outcome_.result, trust_stores=(system, same)))

    obs = observe(host_certifi(lab.trusting("a", certifi=Verdict.OK)), host_certifi(lab.failing("b", certifi=UNKNOWN)))
    [finding] = _of(_run(obs), Cause.PRIVATE_CA_NOT_TRUSTED)
    assert "public root" not in finding.summary
    assert "Distribute" in finding.fix


def test_every_host_failing_is_not_a_host_difference(lab: Lab) -> None:
    assert _run(observe(lab.failing("a"), lab.failing("b"))) == []


def test_every_host_trusting_yields_nothing(lab: Lab) -> None:
    assert _run(observe(lab.trusting("a"), lab.trusting("b"), silent("c"))) == []


def test_different_chains_are_not_compared(lab: Lab) -> None:
    other = LabPKI("Other")
    other_chain = (other.issue_leaf(NAME).der, other.intermediate.der)
    obs = observe(
        lab.trusting("a"),
        outcome("b", [address("10.0.0.1", other_chain, native=UNKNOWN, stores={"system": UNKNOWN})]),
    )
    assert _run(obs) == []


def test_missing_intermediate_is_left_to_the_chain_rule(lab: Lab) -> None:
    leaf_only = (lab.leaf,)
    obs = observe(
        # The store holds the intermediate: OpenSSL's path runs through it up to the root.
        outcome("a", [address("10.0.0.1", leaf_only, verified_path=lab.path)]),
        outcome(
            "b", [address("10.0.0.1", leaf_only, native=UNKNOWN, stores={"system": Verdict.LEAF_ONLY_UNVERIFIABLE})]
        ),
    )
    assert _run(obs) == []


def test_self_signed_certificate_trusted_by_some_hosts(lab: Lab) -> None:
    leaf = lab.pki.self_signed_leaf(NAME).der
    obs = observe(
        outcome("pinned", [address("10.0.0.1", (leaf,), verified_path=(fingerprint(leaf),))]),
        outcome("b", [address("10.0.0.1", (leaf,), native=Verdict.SELF_SIGNED)]),
    )
    [finding] = _run(obs)
    assert finding.cause is Cause.PRIVATE_CA_NOT_TRUSTED
    assert f"The self-signed certificate 'CN={NAME}'" in finding.summary
    assert finding.agents == ("b",)


def test_name_or_time_failures_are_not_trust_failures(lab: Lab) -> None:
    mismatch = outcome(
        "b",
        [
            address(
                "10.0.0.1", lab.chain, native=Verdict.HOSTNAME_MISMATCH, stores={"system": Verdict.HOSTNAME_MISMATCH}
            )
        ],
    )
    assert _run(observe(lab.trusting("a"), mismatch)) == []


def test_skewed_host_that_finds_a_path_still_counts_as_trusting(lab: Lab) -> None:
    skewed = outcome(
        "skewed",
        [address("10.0.0.1", lab.chain, native=Verdict.EXPIRED, stores={"system": (Verdict.EXPIRED, Verdict.OK)})],
        offset_ms=400 * 86400e3,
    )
    [finding] = _run(observe(skewed, lab.failing("b")))
    assert finding.agents == ("b",)
    assert "the other vantage trusts it" in finding.summary


def test_silent_vantages_are_not_counted(lab: Lab) -> None:
    [finding] = _run(observe(lab.trusting("a"), lab.failing("b"), silent("gone")))
    assert "gone" not in finding.summary and finding.agents == ("b",)


# --- RUNTIME_STORE_DIFFERS ------------------------------------------------------------------------


def test_certifi_lacking_the_root_names_python_requests_and_the_fix(lab: Lab) -> None:
    certifi = TrustStore(
        "certifi",
        "file",
        "/usr/lib/python3/dist-packages/certifi/cacert.pem",
        150,
        "ee" * 32,
        runtime="python",
        found_by="certifi of /srv/app/bin/python (--runtime python=/srv/app/bin/python)",
    )
    row = address("10.0.0.1", lab.chain, stores={"system": Verdict.OK, "certifi": UNKNOWN}, verified_path=lab.path)
    obs = observe(outcome("app-1", [row], trust_stores=[_system(141), certifi]), lab.trusting("app-2"))
    [finding] = _run(obs)
    assert finding.cause is Cause.RUNTIME_STORE_DIFFERS
    assert finding.severity is Severity.WARNING
    assert finding.agents == ("app-1",)
    assert finding.summary.startswith("On app-1, Python requests (certifi) rejects")
    assert "certifi/cacert.pem" in finding.summary and "'CN=Acme Internal Root CA'" in finding.summary
    assert f"REQUESTS_CA_BUNDLE={BUNDLE}" in finding.fix
    assert any("-CAfile /usr/lib/python3/dist-packages/certifi/cacert.pem" in cmd for cmd in finding.reproduce)


def test_same_runtime_gap_on_several_hosts_is_one_finding(lab: Lab) -> None:
    obs = observe(
        _declared(lab.trusting("a", java=UNKNOWN), java=JAVA_NAMED),
        _declared(lab.trusting("b", java=UNKNOWN), java=JAVA_NAMED),
        lab.trusting("c"),
    )
    [finding] = _run(obs)
    assert finding.agents == ("a", "b")
    assert finding.summary.startswith("On a and b, Java (the system cacerts) rejects")
    assert "keytool -importcert" in finding.fix


def test_a_hosts_runtime_gaps_are_one_finding_naming_each_runtime(lab: Lab) -> None:
    """One finding per host and root, not one per store: the runtimes listed, each one's fix said once."""
    outcome_ = lab.trusting("a", java=UNKNOWN, curl_ca_bundle=UNKNOWN, **{"extra:payments": UNKNOWN})
    obs = observe(_declared(outcome_, java=JAVA_NAMED))
    [finding] = _run(obs)
    assert finding.cause is Cause.RUNTIME_STORE_DIFFERS and finding.severity is Severity.WARNING
    runtimes = finding.summary.split(", ", 1)[1].split(" reject ")[0]
    expected = "Java (the system cacerts), curl (CURL_CA_BUNDLE) and clients configured with the bundle 'payments'"
    assert runtimes == expected
    assert finding.fix.count("keytool -importcert") == 1 and finding.fix.count("CURL_CA_BUNDLE names") == 1


def test_time_failures_in_a_runtime_store_do_not_count(lab: Lab) -> None:
    obs = observe(lab.trusting("a", certifi=Verdict.EXPIRED, java=Verdict.HOSTNAME_MISMATCH))
    assert _run(obs) == []


def test_no_runtime_claim_when_the_system_store_fails_too(lab: Lab) -> None:
    obs = observe(lab.failing("a", certifi=UNKNOWN), lab.failing("b", certifi=UNKNOWN))
    assert _run(obs) == []


def test_node_extra_file_counts_only_for_a_root_outside_mozillas_set(lab: Lab) -> None:
    public = observe(lab.trusting("a", node_extra_ca_certs=UNKNOWN, certifi=Verdict.OK))
    assert _run(public) == []
    unknown = observe(lab.trusting("a", node_extra_ca_certs=UNKNOWN))
    assert _run(unknown) == []
    private = observe(lab.trusting("a", node_extra_ca_certs=UNKNOWN), lab.trusting("b", certifi=UNKNOWN))
    node = [f for f in _run(private) if "Node" in f.summary]
    assert len(node) == 1 and node[0].agents == ("a",)
    assert "--use-openssl-ca" in node[0].fix


def test_certifi_gap_when_requests_uses_another_bundle(lab: Lab) -> None:
    obs = observe(lab.trusting("a", certifi=UNKNOWN, requests_ca_bundle=Verdict.OK))
    [finding] = _run(obs)
    assert finding.summary.startswith("On a, Python code that uses certifi directly")
    assert any("-CAfile /venv/certifi/cacert.pem" in cmd for cmd in finding.reproduce)


def test_runtime_gap_for_a_missing_intermediate_is_left_to_the_chain_rule(lab: Lab) -> None:
    row = address("10.0.0.1", (lab.leaf,), stores={"system": Verdict.OK, "certifi": Verdict.LEAF_ONLY_UNVERIFIABLE})
    assert _run(observe(outcome("a", [row]))) == []


def test_healthy_observation_yields_nothing(lab: Lab) -> None:
    obs = observe(
        lab.trusting("a", certifi=Verdict.OK, java=Verdict.OK),
        lab.trusting("b", certifi=Verdict.OK),
        lab.trusting("c", ip="10.0.0.2"),
        silent("d"),
    )
    assert _run(obs) == []


def test_rows_without_chain_are_ignored() -> None:
    empty: AddressResult = address("10.0.0.1", ())
    assert _run(observe(outcome("a", [empty]), silent("b"))) == []


def test_hosts_served_different_leaves_of_one_ca_share_one_trust_question() -> None:
    """A leaf per backend (or per region): the host lacking the root is named, and no chain is called
    untrusted everywhere because only that host got its leaf."""
    pki = LabPKI("Acme Regional")
    inter, root = fingerprint(pki.intermediate.der), fingerprint(pki.root.der)

    def served(agent: str, verdict: Verdict) -> ProbeOutcome:
        leaf = pki.issue_leaf(NAME).der
        path = (fingerprint(leaf), inter, root)
        return outcome(agent, [address("10.0.0.1", (leaf, pki.intermediate.der), native=verdict, verified_path=path)])

    found = diagnose(observe(served("eu-1", Verdict.OK), served("us-1", Verdict.OK), served("ap-1", UNKNOWN)))
    assert [(f.cause, f.agents) for f in found] == [(Cause.PRIVATE_CA_NOT_TRUSTED, ("ap-1",))]
    assert "'CN=Acme Regional Root CA'" in found[0].summary


def test_hosts_failing_on_the_servers_expiry_count_as_trusting_the_root() -> None:
    lab = Lab()
    now = datetime.fromtimestamp(NOW_NS / 1e9, tz=UTC)
    leaf = lab.pki.issue_leaf(NAME, not_before=now - timedelta(days=90), not_after=now - timedelta(days=1)).der
    chain = (leaf, lab.pki.intermediate.der)
    path = (fingerprint(leaf), *lab.path[1:])

    def expired(agent: str) -> ProbeOutcome:
        # The store built the path to the root; only the leaf's notAfter failed it.
        row = address("10.0.0.1", chain, native=Verdict.EXPIRED)
        row = replace(row, stores=(StoreVerdict("system", Verdict.EXPIRED, Verdict.EXPIRED, verified_path=path),))
        return outcome(agent, [row], trust_stores=[_system(141)])

    behind = address(
        "10.0.0.1", chain, stores={"system": (Verdict.OK, Verdict.EXPIRED)}, verified_path=path
    )  # its clock is behind: at its time the leaf is still valid
    obs = observe(
        expired("a"),
        expired("b"),
        outcome("behind", [behind], trust_stores=[_system(141)], offset_ms=-2 * 86400e3),
        outcome("no-root", [address("10.0.0.1", chain, native=UNKNOWN)], trust_stores=[_system(140)]),
    )
    [finding] = _of(_run(obs), Cause.PRIVATE_CA_NOT_TRUSTED)
    assert finding.agents == ("no-root",)
    assert finding.summary.endswith("no-root; the other 3 vantages trust it."), finding.summary
