"""The diagnosis's input: the outcomes of one probe (plus variants of it), and views over them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property

from ..agent.model import AddressResult, Failure, ProbeRequest, ProbeResult, Verdict, per_store
from ..agent.trust.certinfo import CertificateParseError, CertSummary, fingerprint, summarize
from .outcomes import ProbeOutcome, VantageState

# Verdicts that mean "the chain does not lead to a root this store has".
TRUST_FAILURES = frozenset(
    {Verdict.UNKNOWN_ISSUER, Verdict.LEAF_ONLY_UNVERIFIABLE, Verdict.UNTRUSTED_ROOT, Verdict.SELF_SIGNED}
)
TIME_FAILURES = frozenset({Verdict.EXPIRED, Verdict.NOT_YET_VALID})


@dataclass(frozen=True)
class DiagnosisSettings:
    """What the diagnosis judges against: true time, the clock tolerance and the expiry warnings."""

    reference_time: datetime  # the coordinator's notion of true time; aware
    clock_tolerance_ms: float = 2000.0
    expiry_warning_days: float = 30.0
    expiry_critical_days: float = 7.0

    def __post_init__(self) -> None:
        if self.reference_time.tzinfo is None:
            raise ValueError("reference_time must be timezone-aware")
        if self.clock_tolerance_ms < 0:
            raise ValueError(f"clock tolerance {self.clock_tolerance_ms} ms is negative; accepted: 0 or more")
        if not 0 <= self.expiry_critical_days <= self.expiry_warning_days:
            raise ValueError("expiry thresholds must satisfy 0 <= critical days <= warning days")

    @classmethod
    def for_request(cls, request: ProbeRequest, **overrides: float) -> DiagnosisSettings:
        """Settings whose reference time is the one the request carried (now, when it carried none)."""
        ns = request.options.reference_time_ns
        when = datetime.fromtimestamp(ns / 1e9, tz=UTC) if ns else datetime.now(UTC)
        return cls(reference_time=when, **overrides)


@dataclass(frozen=True)
class Variant:
    """The same target probed another way: without SNI, or with another SNI name."""

    label: str  # "no SNI", "SNI other.example"
    request: ProbeRequest
    outcomes: tuple[ProbeOutcome, ...]


class CertificateCache:
    """Each served DER parsed and fingerprinted once per observation, however many rows and rules read it.

    Fleets serve the same few certificates to thousands of rows; a shared cache keeps every rule's reads of
    them linear in the rows (the process-wide cache of `summarize` is bounded, and evicts under many distinct
    certificates)."""

    __slots__ = ("_fingerprints", "_summaries")

    def __init__(self) -> None:
        self._summaries: dict[bytes, CertSummary | None] = {}
        self._fingerprints: dict[bytes, str] = {}

    def summary(self, der: bytes) -> CertSummary | None:
        try:
            return self._summaries[der]
        except KeyError:
            parsed = self._summaries[der] = _summary(der)
            return parsed

    def fingerprint(self, der: bytes) -> str:
        try:
            return self._fingerprints[der]
        except KeyError:
            value = self._fingerprints[der] = fingerprint(der)
            return value


@dataclass(frozen=True)
class Row:
    """One address as one vantage saw it."""

    agent: str
    outcome: ProbeOutcome
    result: ProbeResult
    address: AddressResult
    cache: CertificateCache = field(default_factory=CertificateCache, compare=False, repr=False)

    @property
    def where(self) -> str:
        return f"{self.agent}@{self.address.address}"

    @property
    def has_chain(self) -> bool:
        return bool(self.address.chain)

    @cached_property
    def summaries(self) -> tuple[CertSummary | None, ...]:
        """One summary per served certificate, in served order; None where the bytes do not parse."""
        return tuple(self.cache.summary(der) for der in self.address.chain)

    @property
    def leaf(self) -> CertSummary | None:
        return self.summaries[0] if self.address.chain else None

    @property
    def leaf_fingerprint(self) -> str:
        return self.chain_fingerprints[0] if self.address.chain else ""

    @cached_property
    def chain_fingerprints(self) -> tuple[str, ...]:
        return tuple(self.cache.fingerprint(der) for der in self.address.chain)

    def certificates(self) -> list[CertSummary]:
        """The served chain's certificates that parse, in served order."""
        return [s for s in self.summaries if s is not None]

    @property
    def handshake_failed(self) -> bool:
        """The handshake broke off for a reason other than the chain being rejected."""
        return self.address.handshake.failure not in (Failure.NONE, Failure.CERT_VERIFY)

    @property
    def connected(self) -> bool:
        return self.address.connect_failure is Failure.NONE


def _summary(der: bytes) -> CertSummary | None:
    try:
        return summarize(der)
    except CertificateParseError:
        return None


def _index(rows: Iterable[Row], key: Callable[[Row], str]) -> dict[str, tuple[Row, ...]]:
    grouped: dict[str, list[Row]] = {}
    for r in rows:
        grouped.setdefault(key(r), []).append(r)
    return {k: tuple(v) for k, v in grouped.items()}


def _agent(row: Row) -> str:
    return row.agent


def _address(row: Row) -> str:
    return row.address.address


@dataclass(frozen=True)
class Observation:
    """One probe request across the fleet: every vantage's outcome, and the SNI variants asked beside it."""

    request: ProbeRequest
    outcomes: tuple[ProbeOutcome, ...]
    variants: tuple[Variant, ...] = field(default=())

    @cached_property
    def answered(self) -> tuple[ProbeOutcome, ...]:
        return tuple(o for o in self.outcomes if o.state is VantageState.OK and o.result is not None)

    @cached_property
    def silent(self) -> tuple[ProbeOutcome, ...]:
        """Vantages that did not answer: offline, timeout, refused, error."""
        return tuple(o for o in self.outcomes if o.state is not VantageState.OK or o.result is None)

    @cached_property
    def certificate_cache(self) -> CertificateCache:
        return CertificateCache()

    @cached_property
    def rows(self) -> tuple[Row, ...]:
        return tuple(_rows(self.answered, self.certificate_cache))

    @cached_property
    def rows_with_chain(self) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.has_chain)

    @cached_property
    def rows_by_agent(self) -> Mapping[str, tuple[Row, ...]]:
        """Every row, by the vantage that saw it (vantages without rows are absent)."""
        return _index(self.rows, _agent)

    @cached_property
    def rows_by_address(self) -> Mapping[str, tuple[Row, ...]]:
        """Every row, by the server address it concerns."""
        return _index(self.rows, _address)

    @cached_property
    def rows_with_chain_by_address(self) -> Mapping[str, tuple[Row, ...]]:
        """The rows with a chain, by the server address that served it."""
        return _index(self.rows_with_chain, _address)

    @property
    def target(self) -> str:
        return str(self.request.target)

    @property
    def expected_name(self) -> str:
        o = self.request.options
        return o.sni if o.sni else self.request.target.host


def rows_of(outcomes: tuple[ProbeOutcome, ...]) -> tuple[Row, ...]:
    """Rows of any set of outcomes (a variant's, say)."""
    return tuple(
        _rows((o for o in outcomes if o.state is VantageState.OK and o.result is not None), CertificateCache())
    )


def _rows(outcomes: Iterable[ProbeOutcome], cache: CertificateCache) -> Iterator[Row]:
    for outcome in outcomes:
        assert outcome.result is not None
        for address in outcome.result.addresses:
            # Rules ask about stores by name; a verdict given once for identical stores answers for each.
            if any(s.same_as for s in address.stores):
                address = replace(address, stores=per_store(address.stores))
            yield Row(agent=outcome.vantage.name, outcome=outcome, result=outcome.result, address=address, cache=cache)
