"""The shape of a served chain: complete, missing its root (normal), or missing an intermediate.

Shared by the chain, trust and policy rules, so that they agree on which chains are incomplete.

The served certificates are linked from the leaf by issuer name and key identifier, as OpenSSL links
them. Where that walk stops short of a self-issued certificate, what lies above it is decided from
evidence, strongest first:

1. the stores' verified paths (leaf first, trust anchor last; OpenSSL counts only a self-signed anchor):
   a path that goes from the walk's top straight to its anchor says the top's issuer is a root that store
   holds (complete: roots are not served); a path that passes through certificates the server did not
   send says the top's issuer is an intermediate (missing: a store happened to hold it);
2. certificates seen anywhere in the observation that fit the missing issuer: served to another vantage
   or in a variant, or fetched from the AIA caIssuers URL by an agent allowed to: self-issued ones are
   roots, others intermediates;
3. nothing known: a leaf whose issuer was never seen reads as missing its intermediate (public CAs never
   sign leaves from a root), an intermediate whose issuer was never seen as having the unsent root above it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from ...agent.trust.certinfo import CertificateParseError, CertSummary, summarize
from ..observation import Observation, Row, rows_of

__all__ = ["ChainEvidence", "ChainShape", "Shape", "known_certificates", "shape_of", "trust_key", "verified_paths"]


class Shape(StrEnum):
    SELF_SIGNED = "self_signed"  # the walk ends at a served self-issued certificate: complete
    ROOT_NOT_SERVED = "root_not_served"  # ends at a certificate whose issuer is taken as the unsent root
    MISSING_ISSUER = "missing_issuer"  # the issuer of the walk's last certificate must be served and is not


@dataclass(frozen=True)
class ChainShape:
    """How a served chain is put together: the path from the leaf, what is off it, and what is missing."""

    shape: Shape
    path: tuple[CertSummary, ...]  # the served certificates linked from the leaf, leaf first
    unrelated: tuple[CertSummary, ...]  # served certificates not on that path
    issuer_seen: tuple[CertSummary, ...]  # certificates seen anywhere whose subject and key id fit the missing issuer
    anchor: str = ""  # sha256 of the root a store verified to straight from the top, when one did
    held: tuple[str, ...] = ()  # sha256s of the unserved intermediates a store put between the top and its root

    @property
    def top(self) -> CertSummary:
        return self.path[-1]

    @property
    def issuer_known(self) -> bool:
        """Whether the absent issuer's nature (root or not) is known from evidence, not assumed."""
        return bool(self.issuer_seen or self.anchor or self.held)


def _issues(issuer: CertSummary, child: CertSummary) -> bool:
    """Linked by name, and by key identifier when both carry one (OpenSSL's check before the signature)."""
    if issuer.subject != child.issuer:
        return False
    return not (child.authority_key_id and issuer.subject_key_id) or issuer.subject_key_id == child.authority_key_id


def _all_rows(observation: Observation) -> list[Row]:
    rows = list(observation.rows_with_chain)
    for variant in observation.variants:
        rows += [r for r in rows_of(variant.outcomes) if r.has_chain]
    return rows


def known_certificates(observation: Observation) -> tuple[CertSummary, ...]:
    """Every distinct certificate seen by any vantage, in the probe and in its variants: served, or
    fetched from an AIA caIssuers URL."""
    seen: dict[str, CertSummary] = {}
    for row in _all_rows(observation):
        for cert in row.certificates():
            seen.setdefault(cert.sha256, cert)
        fetched = row.address.aia
        if fetched is not None and fetched.fetched and fetched.certificate:
            try:
                cert = summarize(fetched.certificate)
            except CertificateParseError:
                continue
            seen.setdefault(cert.sha256, cert)
    return tuple(seen.values())


def verified_paths(observation: Observation) -> tuple[tuple[str, ...], ...]:
    """Every distinct path a store verified (sha256s, leaf first, root last), in the probe and its variants."""
    paths: dict[tuple[str, ...], None] = {}
    for row in _all_rows(observation):
        for verdict in row.address.stores:
            if verdict.verified_path:
                paths.setdefault(tuple(verdict.verified_path), None)
    return tuple(paths)


class ChainEvidence:
    """The certificates seen anywhere, indexed by subject, and the paths stores verified, indexed by their
    leaf: built once for an observation, so that shaping each of many distinct chains (a leaf per vantage)
    looks up what fits its top instead of scanning everything seen."""

    __slots__ = ("_by_leaf", "_by_subject")

    def __init__(self, known: Iterable[CertSummary] = (), paths: Iterable[Sequence[str]] = ()) -> None:
        self._by_subject: dict[str, list[CertSummary]] = {}
        for cert in known:
            self._by_subject.setdefault(cert.subject, []).append(cert)
        self._by_leaf: dict[str, list[tuple[str, ...]]] = {}
        for path in paths:
            if path:
                self._by_leaf.setdefault(path[0], []).append(tuple(path))

    @classmethod
    def of(cls, observation: Observation) -> ChainEvidence:
        return cls(known_certificates(observation), verified_paths(observation))

    def issuers_of(self, cert: CertSummary) -> tuple[CertSummary, ...]:
        """Certificates seen anywhere whose subject and key id fit the issuer of `cert`."""
        return tuple(c for c in self._by_subject.get(cert.issuer, ()) if _issues(c, cert))

    def paths_from(self, leaf: str) -> list[tuple[str, ...]]:
        """The verified paths that start at the certificate with this sha256."""
        return self._by_leaf.get(leaf, [])


def shape_of(
    certs: Sequence[CertSummary],
    known: ChainEvidence | Iterable[CertSummary],
    paths: Iterable[Sequence[str]] = (),
) -> ChainShape | None:
    """The shape of one served chain (leaf first, as served); None for an empty chain. `known` is the
    observation's `ChainEvidence`, or the certificates seen anywhere with `paths` the paths stores verified
    (see the module's docstring)."""
    if not certs:
        return None
    evidence = known if isinstance(known, ChainEvidence) else ChainEvidence(known, paths)
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
    seen = evidence.issuers_of(top)
    walked = tuple(c.sha256 for c in path)
    above = [
        p[len(walked) :] for p in evidence.paths_from(walked[0]) if p[: len(walked)] == walked and len(p) > len(walked)
    ]
    direct = next((rest[0] for rest in above if len(rest) == 1), "")
    if direct:
        return ChainShape(Shape.ROOT_NOT_SERVED, tuple(path), unrelated, seen, anchor=direct)
    through = next((rest[:-1] for rest in above if len(rest) > 1), ())
    if through:
        return ChainShape(Shape.MISSING_ISSUER, tuple(path), unrelated, seen, held=through)
    if seen:
        shape = Shape.ROOT_NOT_SERVED if all(c.is_self_issued for c in seen) else Shape.MISSING_ISSUER
    else:
        shape = Shape.MISSING_ISSUER if len(path) == 1 else Shape.ROOT_NOT_SERVED
    return ChainShape(shape, tuple(path), unrelated, seen)


def trust_key(row: Row) -> tuple[str, ...]:
    """What decides whether a host can trust this row's chain: the issuer (name and key id) of its leaf and
    the certificates served above it. Chains that differ only in their leaf (a leaf per backend, per region,
    per vantage) ask the hosts the same question; a self-issued or unreadable leaf is its own question."""
    leaf = row.leaf
    if leaf is None or leaf.is_self_issued:
        return row.chain_fingerprints
    return (leaf.issuer, leaf.authority_key_id, *row.chain_fingerprints[1:])
