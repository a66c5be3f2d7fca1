"""What changed since the previous run: each kind of change, shown when it happened and silent when not."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tests.outcomes import address, observe, outcome, silent
from tlsfleet.agent.model import Failure, RootCertificate, TrustStore
from tlsfleet.agent.trust.certinfo import fingerprint, summarize
from tlsfleet.coordinator.diagnosis.model import Cause, Finding, Severity
from tlsfleet.coordinator.lab.pki import Issued, LabPKI
from tlsfleet.coordinator.observation import Observation
from tlsfleet.coordinator.outcomes import ProbeOutcome, VantageState
from tlsfleet.coordinator.service.changes import changes_between
from tlsfleet.coordinator.service.history import SeenQuery
from tlsfleet.coordinator.service.report_model import AgentSnapshot, Change, ChangeKind, ReportRun, TargetRun

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=15)
TARGET = "api.example.test:443"
AGENTS = ("web-1", "web-2", "web-3")


# Its own PKI, not the shared one in conftest.py: the change summaries asserted below name its CAs
# ("CN=Changes Intermediate CA", "CN=Changes Root CA").
@pytest.fixture(scope="module")
def pki() -> LabPKI:
    return LabPKI("Changes")


def root(issued: Issued) -> RootCertificate:
    return RootCertificate(fingerprint(issued.der), summarize(issued.der).subject)


def system_store(*roots: RootCertificate, **kwargs: object) -> TrustStore:
    fields: dict[str, object] = {"roots": roots, "root_count": len(roots), "fingerprint": str(hash(roots))}
    fields.update(kwargs)
    return TrustStore(name="system", kind="file", path="/etc/ssl/certs/ca-certificates.crt", **fields)  # type: ignore[arg-type]


def agent(name: str, *stores: TrustStore, offset_ms: float | None = 0.0, **kwargs: object) -> AgentSnapshot:
    return AgentSnapshot(
        name=name,
        address=f"{name}.test:7443",
        labels=(),
        state=kwargs.pop("state", VantageState.OK),  # type: ignore[arg-type]
        clock_offset_ms=offset_ms,
        clock_error_ms=kwargs.pop("error_ms", 2.0),  # type: ignore[arg-type]
        stores=stores,
    )


def observed(
    chain: tuple[bytes, ...], *, ips: tuple[str, ...] = ("127.0.0.2",), **per_agent: ProbeOutcome
) -> Observation:
    """Every agent served `chain` at every address of `ips`, unless given its own outcome."""
    return observe(
        *(per_agent.get(a.replace("-", "_")) or outcome(a, [address(ip, chain) for ip in ips]) for a in AGENTS)
    )


def run(
    started: datetime,
    observation: Observation,
    findings: tuple[Finding, ...] = (),
    agents: tuple[AgentSnapshot, ...] = (),
) -> ReportRun:
    return ReportRun(
        report="prod-edge",
        started_at=started,
        finished_at=started + timedelta(seconds=10),
        targets=(TargetRun(TARGET, observation, findings, 100.0),),
        agents=agents or tuple(agent(a) for a in AGENTS),
    )


def of(kind: ChangeKind, changes: tuple[Change, ...]) -> list[Change]:
    return [c for c in changes if c.kind is kind]


def full_chain(pki: LabPKI, *names: str, **kwargs: object) -> tuple[bytes, ...]:
    return (pki.issue_leaf(*(names or ("api.example.test",)), **kwargs).der, pki.intermediate.der)  # type: ignore[arg-type]


# --- baseline -------------------------------------------------------------------------------------------


def test_the_first_run_has_nothing_to_compare_with(pki: LabPKI) -> None:
    assert changes_between(None, run(T0, observed(full_chain(pki)))) == ()


def test_an_unchanged_fleet_has_no_changes(pki: LabPKI) -> None:
    chain = full_chain(pki)
    roots = (root(pki.root),)
    agents = tuple(agent(a, system_store(*roots), offset_ms=12.0) for a in AGENTS)
    finding = Finding(Cause.EXPIRING_SOON, Severity.WARNING, "Expires in 20 days.", AGENTS)
    before = run(T0, observed(chain), (finding,), agents)
    # Same state, new measurements: timings and small clock wobble are not changes.
    wobble = tuple(replace(a, clock_offset_ms=12.0 + 300.0) for a in agents)
    after = run(T1, observed(chain, ips=("127.0.0.2",)), (finding,), wobble)
    assert changes_between(before, after) == ()


def test_runs_of_different_reports_are_not_compared(pki: LabPKI) -> None:
    current = run(T1, observed(full_chain(pki)))
    with pytest.raises(ValueError, match="different reports"):
        changes_between(replace(current, report="other"), current)


def test_a_target_without_baseline_shows_no_changes(pki: LabPKI) -> None:
    finding = Finding(Cause.EXPIRED, Severity.CRITICAL, "Expired.", AGENTS)
    before = replace(run(T0, observed(full_chain(pki))), targets=())  # the target was added to the report since
    assert changes_between(before, run(T1, observed(full_chain(pki)), (finding,))) == ()


# --- findings -------------------------------------------------------------------------------------------


def test_new_and_resolved_findings_carry_severity_and_cause(pki: LabPKI) -> None:
    chain = full_chain(pki)
    expiring = Finding(Cause.EXPIRING_SOON, Severity.WARNING, "The certificate expires in 20 days", AGENTS)
    skew = Finding(Cause.CLOCK_SKEW, Severity.CRITICAL, "web-2's clock is 2 days ahead.", ("web-2",))
    changes = changes_between(run(T0, observed(chain), (expiring,)), run(T1, observed(chain), (skew,)))
    [new] = of(ChangeKind.FINDING_NEW, changes)
    [resolved] = of(ChangeKind.FINDING_RESOLVED, changes)
    assert (new.severity, new.cause, new.agent, new.target, new.since) == (
        "critical",
        "clock_skew",
        "web-2",
        TARGET,
        T1,
    )
    assert new.summary == f"New on {TARGET} (critical, clock skew): web-2's clock is 2 days ahead."
    assert (resolved.severity, resolved.cause, resolved.agent, resolved.before) == (
        "warning",
        "expiring_soon",
        "",
        expiring.summary,
    )
    assert resolved.summary == f"Resolved on {TARGET} (warning, expiring soon): The certificate expires in 20 days."


def test_a_finding_whose_agent_went_silent_is_not_called_resolved(pki: LabPKI) -> None:
    chain = full_chain(pki)
    skew = Finding(Cause.CLOCK_SKEW, Severity.CRITICAL, "web-2's clock is 2 days ahead.", ("web-2",))
    unavailable = Finding(Cause.VANTAGE_UNAVAILABLE, Severity.WARNING, "web-2 did not answer.", ("web-2",))
    after = run(T1, observed(chain, web_2=silent("web-2")), (unavailable,))
    changes = changes_between(run(T0, observed(chain), (skew,)), after)
    assert of(ChangeKind.FINDING_RESOLVED, changes) == []
    assert [c.cause for c in of(ChangeKind.FINDING_NEW, changes)] == ["vantage_unavailable"]
    # When web-2 answers again, the unavailability resolves.
    back = changes_between(after, run(T1 + timedelta(minutes=15), observed(chain)))
    assert [(c.kind, c.cause) for c in back] == [(ChangeKind.FINDING_RESOLVED, "vantage_unavailable")]


def test_since_is_taken_from_first_seen_only_when_it_is_between_the_runs(pki: LabPKI) -> None:
    chain = full_chain(pki)
    skew = Finding(Cause.CLOCK_SKEW, Severity.CRITICAL, "web-2's clock is 2 days ahead.", ("web-2",))
    before, after = run(T0, observed(chain)), run(T1, observed(chain), (skew,))
    asked: list[SeenQuery] = []

    def between(query: SeenQuery) -> datetime:
        asked.append(query)
        return T0 + timedelta(minutes=5)

    assert changes_between(before, after, between)[0].since == T0 + timedelta(minutes=5)
    assert asked[0].kind is ChangeKind.FINDING_NEW and asked[0].report == "prod-edge" and len(asked[0].key) == 32
    # An answer from before the previous run cannot date a state that run did not have.
    assert changes_between(before, after, lambda _q: T0 - timedelta(days=3))[0].since == T1
    assert changes_between(before, after, lambda _q: None)[0].since == T1


# --- certificates ---------------------------------------------------------------------------------------


def test_a_rotation_that_drops_the_intermediate_is_told(pki: LabPKI) -> None:
    old = full_chain(pki)
    new_leaf = pki.issue_leaf("api.example.test")
    changes = changes_between(run(T0, observed(old)), run(T1, observed((new_leaf.der,))))
    [change] = of(ChangeKind.CERTIFICATE, changes)
    assert change.agent == ""  # every agent saw the same rotation: one change, not three
    assert change.target == TARGET and change.since == T1
    summary = change.summary
    assert summary.startswith("web-1@127.0.0.2, web-2@127.0.0.2 and web-3@127.0.0.2 now get from api.example.test:443")
    assert f"a new leaf certificate {fingerprint(new_leaf.der)[:12]} (was {fingerprint(old[0])[:12]})" in summary
    assert "a chain of 1 certificate (was 2): CN=Changes Intermediate CA no longer sent" in summary
    assert change.before.endswith("chain of 2") and change.after.endswith("chain of 1")
    assert summary.count(".") >= 1 and summary.endswith(".")


def test_a_renewal_on_one_backend_names_the_agent_and_what_differs(pki: LabPKI) -> None:
    old = full_chain(pki, "api.example.test")
    renewed = full_chain(pki, "api.example.test", "www.example.test", not_after=datetime.now(UTC) + timedelta(days=200))
    web_2 = outcome("web-2", [address("127.0.0.2", renewed)])
    changes = changes_between(run(T0, observed(old)), run(T1, observed(old, web_2=web_2)))
    [change] = of(ChangeKind.CERTIFICATE, changes)
    assert change.agent == "web-2"
    assert change.summary.startswith("web-2@127.0.0.2 now gets from api.example.test:443 a new leaf certificate")
    assert "now covering www.example.test" in change.summary
    assert "valid until " in change.summary
    assert "chain of" not in change.summary  # the same intermediate is still sent


def test_another_issuer_is_named(pki: LabPKI) -> None:
    other = LabPKI("Proxy")
    changes = changes_between(run(T0, observed(full_chain(pki))), run(T1, observed(full_chain(other))))
    [change] = of(ChangeKind.CERTIFICATE, changes)
    assert "issued by CN=Proxy Intermediate CA (was CN=Changes Intermediate CA)" in change.summary
    assert "CN=Proxy Intermediate CA now sent" in change.summary


def test_an_intermediate_reissued_under_its_old_name_is_told_apart_by_fingerprint(pki: LabPKI) -> None:
    again = LabPKI("Changes")  # a new private CA with the same names, as `--issue` gives on each start
    changes = changes_between(run(T0, observed(full_chain(pki))), run(T1, observed(full_chain(again))))
    [change] = of(ChangeKind.CERTIFICATE, changes)
    was, now = fingerprint(pki.intermediate.der)[:12], fingerprint(again.intermediate.der)[:12]
    assert (
        f"CN=Changes Intermediate CA (sha256 {was}) no longer sent; CN=Changes Intermediate CA (sha256 {now}) now sent"
    ) in change.summary


def test_no_certificate_change_without_a_chain_on_both_sides(pki: LabPKI) -> None:
    chain = full_chain(pki)
    refused = outcome("web-1", [address("127.0.0.2", connect_failure=Failure.REFUSED)])
    changes = changes_between(run(T0, observed(chain, web_1=refused)), run(T1, observed(full_chain(pki))))
    assert {c.agent for c in of(ChangeKind.CERTIFICATE, changes)} == {""}
    assert "web-1" not in of(ChangeKind.CERTIFICATE, changes)[0].summary


# --- resolution -----------------------------------------------------------------------------------------


def test_resolution_changes_are_address_sets(pki: LabPKI) -> None:
    chain = full_chain(pki)
    before = run(T0, observed(chain, ips=("127.0.0.2", "127.0.0.3")))
    reordered = run(T1, observed(chain, ips=("127.0.0.3", "127.0.0.2")))
    assert of(ChangeKind.RESOLUTION, changes_between(before, reordered)) == []
    moved = run(
        T1, observed(chain, ips=("127.0.0.2", "127.0.0.3"), web_3=outcome("web-3", [address("127.0.0.9", chain)]))
    )
    [change] = of(ChangeKind.RESOLUTION, changes_between(before, moved))
    assert change.agent == "web-3"
    assert change.summary == "api.example.test now resolves to 127.0.0.9 for web-3 (was 127.0.0.2, 127.0.0.3)."
    failing = outcome("web-1", [], resolution_failure=Failure.DNS_ERROR)
    [gone] = of(
        ChangeKind.RESOLUTION,
        changes_between(before, run(T1, observed(chain, ips=("127.0.0.2", "127.0.0.3"), web_1=failing))),
    )
    assert (
        gone.summary
        == "api.example.test no longer resolves for web-1 (dns_error); it resolved to 127.0.0.2, 127.0.0.3."
    )


# --- agents ---------------------------------------------------------------------------------------------


def test_a_root_removed_from_a_store_is_named(pki: LabPKI) -> None:
    chain = full_chain(pki)
    lab, vendor = root(pki.root), root(LabPKI("Vendor").root)
    before = tuple(agent(a, system_store(lab, vendor)) for a in AGENTS)
    after = (agent("web-1", system_store(vendor)), *before[1:])
    [change] = of(
        ChangeKind.TRUST_STORE,
        changes_between(run(T0, observed(chain), agents=before), run(T1, observed(chain), agents=after)),
    )
    assert change.agent == "web-1"
    assert change.summary == "On web-1: trust store system lost 1 root: CN=Changes Root CA."
    assert (change.before, change.after, change.target, change.since) == ("CN=Changes Root CA", "", "", T1)


def test_roots_added_across_the_fleet_are_one_change(pki: LabPKI) -> None:
    chain = full_chain(pki)
    lab, vendor, extra = root(pki.root), root(LabPKI("Vendor").root), root(LabPKI("Corp").root)
    before = tuple(agent(a, system_store(lab)) for a in AGENTS)
    after = tuple(agent(a, system_store(lab, vendor, extra)) for a in AGENTS)
    [change] = of(
        ChangeKind.TRUST_STORE,
        changes_between(run(T0, observed(chain), agents=before), run(T1, observed(chain), agents=after)),
    )
    assert change.agent == ""
    assert change.summary == (
        "On web-1, web-2 and web-3: trust store system gained 2 roots: CN=Corp Root CA and CN=Vendor Root CA."
    )


def test_store_changes_without_listed_roots_and_silent_agents(pki: LabPKI) -> None:
    chain = full_chain(pki)
    unlisted = TrustStore("certifi", "file", "/venv/cacert.pem", 140, "aa" * 32)
    before = (agent("web-1", unlisted), agent("web-2", unlisted), agent("web-3", unlisted))
    after = (
        agent("web-1", replace(unlisted, root_count=141, fingerprint="bb" * 32)),
        agent("web-2", state=VantageState.TIMEOUT),  # no stores listed: nothing to compare
        agent("web-3", unlisted, system_store(root(pki.root))),
    )
    changes = of(
        ChangeKind.TRUST_STORE,
        changes_between(run(T0, observed(chain), agents=before), run(T1, observed(chain), agents=after)),
    )
    assert [c.summary for c in changes] == [
        "On web-1: trust store certifi changed content (140 to 141 roots; "
        "the roots were not listed, so they cannot be named).",
        "On web-3: a new trust store system (/etc/ssl/certs/ca-certificates.crt, 1 root).",
    ]


def test_a_clock_jump_beyond_the_threshold_is_told(pki: LabPKI) -> None:
    chain = full_chain(pki)
    before = tuple(agent(a, offset_ms=40.0) for a in AGENTS)
    after = (
        agent("web-1", offset_ms=172_800_040.0),
        agent("web-2", offset_ms=1_030.0),
        agent("web-3", offset_ms=-4_000.0),
    )
    changes = of(
        ChangeKind.CLOCK_JUMP,
        changes_between(run(T0, observed(chain), agents=before), run(T1, observed(chain), agents=after)),
    )
    # web-2 moved 990 ms: within 1 s plus both error bounds, so not a jump.
    assert [(c.agent, c.before, c.after) for c in changes] == [
        ("web-1", "+40 ms", "+172800040 ms"),
        ("web-3", "+40 ms", "-4000 ms"),
    ]
    assert [c.summary for c in changes] == [
        "web-1's clock jumped 2.0 days ahead, from +40 ms to +2.0 days relative to the coordinator's clock.",
        "web-3's clock jumped 4.0 s back, from +40 ms to -4.0 s relative to the coordinator's clock.",
    ]
    tighter = changes_between(
        run(T0, observed(chain), agents=before), run(T1, observed(chain), agents=after), clock_jump_ms=100.0
    )
    assert [c.agent for c in of(ChangeKind.CLOCK_JUMP, tighter)] == ["web-1", "web-2", "web-3"]
    unknown = (agent("web-1", offset_ms=None), *after[1:])
    assert [
        c.agent
        for c in of(
            ChangeKind.CLOCK_JUMP,
            changes_between(run(T0, observed(chain), agents=before), run(T1, observed(chain), agents=unknown)),
        )
    ] == ["web-3"]
