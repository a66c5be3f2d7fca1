"""The shape of a served chain: complete, missing its root (normal), or missing an intermediate.

Shared by the chain and trust rules, so that both agree on which chains are incomplete.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from ...agent.trust.certinfo import CertSummary
from ..observation import Observation, rows_of


class Shape(StrEnum):
    SELF_SIGNED = "self_signed"  # the walk ends at a served self-issued certificate: complete
    ROOT_NOT_SERVED = "root_not_served"  # ends at an intermediate whose issuer is taken as the unsent root
    MISSING_ISSUER = "missing_issuer"  # the issuer of the walk's last certificate must be served and is not


@dataclass(frozen=True)
class ChainShape:
    shape: Shape
    path: tuple[CertSummary, ...]  # the served certificates linked from the leaf, leaf first
    unrelated: tuple[CertSummary, ...]  # served certificates not on that path
    issuer_seen: tuple[CertSummary, ...]  # certificates seen anywhere whose subject and key id fit the missing issuer

    @property
    def top(self) -> CertSummary:
        return self.path[-1]

    @property
    def issuer_known(self) -> bool:
        """Whether the absent issuer was seen anywhere, so its nature (root or not) is known."""
        return bool(self.issuer_seen)


def _issues(issuer: CertSummary, child: CertSummary) -> bool:
    """Linked by name, and by key identifier when both carry one (OpenSSL's check before the signature)."""
    if issuer.subject != child.issuer:
        return False
    return not (child.authority_key_id and issuer.subject_key_id) or issuer.subject_key_id == child.authority_key_id


def known_certificates(observation: Observation) -> tuple[CertSummary, ...]:
    """Every distinct certificate served to any vantage, in the probe and in its variants."""
    rows = list(observation.rows_with_chain)
    for variant in observation.variants:
        rows += [r for r in rows_of(variant.outcomes) if r.has_chain]
    seen: dict[str, CertSummary] = {}
    for row in rows:
        for cert in row.certificates():
            seen.setdefault(cert.sha256, cert)
    return tuple(seen.values())


def shape_of(certs: Sequence[CertSummary], known: Iterable[CertSummary]) -> ChainShape | None:
    """The shape of one served chain (leaf first, as served); None for an empty chain."""
    if not certs:
        return None
    path = [certs[0]]
    left = list(certs[1:])
    while not path[-1].is_self_issued:
        nxt = next((c for c in left if _issues(c, path[-1]) and c not in path), None)
        if nxt is None:
            break
        path.append(nxt)
        left.remove(nxt)
    top = path[-1]
    unrelated = tuple(c for c in certs[1:] if c not in path)
    if top.is_self_issued:
        return ChainShape(Shape.SELF_SIGNED, tuple(path), unrelated, ())
    seen = tuple(c for c in known if _issues(c, top))
    if seen:
        shape = Shape.ROOT_NOT_SERVED if all(c.is_self_issued for c in seen) else Shape.MISSING_ISSUER
    else:
        shape = Shape.MISSING_ISSUER if len(path) == 1 else Shape.ROOT_NOT_SERVED
    return ChainShape(shape, tuple(path), unrelated, seen)
