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
    MALFORMED_CERTIFICATE = "malformed_certificate"  # an extension does not parse: names and usage cannot be read
    POLICY_INVALID_CHAIN = "policy_invalid_chain"  # a path exists but breaks policy: weak digest/key, CA, purpose...
    UNRELATED_CERTIFICATE = "unrelated_certificate"  # the served chain carries a certificate on no path (info)
    PRIVATE_CA_NOT_TRUSTED = "private_ca_not_trusted"  # same chain; some hosts' stores lack the root
    RUNTIME_STORE_DIFFERS = "runtime_store_differs"  # system store trusts, certifi/Java/... on that host do not
    CLOCK_SKEW = "clock_skew"
    SNI_DIFFERENCE = "sni_difference"
    DNS_DIFFERENCE = "dns_difference"
    INCONSISTENT_BACKENDS = "inconsistent_backends"
    TLS_INTERCEPTION = "tls_interception"
    PROTOCOL_MISMATCH = "protocol_mismatch"
    HANDSHAKE_INCOMPLETE = "handshake_incomplete"  # TCP connects; TLS times out, resets, closes or is not TLS
    CLIENT_CERT_REQUIRED = "client_cert_required"  # the server wants a client certificate (or refuses the one sent)
    CERTIFICATE_TOO_LARGE = "certificate_too_large"  # the certificate message exceeds what clients accept
    WEAK_KEY_EXCHANGE = "weak_key_exchange"  # clients refuse the server's DH/EC group or key as too weak
    CLIENT_VIEWS_DIFFER = "client_views_differ"  # OpenSSL clients and Python's default context disagree on a host
    UNREACHABLE = "unreachable"
    POLICY_DENIED = "policy_denied"  # an agent's probe policy refused the address: nothing was probed there
    VANTAGE_UNAVAILABLE = "vantage_unavailable"  # an agent did not answer: what it could not confirm


CAUSE_TITLES: dict[Cause, str] = {
    Cause.EXPIRED: "Certificate expired",
    Cause.NOT_YET_VALID: "Certificate not yet valid",
    Cause.EXPIRING_SOON: "Certificate expiring soon",
    Cause.HOSTNAME_MISMATCH: "Certificate does not cover the name",
    Cause.INCOMPLETE_CHAIN: "Incomplete chain served",
    Cause.UNTRUSTED_CHAIN: "Chain not trusted anywhere",
    Cause.MALFORMED_CERTIFICATE: "Certificate malformed",
    Cause.POLICY_INVALID_CHAIN: "Chain breaks verification policy",
    Cause.UNRELATED_CERTIFICATE: "Unrelated certificate in the served chain",
    Cause.PRIVATE_CA_NOT_TRUSTED: "Private CA not trusted on some hosts",
    Cause.RUNTIME_STORE_DIFFERS: "Runtime trust store differs from the system store",
    Cause.CLOCK_SKEW: "Clock skew on a host",
    Cause.SNI_DIFFERENCE: "Different certificate depending on SNI",
    Cause.DNS_DIFFERENCE: "Hosts resolve the name differently",
    Cause.INCONSISTENT_BACKENDS: "Backends serve different chains",
    Cause.TLS_INTERCEPTION: "TLS interception",
    Cause.PROTOCOL_MISMATCH: "Protocol or cipher mismatch",
    Cause.HANDSHAKE_INCOMPLETE: "TLS handshake never completes",
    Cause.CLIENT_CERT_REQUIRED: "Server requires a client certificate",
    Cause.CERTIFICATE_TOO_LARGE: "Certificate message too large for clients",
    Cause.WEAK_KEY_EXCHANGE: "Server key exchange too weak for clients",
    Cause.CLIENT_VIEWS_DIFFER: "Clients on one host disagree",
    Cause.UNREACHABLE: "Target unreachable",
    Cause.POLICY_DENIED: "Agent policy refused the probe",
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
    """One conclusion of the diagnosis: its cause and severity, who and what it concerns, the evidence and the fix."""

    cause: Cause
    severity: Severity
    summary: str  # one plain sentence a person on call can act on
    agents: tuple[str, ...]  # the vantages it concerns
    addresses: tuple[str, ...] = ()  # the server addresses it concerns
    evidence: tuple[Evidence, ...] = ()
    fix: str = ""
    reproduce: tuple[str, ...] = ()  # commands to run on an affected host
    # True when nothing fails because of it yet (a certificate expiring soon, a clock off that no verdict
    # has flipped on): among findings of one severity, what explains a failure now comes first.
    prediction: bool = False

    @property
    def rank(self) -> tuple[int, bool, int, int, str]:
        """Most severe first; then what explains a failure now before what predicts one; then the widest (in
        vantages, then in addresses: one finding for every failing backend before one for a single backend);
        then by cause for a stable order. Expiring soon is a prediction by its nature (also when read back
        from a history that keeps no flag)."""
        predicts = self.prediction or self.cause is Cause.EXPIRING_SOON
        return (-int(self.severity), predicts, -len(self.agents), -len(self.addresses), self.cause.value)
