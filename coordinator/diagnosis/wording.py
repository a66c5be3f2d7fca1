"""Small helpers for findings' sentences, so every rule words lists and counts the same way."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from functools import lru_cache

from cryptography import x509
from cryptography.x509.oid import NameOID

from ...agent.trust.certinfo import CertSummary

MAX_NAMED = 5
MAX_LISTED = 10  # items of a long list (SANs, certificates) a sentence or an evidence value shows


def name_list(names: Sequence[str]) -> str:
    """`a`, `a and b`, `a, b and c`, `a, b, c, d, e and 3 more`."""
    names = list(dict.fromkeys(names))
    if len(names) > MAX_NAMED:
        return ", ".join(names[:MAX_NAMED]) + f" and {len(names) - MAX_NAMED} more"
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + f" and {names[-1]}"


def capped(items: Sequence[str], limit: int = MAX_LISTED, *, sep: str = ", ") -> str:
    """The first `limit` items joined, and how many more there are: `a, b, c (+9997 more)`. Lists a server
    chose (SANs, chains) can be as long as it likes; a sentence or a table cell stays short."""
    if len(items) <= limit:
        return sep.join(items)
    return sep.join(items[:limit]) + f" (+{len(items) - limit} more)"


def count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"


def agree(verb: str, subjects: Sequence[str] | int) -> str:
    """The present-tense verb agreeing with its subjects: `serve` for several, `serves` for one."""
    n = subjects if isinstance(subjects, int) else len(dict.fromkeys(subjects))
    if n != 1:
        return verb
    if verb == "have":
        return "has"
    return verb[:-1] + "ies" if verb.endswith("y") and verb[-2:-1] not in "aeiou" else verb + "s"


@lru_cache(maxsize=4096)
def common_name(rfc4514: str) -> str:
    """The CN of an RFC 4514 name, or the whole name when it has none (or does not parse)."""
    try:
        cns = x509.Name.from_rfc4514_string(rfc4514).get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return rfc4514
    return str(cns[-1].value) if cns else rfc4514


def cert_name(cert: CertSummary) -> str:
    """A certificate as people name it: its subject CN (else its subject), quoted."""
    return f"'{common_name(cert.subject)}'"


def cert_brief(cert: CertSummary) -> str:
    """Name, short fingerprint, notAfter and issuer: enough to tell two certificates apart."""
    return (
        f"{cert_name(cert)} (sha256 {cert.short_fingerprint}, notAfter {cert.not_after:%Y-%m-%d %H:%M} UTC, "
        f"issuer '{common_name(cert.issuer)}')"
    )


def span(delta: timedelta) -> str:
    """A duration as a person says it: '40 seconds', '5 minutes', '3 hours', '12 days'."""
    seconds = abs(delta.total_seconds())
    if seconds < 120:
        return count(round(seconds), "second")
    if seconds < 2 * 3600:
        return count(round(seconds / 60), "minute")
    if seconds < 2 * 86400:
        return count(round(seconds / 3600), "hour")
    return count(round(seconds / 86400), "day")
