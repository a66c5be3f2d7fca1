"""The fleet PKI: one ECDSA P-256 CA that issues every coordinator and agent its mutual-TLS identity.

Layout of a PKI directory (default `location.default_pki_dir()`):

    ca.pem, ca.key                      the fleet CA (the key never leaves this directory)
    agents/<name>.pem, .key             one per agent
    coordinators/<name>.pem, .key       one per coordinator

An identity is the DNS SAN `<name>.<role>.tlsfleet`; peers check it, never the CN.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, get_args

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..bounded_read import FileTooLarge, read_capped
from ..errors import UsageError
from ..naming import RESERVED_NAMES

__all__ = [
    "BACKDATE",
    "IDENTITY_SUFFIX",
    "MAX_PEM_BYTES",
    "NAME_RULE",
    "ROLES",
    "CertificateInfo",
    "FleetCaPaths",
    "FleetPkiError",
    "IssuedPaths",
    "PkiInventory",
    "Role",
    "ca_paths",
    "certificate_identity",
    "describe_certificate",
    "identity_dns_name",
    "identity_from_dns_names",
    "init_fleet_ca",
    "inventory",
    "issue",
    "issued_paths",
    "normalize_name",
]

Role = Literal["agent", "coordinator"]
ROLES: tuple[str, ...] = get_args(Role)
IDENTITY_SUFFIX = "tlsfleet"
NAME_RULE = "1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit"
MAX_PEM_BYTES = 1 << 20  # the fleet's PEM files are a few KiB: a larger file is the wrong file

_NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# Backdating lets a host whose clock runs up to a month behind still accept a fresh certificate (and
# the CA), so the fleet can reach that host and report its skew instead of failing the handshake. A
# certificate starts no earlier than its CA: a CA made by an older tlsfleet bounds what backdating buys.
BACKDATE = timedelta(days=30)
_MAX_DAYS = 36500
_MAX_LISTED = 10000


class FleetPkiError(UsageError):
    """A fleet PKI operation could not be done; the message says why and what to do."""


@dataclass(frozen=True)
class FleetCaPaths:
    cert: Path
    key: Path


@dataclass(frozen=True)
class IssuedPaths:
    cert: Path
    key: Path


@dataclass(frozen=True)
class CertificateInfo:
    """What `tlsfleet pki show` says about one certificate file. role is "ca" for the fleet CA."""

    path: Path
    role: str | None
    name: str | None
    subject: str
    not_before: datetime
    not_after: datetime
    sha256: str
    issued_by_ca: bool


@dataclass(frozen=True)
class PkiInventory:
    ca: CertificateInfo
    issued: tuple[CertificateInfo, ...]
    unreadable: tuple[tuple[Path, str], ...]


def normalize_name(name: str) -> str:
    """The case-folded name, or FleetPkiError when it is not a valid identity name."""
    # The ASCII check comes first: casefold() maps e.g. the Kelvin sign to "k".
    folded = name.casefold() if name.isascii() else name
    if not _NAME_RE.fullmatch(folded):
        raise FleetPkiError(f"invalid name {name!r}: a name is {NAME_RULE}")
    return folded


def _check_role(role: str) -> Role:
    if role not in ROLES:
        raise FleetPkiError(f"invalid role {role!r}: a role is one of {', '.join(ROLES)}")
    return role  # type: ignore[return-value]


def identity_dns_name(role: str, name: str) -> str:
    """The DNS SAN that carries an identity: `<name>.<role>.tlsfleet`."""
    return f"{normalize_name(name)}.{_check_role(role)}.{IDENTITY_SUFFIX}"


def ca_paths(directory: Path) -> FleetCaPaths:
    return FleetCaPaths(cert=directory / "ca.pem", key=directory / "ca.key")


def issued_paths(directory: Path, role: str, name: str) -> IssuedPaths:
    base = directory / f"{_check_role(role)}s" / normalize_name(name)
    return IssuedPaths(cert=base.with_suffix(".pem"), key=base.with_suffix(".key"))


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _make_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise FleetPkiError(f"{path} exists and is not a directory")
    if not path.exists():
        try:
            path.mkdir(parents=True, mode=0o700)
            path.chmod(0o700)  # mkdir's mode is filtered by the umask
        except OSError as e:
            raise FleetPkiError(f"cannot create directory {path}: {e.strerror or e}") from e


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write via a temporary file and rename, so a reader never sees half a key."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise FleetPkiError(f"cannot write {path}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise FleetPkiError(f"cannot write {path}: {e.strerror or e}") from e


def _check_days(days: int) -> None:
    if not 1 <= days <= _MAX_DAYS:
        raise FleetPkiError(f"invalid validity of {days} days: use 1 to {_MAX_DAYS} days")


def init_fleet_ca(
    directory: Path,
    *,
    common_name: str = "tlsfleet fleet CA",
    days: int = 3650,
    force: bool = False,
) -> FleetCaPaths:
    """Create the fleet CA in `directory` (created 0700). Refuses to replace an existing CA unless force."""
    _check_days(days)
    if not common_name.strip() or len(common_name) > 64:
        raise FleetPkiError(f"invalid CA common name {common_name!r}: use 1 to 64 characters")
    paths = ca_paths(directory)
    existing = [p for p in (paths.cert, paths.key) if p.exists()]
    if existing and not force:
        raise FleetPkiError(
            f"a fleet CA already exists at {existing[0]}; replacing it invalidates every certificate "
            "it issued (use --force to replace it)"
        )
    _make_dir(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    # The key goes first: a CA certificate without its key would block a retry without --force.
    _write_atomic(paths.key, _key_pem(key), 0o600)
    _write_atomic(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return paths


def _read_bounded(path: Path) -> bytes:
    try:
        return read_capped(path, MAX_PEM_BYTES)
    except FileTooLarge as e:
        raise FleetPkiError(f"{path} is larger than {e.limit} bytes; not a PEM file") from e
    except OSError as e:
        raise FleetPkiError(f"cannot read {path}: {e.strerror or e}") from e


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    paths = ca_paths(directory)
    missing = [p for p in (paths.cert, paths.key) if not p.exists()]
    if missing:
        raise FleetPkiError(f"no fleet CA at {missing[0]}; create one with `tlsfleet pki init --dir {directory}`")
    try:
        cert = x509.load_pem_x509_certificate(_read_bounded(paths.cert))
    except ValueError as e:
        raise FleetPkiError(f"{paths.cert} is not a PEM certificate") from e
    try:
        key = serialization.load_pem_private_key(_read_bounded(paths.key), password=None)
    except (ValueError, TypeError) as e:
        raise FleetPkiError(f"{paths.key} is not an unencrypted PEM private key") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise FleetPkiError(f"{paths.key} is not an ECDSA key; the fleet CA uses ECDSA P-256")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != cert.public_key().public_bytes(der, spki):
        raise FleetPkiError(f"{paths.key} does not match the CA certificate {paths.cert}")
    if cert.not_valid_after_utc <= _now():
        raise FleetPkiError(
            f"the fleet CA {paths.cert} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M UTC}; "
            "create a new one with `tlsfleet pki init --force` and reissue every certificate"
        )
    return cert, key


def issue(
    directory: Path,
    role: Role,
    name: str,
    *,
    days: int = 825,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    force: bool = False,
) -> IssuedPaths:
    """Issue `<role>s/<name>.pem` and `.key` (0600) signed by the fleet CA in `directory`.

    The validity ends `days` from now, capped at the CA's own expiry; explicit `not_before` and
    `not_after` (timezone-aware) override that, which is how expired certificates are made for tests.
    An existing certificate for the same identity is replaced only with force.
    """
    role = _check_role(role)
    name = normalize_name(name)
    if role == "agent" and name in RESERVED_NAMES:
        raise FleetPkiError(f"agent name {name!r} is reserved for the machine the CLI runs on; pick another name")
    _check_days(days)
    for label, when in (("not_before", not_before), ("not_after", not_after)):
        if when is not None and when.tzinfo is None:
            raise FleetPkiError(f"{label} must be timezone-aware (e.g. datetime.now(UTC))")
    ca_cert, ca_key = _load_ca(directory)
    now = _now()
    start = not_before if not_before is not None else max(now - BACKDATE, ca_cert.not_valid_before_utc)
    if not_after is not None:
        end = not_after
        if end > ca_cert.not_valid_after_utc:
            raise FleetPkiError(
                f"not_after {end:%Y-%m-%d} is after the fleet CA expires ({ca_cert.not_valid_after_utc:%Y-%m-%d})"
            )
    else:
        end = min(now + timedelta(days=days), ca_cert.not_valid_after_utc)
    if end <= start:
        raise FleetPkiError(f"the validity period is empty: it starts {start} and ends {end}")
    paths = issued_paths(directory, role, name)
    existing = [p for p in (paths.cert, paths.key) if p.exists()]
    if existing and not force:
        article = "an" if role == "agent" else "a"
        raise FleetPkiError(
            f"{article} {role} certificate for {name!r} already exists at {existing[0]} (use --force to replace it)"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        # Both usages: an agent that dials the coordinator is a TLS client, and a coordinator
        # may serve agents that dial in.
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(identity_dns_name(role, name))]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _make_dir(paths.cert.parent)
    _write_atomic(paths.key, _key_pem(key), 0o600)
    _write_atomic(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return paths


def identity_from_dns_names(dns_names: Iterable[str]) -> tuple[str, str] | None:
    """(role, name) from `<name>.<role>.tlsfleet` names; None when there is none, or several disagree."""
    found: set[tuple[str, str]] = set()
    for dns in dns_names:
        parts = dns.lower().split(".")
        if len(parts) == 3 and parts[2] == IDENTITY_SUFFIX and parts[1] in ROLES and _NAME_RE.fullmatch(parts[0]):
            found.add((parts[1], parts[0]))
    # Two identities in one certificate would let it pass as either; tlsfleet never issues that.
    return found.pop() if len(found) == 1 else None


def certificate_identity(cert: x509.Certificate) -> tuple[str, str] | None:
    """(role, name) carried by a certificate's DNS SANs, or None."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    return identity_from_dns_names(sans.get_values_for_type(x509.DNSName))


def _directly_issued(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def describe_certificate(path: Path, ca: x509.Certificate | None = None) -> CertificateInfo:
    """Read one certificate file; `issued_by_ca` tells whether `ca` signed it (False without a CA)."""
    try:
        cert = x509.load_pem_x509_certificate(_read_bounded(path))
    except ValueError as e:
        raise FleetPkiError(f"{path} is not a PEM certificate") from e
    role, name = certificate_identity(cert) or (None, None)
    return CertificateInfo(
        path=path,
        role=role,
        name=name,
        subject=cert.subject.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sha256=cert.fingerprint(hashes.SHA256()).hex(),
        issued_by_ca=ca is not None and _directly_issued(cert, ca),
    )


def inventory(directory: Path) -> PkiInventory:
    """The fleet CA and every issued certificate in `directory`, sorted by role then name."""
    paths = ca_paths(directory)
    if not paths.cert.exists():
        raise FleetPkiError(f"no fleet CA at {paths.cert}; create one with `tlsfleet pki init --dir {directory}`")
    try:
        ca_cert = x509.load_pem_x509_certificate(_read_bounded(paths.cert))
    except ValueError as e:
        raise FleetPkiError(f"{paths.cert} is not a PEM certificate") from e
    ca_info = describe_certificate(paths.cert, ca_cert)
    ca_info = replace(ca_info, role="ca", name=None)
    issued: list[CertificateInfo] = []
    unreadable: list[tuple[Path, str]] = []
    for role in ROLES:
        sub = directory / f"{role}s"
        if not sub.is_dir():
            continue
        for pem in sorted(sub.glob("*.pem"))[:_MAX_LISTED]:
            try:
                issued.append(describe_certificate(pem, ca_cert))
            except FleetPkiError as e:
                unreadable.append((pem, str(e)))
    return PkiInventory(ca=ca_info, issued=tuple(issued), unreadable=tuple(unreadable))
