"""What a diagnosis concludes: findings with a cause, a severity, evidence, a fix and a way to reproduce."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum


class Severity(IntEnum):
    INFO = 0
    WARNING = 1
    CRITICAL = 2

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"severity {text!r} is not known; accepted: info, warning, critical") from None


class Cause(StrEnum):
    """The closed set of causes a finding can name."""

    EXPIRED = "expired"  # server side: every vantage sees it at true time
    NOT_YET_VALID = "not_yet_valid"
    EXPIRING_SOON = "expiring_soon"
    HOSTNAME_MISMATCH = "hostname_mismatch"
    INCOMPLETE_CHAIN = "incomplete_chain"
    UNTRUSTED_CHAIN = "untrusted_chain"  # self-signed or unknown root, and no vantage trusts it
    PRIVATE_CA_NOT_TRUSTED = "private_ca_not_trusted"  # same chain; some hosts' stores lack the root
    RUNTIME_STORE_DIFFERS = "runtime_store_differs"  # system store trusts, certifi/Java/... on that host do not
    CLOCK_SKEW = "clock_skew"
    SNI_DIFFERENCE = "sni_difference"
    DNS_DIFFERENCE = "dns_difference"
    INCONSISTENT_BACKENDS = "inconsistent_backends"
    TLS_INTERCEPTION = "tls_interception"
    PROTOCOL_MISMATCH = "protocol_mismatch"
    UNREACHABLE = "unreachable"
    VANTAGE_UNAVAILABLE = "vantage_unavailable"  # an agent did not answer: what it could not confirm


CAUSE_TITLES: dict[Cause, str] = {
    Cause.EXPIRED: "Certificate expired",
    Cause.NOT_YET_VALID: "Certificate not yet valid",
    Cause.EXPIRING_SOON: "Certificate expiring soon",
    Cause.HOSTNAME_MISMATCH: "Certificate does not cover the name",
    Cause.INCOMPLETE_CHAIN: "Incomplete chain served",
    Cause.UNTRUSTED_CHAIN: "Chain not trusted anywhere",
    Cause.PRIVATE_CA_NOT_TRUSTED: "Private CA not trusted on some hosts",
    Cause.RUNTIME_STORE_DIFFERS: "Runtime trust store differs from the system store",
    Cause.CLOCK_SKEW: "Clock skew on a host",
    Cause.SNI_DIFFERENCE: "Different certificate depending on SNI",
    Cause.DNS_DIFFERENCE: "Hosts resolve the name differently",
    Cause.INCONSISTENT_BACKENDS: "Backends serve different chains",
    Cause.TLS_INTERCEPTION: "TLS interception",
    Cause.PROTOCOL_MISMATCH: "Protocol or cipher mismatch",
    Cause.UNREACHABLE: "Target unreachable",
    Cause.VANTAGE_UNAVAILABLE: "Agent did not answer",
}


def cause_title(cause: Cause) -> str:
    """A short heading for alerts and reports; a cause added without one still gets a readable title."""
    return CAUSE_TITLES.get(cause) or cause.value.replace("_", " ").capitalize()


@dataclass(frozen=True)
class Evidence:
    """One field that matters, and its value where it was observed ('agent' or 'agent@address')."""

    field: str
    values: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Finding:
    cause: Cause
    severity: Severity
    summary: str  # one plain sentence a person on call can act on
    agents: tuple[str, ...]  # the vantages it concerns
    addresses: tuple[str, ...] = ()  # the server addresses it concerns
    evidence: tuple[Evidence, ...] = ()
    fix: str = ""
    reproduce: tuple[str, ...] = ()  # commands to run on an affected host

    @property
    def rank(self) -> tuple[int, int, str]:
        """Most severe first, then the widest, then by cause for a stable order."""
        return (-int(self.severity), -len(self.agents), self.cause.value)
