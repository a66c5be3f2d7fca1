"""Clock skew: a vantage whose clock is off beyond tolerance, and the verdicts that flip because of it.

Each answering vantage's offset comes with an error bound (half the round trip), so a vantage counts as
skewed only when even the most favourable reading is beyond tolerance: `|offset| - error > tolerance`.

- Critical: on the skewed vantage some store judges the chain EXPIRED or NOT_YET_VALID at the host's
  time and OK at true time: TLS fails there because of the clock, and nowhere else. Critical too when
  the host fails now on something else (a missing root, a name) and its clock alone also puts a served
  certificate outside its window: that failure stays once the other is fixed (ranked after it).
- Warning: the offset is beyond tolerance and either nothing flips (yet: validity checks and tokens
  will break) or the flip goes the other way (the host still accepts a certificate that is invalid at
  true time; the server-side claim is validity's, judged at reference time).

Offsets are agent minus coordinator. When every remote vantage (two or more) is off by about the same
amount in the same direction, the odd one out is the coordinator, not the fleet: one finding says so
instead of blaming every host (`timebase`, which the validity rules follow too). A vantage within
tolerance never yields a finding here. Only a critical finding explains a failure now; the warnings
predict one (`Finding.prediction`).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ...agent.model import StoreVerdict, Verdict
from ...agent.trust.certinfo import CertSummary
from ..observation import TIME_FAILURES, DiagnosisSettings, Observation, Row
from ..outcomes import ProbeOutcome
from .model import Cause, Evidence, Finding, Severity
from .reproduce import save_chain, verify_at
from .timebase import beyond_tolerance, coordinator_offset_ms
from .wording import cert_name, count, name_list

__all__ = ["beyond_tolerance", "findings", "humane_offset"]

_FIX = (
    "Fix time synchronisation on {host}: check `timedatectl status` and `chronyc tracking` (or `ntpq -p`), make "
    "sure chronyd, ntpd or systemd-timesyncd runs and reaches its servers, then step the clock "
    "(`chronyc makestep`)."
)


def findings(observation: Observation, settings: DiagnosisSettings) -> Iterator[Finding]:
    skewed = [o for o in observation.answered if o.clock is not None and beyond_tolerance(o.clock, settings)]
    if not skewed:
        return
    if coordinator_offset_ms(observation, settings) is not None:
        yield _coordinator_finding(skewed, settings)
        return
    for outcome in skewed:
        yield _vantage_finding(observation, outcome, settings)


def humane_offset(offset_ms: float) -> str:
    """`850 ms`, `12.5 s`, `5.0 min`, `3.2 h`, `2.0 days`: the unit a person would use."""
    a = abs(offset_ms)
    if a < 1_000:
        return f"{a:.0f} ms"
    if a < 60_000:
        return f"{a / 1_000:.1f} s"
    if a < 3_600_000:
        return f"{a / 60_000:.1f} min"
    if a < 86_400_000:
        return f"{a / 3_600_000:.1f} h"
    return f"{a / 86_400_000:.1f} days"


def _direction(offset_ms: float) -> str:
    return "ahead" if offset_ms > 0 else "behind"


def _offset_evidence(outcomes: list[ProbeOutcome]) -> Evidence:
    values = []
    for o in outcomes:
        assert o.clock is not None
        c = o.clock
        values.append(
            (
                o.vantage.name,
                f"{c.offset_ms:+.0f} ms ±{c.error_ms:.0f} ms ({humane_offset(c.offset_ms)} {_direction(c.offset_ms)})",
            )
        )
    return Evidence("clock offset (agent minus coordinator)", tuple(values))


def _coordinator_finding(skewed: list[ProbeOutcome], settings: DiagnosisSettings) -> Finding:
    offsets = sorted(o.clock.offset_ms for o in skewed if o.clock is not None)
    median = offsets[len(offsets) // 2]
    # Offsets are agent minus coordinator: the fleet ahead means the coordinator is behind.
    fleet_dir, coordinator_dir = ("ahead of", "behind") if median > 0 else ("behind", "ahead")
    return Finding(
        cause=Cause.CLOCK_SKEW,
        severity=Severity.WARNING,
        summary=(
            f"Every vantage ({count(len(skewed), 'agent')}) reads about {humane_offset(median)} "
            f"{fleet_dir} the coordinator: the coordinator's own clock is probably "
            f"{humane_offset(median)} {coordinator_dir} (or these hosts share one bad time source), so verdicts "
            "judged at its reference time are not to be trusted until it is fixed; certificate validity here is "
            "judged at the fleet's time instead."
        ),
        agents=tuple(o.vantage.name for o in skewed),
        evidence=(
            _offset_evidence(skewed),
            Evidence("coordinator reference time", (("coordinator", _when(settings.reference_time)),)),
            Evidence(
                "fleet time (reference time plus the median offset)",
                (("fleet", _when(settings.reference_time + timedelta(milliseconds=median))),),
            ),
        ),
        fix=_FIX.format(host="the machine running the tlsfleet coordinator first")
        + " If it is right, check the time source these hosts share.",
        reproduce=("date -u", "timedatectl status", "chronyc tracking"),
    )


@dataclass(frozen=True)
class _Flip:
    """A store whose verdict differs between the agent's clock and true time."""

    row: Row
    store: StoreVerdict

    @property
    def breaks(self) -> bool:
        """Fails at the host's time, verifies at true time: the clock alone breaks TLS here."""
        return self.store.at_agent_time in TIME_FAILURES and self.store.at_reference_time is Verdict.OK

    @property
    def hides(self) -> bool:
        """Verifies at the host's time, fails on time at true time: the host accepts what it should not."""
        return self.store.at_agent_time is Verdict.OK and self.store.at_reference_time in TIME_FAILURES


def _flips(rows: list[Row], agent_time: datetime, true_time: datetime) -> list[_Flip]:
    """Store verdicts that differ between the host's time and true time; and, for a row whose stores
    say nothing, a native time failure that the served certificates' windows explain. OpenSSL checks
    validity windows last, so a native EXPIRED or NOT_YET_VALID means trust and name already passed:
    with every window holding at true time, the chain verifies then."""
    flips = []
    for r in rows:
        stored = [_Flip(r, s) for s in r.address.stores if s.at_agent_time != s.at_reference_time]
        native = r.address.native.verdict
        if not stored and native in TIME_FAILURES and _culprit(r, agent_time, true_time) is not None:
            stored.append(_Flip(r, StoreVerdict(store="native", at_agent_time=native, at_reference_time=Verdict.OK)))
        flips += stored
    return flips


def _when(t: datetime) -> str:
    return f"{t.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _window_reason(cert: CertSummary, at: datetime) -> str:
    """Why a certificate is outside its validity window at `at` ('' when it is inside)."""
    if at > cert.not_after:
        return f"expired on {_when(cert.not_after)}"
    if at < cert.not_before:
        return f"is not valid until {_when(cert.not_before)}"
    return ""


def _culprit(row: Row, invalid_at: datetime, valid_at: datetime) -> tuple[CertSummary, str] | None:
    """The first served certificate outside its window at one time and inside it at the other."""
    for cert in row.certificates():
        reason = _window_reason(cert, invalid_at)
        if reason and not _window_reason(cert, valid_at):
            return cert, reason
    return None


def _masked(rows: list[Row], agent_time: datetime, true_time: datetime) -> list[tuple[Row, tuple[CertSummary, str]]]:
    """Rows failing on something other than time whose served certificates the host's clock alone puts
    outside their windows: the verdict would flip once the other failure is gone."""
    masked = []
    for r in rows:
        if r.address.native.verdict is Verdict.OK or r.address.native.verdict in TIME_FAILURES:
            continue
        found = _culprit(r, agent_time, true_time)
        if found is not None:
            masked.append((r, found))
    return masked


def _vantage_finding(observation: Observation, outcome: ProbeOutcome, settings: DiagnosisSettings) -> Finding:
    assert outcome.clock is not None and outcome.result is not None
    agent = outcome.vantage.name
    offset = outcome.clock.offset_ms
    skew = f"{agent}'s clock is {humane_offset(offset)} {_direction(offset)}"
    agent_time = datetime.fromtimestamp(outcome.result.agent_received_ns / 1e9, tz=UTC)
    true_time = settings.reference_time
    rows = list(observation.rows_by_agent.get(agent, ()))
    flips = _flips(rows, agent_time, true_time)
    breaking = [f for f in flips if f.breaks]
    hiding = [f for f in flips if f.hides]
    masked = [] if flips else _masked(rows, agent_time, true_time)

    if breaking:
        severity = Severity.CRITICAL
        first = breaking[0]
        stores = name_list([f.store.store for f in breaking])
        found = _culprit(first.row, agent_time, true_time)
        if found:
            cert, reason = found
            what = f"at its time the certificate {cert_name(cert)} {reason}, at true time it is valid"
        else:
            what = f"at its time the chain is judged {first.store.at_agent_time}, at true time it verifies"
        summary = f"{skew}; {what}, so TLS to {observation.target} fails on {agent} (stores: {stores})."
    elif hiding:
        severity = Severity.WARNING
        first = hiding[0]
        found = _culprit(first.row, true_time, agent_time)
        if found:
            cert, reason = found
            what = f"at its time the certificate {cert_name(cert)} still looks valid, at true time it {reason}"
        else:
            what = f"at its time the chain verifies, at true time it is {first.store.at_reference_time}"
        summary = (
            f"{skew}; {what}: {agent} accepts what the correct time rejects, and its clock will break other "
            "validity checks and time-limited tokens."
        )
    elif masked:
        # The host fails now for another reason (trust, name), which OpenSSL reports before any window:
        # its clock puts a served certificate outside its window too, so TLS there stays broken once that
        # other reason is fixed. Critical, yet ranked after what explains the verdict the host reports.
        severity = Severity.CRITICAL
        first = None
        row, (cert, reason) = masked[0]
        summary = (
            f"{skew}; at its time the certificate {cert_name(cert)} {reason}, at true time it is valid: TLS to "
            f"{observation.target} fails on {agent} now for another reason ({row.address.native.verdict}), and "
            "will still fail there because of the clock once that is fixed."
        )
    else:
        severity = Severity.WARNING
        first = None
        summary = (
            f"{skew} (beyond the {humane_offset(settings.clock_tolerance_ms)} tolerance): no verdict here flips "
            "yet, but certificate validity checks and time-limited tokens on that host will break."
        )

    evidence = [
        _offset_evidence([outcome]),
        Evidence("time", ((agent, _when(agent_time)), ("coordinator", _when(true_time)))),
    ]
    if masked:
        evidence.append(
            Evidence(
                "certificate window at host time / at true time",
                tuple((r.where, f"{cert_name(c)}: {reason} / valid") for r, (c, reason) in masked),
            )
        )
    if flips:
        evidence.append(
            Evidence(
                "verdict at host time / at true time",
                tuple(
                    (f.row.where, f"{f.store.store}: {f.store.at_agent_time} / {f.store.at_reference_time}")
                    for f in flips
                ),
            )
        )
        evidence.append(
            Evidence(
                "native verdict (host time)",
                tuple(dict.fromkeys((f.row.where, str(f.row.address.native.verdict)) for f in flips)),
            )
        )
    return Finding(
        cause=Cause.CLOCK_SKEW,
        severity=severity,
        summary=summary,
        agents=(agent,),
        addresses=tuple(
            dict.fromkeys([*(f.row.address.address for f in flips), *(r.address.address for r, _ in masked)])
        ),
        evidence=tuple(evidence),
        fix=_FIX.format(host=agent),
        reproduce=_reproduce(observation, first, true_time),
        # A clock off that breaks nothing here yet, hides a failure, or is masked by another failure now.
        prediction=not breaking,
    )


def _reproduce(observation: Observation, flip: _Flip | None, true_time: datetime) -> tuple[str, ...]:
    commands = ["date -u", "timedatectl status", "chronyc tracking"]
    if flip is None:
        return tuple(commands)
    row = flip.row
    cafile = next((s.path for s in row.result.trust_stores if s.name == flip.store.store and s.kind == "file"), None)
    name = row.result.expected_name or None
    at_host = ["openssl", "verify"]
    if cafile:
        at_host += ["-CAfile", cafile]
    if name:
        at_host += ["-verify_hostname", name]
    at_host += ["-untrusted", "chain.pem", "leaf.pem"]
    commands += [
        save_chain(row.address.address, observation.request.target.port, row.result.sni),
        shlex.join(at_host),
        verify_at(true_time, cafile, name),
    ]
    return tuple(commands)
