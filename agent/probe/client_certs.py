"""Client certificates an agent may present, by name: `--client-cert NAME=CERT,KEY` (repeatable).

A probe asks for one by name (`ProbeOptions.client_cert`); the engine refuses a name it was not given.
Each is checked once, at start: the files exist and are readable, the certificate parses, the key is not
encrypted and matches the certificate. Any problem is one line naming the file.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from ..bounded_read import FileTooLarge, read_capped
from ..errors import UsageError
from ..naming import NAME_PATTERN, NAME_RULE

__all__ = ["ClientCertError", "ClientCertificate", "load_client_certs", "parse_client_cert"]

MAX_PEM_BYTES = 1024 * 1024
_FORM = "NAME=CERT,KEY (e.g. --client-cert billing=/etc/tlsfleet/billing.pem,/etc/tlsfleet/billing.key)"


class ClientCertError(UsageError):
    """A --client-cert that cannot be used; the message names it and its file."""


@dataclass(frozen=True)
class ClientCertificate:
    """A certificate (PEM, leaf first, intermediates may follow) and its unencrypted private key (PEM)."""

    name: str
    cert: Path
    key: Path

    def load_into(self, context: ssl.SSLContext) -> None:
        context.load_cert_chain(str(self.cert), str(self.key), password=_no_password)


def _no_password() -> str:
    # Called by OpenSSL only for an encrypted key: refuse instead of prompting on a terminal.
    raise _EncryptedKey


class _EncryptedKey(Exception):
    pass


def parse_client_cert(value: str) -> ClientCertificate:
    """NAME=CERT,KEY -> ClientCertificate (paths not checked yet)."""
    name, sep, files = value.partition("=")
    cert, comma, key = files.partition(",")
    if not sep or not comma or not name or not cert or not key:
        raise ClientCertError(f"--client-cert {value!r} is not accepted; use {_FORM}")
    if not NAME_PATTERN.match(name):
        raise ClientCertError(f"--client-cert name {name!r} is not accepted; {NAME_RULE}")
    return ClientCertificate(name=name, cert=Path(cert).expanduser(), key=Path(key).expanduser())


def check_client_cert(certificate: ClientCertificate) -> None:
    """Raise ClientCertError unless the pair loads into a TLS context as a client would use it."""
    prefix = f"--client-cert {certificate.name}"
    cert_pem = _read(prefix, "certificate", certificate.cert)
    key_pem = _read(prefix, "key", certificate.key)
    try:
        if not x509.load_pem_x509_certificates(cert_pem):
            raise ValueError("no certificate")
    except ValueError:
        raise ClientCertError(f"{prefix}: the certificate file {certificate.cert} holds no PEM certificate") from None
    try:
        serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise ClientCertError(
            f"{prefix}: the key file {certificate.key} is encrypted; an agent needs an unencrypted key (mode 0600)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ClientCertError(f"{prefix}: the key file {certificate.key} holds no PEM private key") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        certificate.load_into(context)
    except _EncryptedKey:
        raise ClientCertError(
            f"{prefix}: the key file {certificate.key} is encrypted; an agent needs an unencrypted key (mode 0600)"
        ) from None
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            raise ClientCertError(
                f"{prefix}: the key {certificate.key} does not match the certificate {certificate.cert}"
            ) from None
        raise ClientCertError(
            f"{prefix}: OpenSSL cannot use the certificate {certificate.cert} with the key {certificate.key} "
            f"({error.library or 'SSL'}: {error.reason or error})"
        ) from None
    except OSError as error:
        raise ClientCertError(f"{prefix}: cannot read {certificate.cert} or {certificate.key}: {error}") from None


def _read(prefix: str, role: str, path: Path) -> bytes:
    if not path.exists():
        raise ClientCertError(f"{prefix}: the {role} file {path} does not exist")
    if not path.is_file():
        raise ClientCertError(f"{prefix}: the {role} file {path} is not a regular file")
    try:
        return read_capped(path, MAX_PEM_BYTES)
    except FileTooLarge as error:
        raise ClientCertError(f"{prefix}: the {role} file {error}") from None
    except OSError as error:
        raise ClientCertError(f"{prefix}: cannot read the {role} file {path}: {error.strerror or error}") from None


def load_client_certs(values: Iterable[str]) -> Mapping[str, ClientCertificate]:
    """Parse and check every --client-cert value; names must be unique."""
    out: dict[str, ClientCertificate] = {}
    for value in values:
        certificate = parse_client_cert(value)
        if certificate.name in out:
            raise ClientCertError(f"--client-cert name {certificate.name!r} is given twice; names must be unique")
        check_client_cert(certificate)
        out[certificate.name] = certificate
    return out
