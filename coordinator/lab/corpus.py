"""A corpus of TLS endpoints modelled on badssl.com's, served by real `openssl s_server` processes, and by
tlslite-ng (`tlslite_server`, a process of its own) where this host's OpenSSL will not serve them at all, or
will not misbehave as some servers do.

Each endpoint is one fault (or one healthy variant) from the public test suites' families: certificate,
client certificate, protocol, key exchange, cipher. Every certificate endpoint is built in two
profiles, because private CAs differ from the Web PKI in exactly the extensions tools disagree on:

- `critical`: CA basicConstraints and keyUsage critical, every certificate with an Authority Key Identifier
  (what the CA/Browser Forum requires);
- `lenient`: CA extensions not critical, leaves without an Authority Key Identifier (what many private CAs
  and every badssl.com chain do). OpenSSL accepts both; stricter verifiers do not.

The corpus says nothing about what a client should conclude: the tests ask `openssl s_client` and
`openssl verify` on the same host, and compare.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID, ObjectIdentifier

from .dh_groups import OAKLEY_GROUP_2_BITS, oakley_group_2_pem

__all__ = [
    "ENDPOINTS",
    "PROFILES",
    "CorpusPKI",
    "Endpoint",
    "EndpointUnavailable",
    "Profile",
    "RunningEndpoint",
    "serve_endpoint",
]

OPENSSL = shutil.which("openssl") or "openssl"
_START_TIMEOUT_S = 10.0
Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
KeyKind = Literal[
    "ec224", "ec256", "ec384", "ec521", "brainpool256", "ed25519", "ed448", "rsa1024", "rsa2048", "rsa4096"
]
# "sha256-pss": RSASSA-PSS with SHA-256 (an RSA signer only); Ed25519 and Ed448 signers take no digest.
Digest = Literal["sha256", "sha384", "sha512", "sha1", "sha256-pss"]
Family = Literal["certificate", "client-certificate", "protocol", "key-exchange", "cipher"]
Server = Literal["openssl", "tlslite", "tlslite-faulty"]


@dataclass(frozen=True)
class Profile:
    name: str
    ca_extensions_critical: bool
    authority_key_ids: bool


PROFILES = (Profile("critical", True, True), Profile("lenient", False, False))


@dataclass(frozen=True)
class Cert:
    cert: x509.Certificate
    key: Key
    # The key as OpenSSL wrote it, for a key kind `cryptography` reads but writes as another (an RSA-PSS key).
    openssl_key_pem: bytes = b""

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def key_pem(self) -> bytes:
        if self.openssl_key_pem:
            return self.openssl_key_pem
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def _name(common_name: str | None) -> x509.Name:
    if common_name is None:
        return x509.Name([])
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class CorpusPKI:
    """One profile's root and intermediate, and the leaves and odd CAs the endpoints need.

    Keys are made once per kind and shared: generating RSA keys is the slow part, and nothing here
    depends on two certificates having different keys."""

    def __init__(self, profile: Profile, workdir: Path) -> None:
        self.profile = profile
        self.workdir = workdir
        self._keys: dict[str, Key] = {}
        self._keys_lock = threading.Lock()
        label = f"Corpus {profile.name.capitalize()}"
        self.root = self.ca(f"{label} Root CA", issuer=None, key_kind="rsa2048")
        self.intermediate = self.ca(f"{label} Intermediate CA", issuer=self.root, key_kind="ec256")
        self.other_root = self.ca(f"{label} Unknown Root CA", issuer=None, key_kind="ec256", key_slot="other")
        self.other_intermediate = self.ca(f"{label} Unknown Intermediate CA", issuer=self.other_root)
        # Trusted beside `root`: a self-signed leaf that a store holds itself (as a pinned internal service's),
        # and an old-style root without basicConstraints.
        self.trusted_leaf = self.leaf("trusted-self-signed.corpus.test", self_signed=True)
        self.bare_root = self.ca(f"{label} Bare Root CA", issuer=None, basic_constraints=False)
        # A trusted root whose own nameConstraints bind everything below it (as some private roots are made).
        constrained = x509.NameConstraints(
            permitted_subtrees=[x509.DNSName("nc-root.corpus.test")], excluded_subtrees=None
        )
        self.constrained_root = self.ca(f"{label} Constrained Root CA", issuer=None, extra=((constrained, True),))
        self.extra_trusted = (self.trusted_leaf, self.bare_root, self.constrained_root)

    def key(self, kind: KeyKind, slot: str = "") -> Key:
        name = f"{kind}:{slot}"
        with self._keys_lock:  # endpoints are built from several threads at once
            return self._key(kind, name)

    def _key(self, kind: KeyKind, name: str) -> Key:
        if name not in self._keys:
            if kind == "ec256":
                self._keys[name] = ec.generate_private_key(ec.SECP256R1())
            elif kind == "ec384":
                self._keys[name] = ec.generate_private_key(ec.SECP384R1())
            elif kind == "ec521":
                self._keys[name] = ec.generate_private_key(ec.SECP521R1())
            elif kind == "ec224":
                self._keys[name] = ec.generate_private_key(ec.SECP224R1())
            elif kind == "brainpool256":
                self._keys[name] = ec.generate_private_key(ec.BrainpoolP256R1())
            elif kind == "ed25519":
                self._keys[name] = ed25519.Ed25519PrivateKey.generate()
            elif kind == "ed448":
                self._keys[name] = ed448.Ed448PrivateKey.generate()
            else:
                self._keys[name] = rsa.generate_private_key(65537, int(kind.removeprefix("rsa")))
        return self._keys[name]

    def ca(
        self,
        name: str,
        *,
        issuer: Cert | None,
        key_kind: KeyKind = "ec256",
        key_slot: str = "",
        path_length: int | None = None,
        basic_constraints: bool = True,
        digest: Digest = "sha256",
        extra: Sequence[tuple[x509.ExtensionType, bool]] = (),
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        x509_v1: bool = False,
    ) -> Cert:
        """A CA certificate; `key_slot` names the key (a CA of another name's key: the same CA reissued),
        `extra` adds extensions (an extendedKeyUsage, an unknown critical one); `x509_v1` makes it an X.509
        v1 certificate, with no extensions at all (what old CA tools issued)."""
        critical = self.profile.ca_extensions_critical
        extensions: list[tuple[x509.ExtensionType, bool]] = []
        if basic_constraints:
            extensions.append((x509.BasicConstraints(ca=True, path_length=path_length), critical))
        extensions.append((_key_usage(cert_sign=True), critical))
        extensions.extend(extra)
        now = _now()
        end = not_after or now + timedelta(days=3650)
        cert = self._sign(
            subject=_name(name),
            key=self.key(key_kind, key_slot or name),
            issuer=issuer,
            not_before=not_before or min(now - timedelta(days=365), end - timedelta(days=365)),
            not_after=end,
            extensions=extensions,
            digest=digest,
        )
        return self._recertify(cert, issuer or cert, extensions=False) if x509_v1 else cert

    def leaf(
        self,
        *names: str,
        issuer: Cert | None = None,
        key_kind: KeyKind = "ec256",
        common_name: str | Literal[False] | None = False,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        san: bool = True,
        eku: Sequence[ObjectIdentifier] = (ExtendedKeyUsageOID.SERVER_AUTH,),
        extra: Sequence[tuple[x509.ExtensionType, bool]] = (),
        digest: Digest = "sha256",
        self_signed: bool = False,
        ca: bool = False,
        key_usage: x509.KeyUsage | None = None,
        authority_key: Key | None = None,
        serial: int | None = None,
    ) -> Cert:
        """A server certificate for `names`; `common_name` False uses the first name, None leaves none;
        `key_usage` replaces the default one; `authority_key` names another key than the issuer's in the
        Authority Key Identifier; `serial` sets the serial number (zero or negative ones, as OpenSSL signs)."""
        now = _now()
        cn = names[0] if common_name is False else common_name
        extensions: list[tuple[x509.ExtensionType, bool]] = [
            (x509.BasicConstraints(ca=ca, path_length=None), True),
            (key_usage or _key_usage(cert_sign=ca), True),
        ]
        if eku:
            extensions.append((x509.ExtendedKeyUsage(list(eku)), False))
        if san and names:
            extensions.append((x509.SubjectAlternativeName([_general_name(n) for n in names]), not cn))
        extensions.extend(extra)
        signer = None if self_signed else (issuer or self.intermediate)
        cert = self._sign(
            subject=_name(cn),
            key=self.key(key_kind, "leaf"),
            issuer=signer,
            not_before=not_before or now - timedelta(hours=1),
            not_after=not_after or now + timedelta(days=90),
            extensions=extensions,
            digest=digest,
            authority_key_id=(self.profile.authority_key_ids or authority_key is not None) and not self_signed,
            authority_key=authority_key,
        )
        return cert if serial is None else self._recertify(cert, signer or cert, serial=serial)

    def rsa_pss_key_leaf(self, host: str, *, issuer: Cert | None = None) -> Cert:
        """A leaf for `host` whose key is an RSA-PSS one (SubjectPublicKeyInfo rsassaPss), which `cryptography`
        cannot make: OpenSSL makes the key and has `issuer` (the intermediate) certify it."""
        signer = issuer or self.intermediate
        self.workdir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="rsa-pss-", dir=self.workdir))
        (work / "ca.pem").write_bytes(signer.pem)
        (work / "ca.key").write_bytes(signer.key_pem)
        (work / "ext.cnf").write_text(
            f"subjectAltName=DNS:{host}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
        )
        certify = ["-set_serial", str(x509.random_serial_number()), "-extfile", "ext.cnf", "-out", "leaf.pem"]
        steps = [
            [OPENSSL, "genpkey", "-algorithm", "RSA-PSS", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "leaf.key"],
            [OPENSSL, "req", "-new", "-key", "leaf.key", "-subj", f"/CN={host}", "-out", "leaf.csr"],
            [OPENSSL, "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-days", "90", *certify],
        ]
        for step in steps:
            done = subprocess.run(step, cwd=work, capture_output=True, timeout=60, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"openssl could not make the RSA-PSS leaf: {done.stderr.decode(errors='replace')}")
        key_pem = (work / "leaf.key").read_bytes()
        key = serialization.load_pem_private_key(key_pem, None)  # read as a plain RSA key
        assert isinstance(key, rsa.RSAPrivateKey)
        return Cert(x509.load_pem_x509_certificate((work / "leaf.pem").read_bytes()), key, key_pem)

    def _sign(
        self,
        *,
        subject: x509.Name,
        key: Key,
        issuer: Cert | None,
        not_before: datetime,
        not_after: datetime,
        extensions: list[tuple[x509.ExtensionType, bool]],
        digest: str,
        authority_key_id: bool = True,
        authority_key: Key | None = None,
    ) -> Cert:
        signer = issuer.key if issuer else key
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.cert.subject if issuer else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        if authority_key_id and (issuer is not None or self.profile.authority_key_ids):
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key((authority_key or signer).public_key()),
                critical=False,
            )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        chosen = {"sha384": hashes.SHA384(), "sha512": hashes.SHA512()}.get(digest, hashes.SHA256())
        if isinstance(signer, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
            cert = Cert(builder.sign(signer, None), key)
        elif digest == "sha256-pss":
            pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
            cert = Cert(builder.sign(signer, hashes.SHA256(), rsa_padding=pss), key)
        else:
            cert = Cert(builder.sign(signer, chosen), key)  # type: ignore[arg-type]
        if digest == "sha1":
            cert = self._resign_sha1(cert, issuer or cert)
        return cert

    def _resign_sha1(self, cert: Cert, issuer: Cert) -> Cert:
        """`cryptography` refuses to sign with SHA-1, so OpenSSL re-signs the same certificate."""
        return self._recertify(cert, issuer, digest="sha1")

    def _recertify(
        self, cert: Cert, issuer: Cert, *, digest: str = "sha256", extensions: bool = True, serial: int | None = None
    ) -> Cert:
        """OpenSSL signs `cert` again, for what `cryptography` will not make: a SHA-1 signature, an X.509 v1
        certificate (`extensions` False: none kept) or a serial number that is not positive."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="recertified-", dir=self.workdir))
        (work / "in.pem").write_bytes(cert.pem)
        (work / "subject.key").write_bytes(cert.key_pem)
        (work / "ca.pem").write_bytes(issuer.pem)
        (work / "ca.key").write_bytes(issuer.key_pem)
        number = ["-set_serial", str(cert.cert.serial_number if serial is None else serial)]
        if issuer is cert:
            steps = [[OPENSSL, "x509", "-in", "in.pem", "-signkey", "ca.key", f"-{digest}", "-preserve_dates", *number]]
        else:
            # OpenSSL re-certifies only requests: turn the certificate into one, keeping its extensions.
            days = max(1, (cert.cert.not_valid_after_utc - _now()).days)
            to_request = ["-x509toreq", "-in", "in.pem", "-signkey", "subject.key", "-out", "req.pem"]
            certify = ["-req", "-in", "req.pem", "-CA", "ca.pem", "-CAkey", "ca.key", f"-{digest}", "-days", str(days)]
            keep = ["-copy_extensions", "copyall"] if extensions else []
            steps = [[OPENSSL, "x509", *to_request, *keep], [OPENSSL, "x509", *certify, *keep, *number]]
        steps[-1] += ["-out", "out.pem"]
        for step in steps:
            done = subprocess.run(step, cwd=work, capture_output=True, timeout=30, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"openssl could not re-sign the certificate: {done.stderr.decode(errors='replace')}")
        with warnings.catch_warnings():
            # cryptography still reads a serial number that is not positive, and warns that it one day will not.
            warnings.simplefilter("ignore")
            return Cert(x509.load_pem_x509_certificate((work / "out.pem").read_bytes()), cert.key)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not cert_sign,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _general_name(name: str) -> x509.GeneralName:
    import ipaddress

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


@dataclass(frozen=True)
class Served:
    """What one endpoint's server presents: the chain in the order it is sent, and the leaf's key."""

    chain: tuple[Cert, ...]
    client_ca: Cert | None = None  # ask for a client certificate from this CA
    client_cert_optional: bool = False  # ask, but go on without one (s_server -verify, not -Verify)


@dataclass(frozen=True)
class Endpoint:
    name: str
    family: Family
    modelled_on: str  # the public endpoint it imitates
    build: Callable[[CorpusPKI, str], Served]  # (pki, host name) -> what is served
    server_args: tuple[str, ...] = ()  # extra options of the server: `openssl s_server`, or `tlslite_server`
    host: str = ""  # the name clients ask for; default "<name>.corpus.test"
    dh_bits: int = 0  # a DH group of this size for the server (below OpenSSL's built-in 2048 bits)
    profiles: tuple[str, ...] = ("critical", "lenient")
    # `tlslite`: tlslite-ng serves it, for what this host's OpenSSL refuses to serve (a key exchange or a
    # cipher its build leaves out); `tlslite-faulty`: tlslite-ng told to misbehave as servers do (an ALPN
    # protocol nobody offered, a refusal without SNI, an alert or a close instead of a handshake, plain HTTP).
    # Their `server_args` are `tlslite_server` options.
    server: Server = "openssl"
    client_alpn: tuple[str, ...] = ()  # the ALPN protocols every client offers (s_client -alpn, probe --alpn)
    send_sni: bool = True  # False: every client sends no SNI (s_client to the address alone, probe --no-sni)
    listen: str = "127.0.0.1"  # the address the server listens on, which every client connects to ("::1": IPv6)

    @property
    def hostname(self) -> str:
        return self.host or f"{self.name}.corpus.test"


def _good(pki: CorpusPKI, host: str, *more: str, **leaf: object) -> Served:
    return Served((pki.leaf(host, *more, **leaf), pki.intermediate))  # type: ignore[arg-type]


def _good_rsa(pki: CorpusPKI, host: str) -> Served:
    """A good chain whose leaf has an RSA-2048 key: what RSA key exchange and DHE-RSA endpoints need."""
    return _good(pki, host, key_kind="rsa2048")


def _with_chain_of(length: int) -> Callable[[CorpusPKI, str], Served]:
    def build(pki: CorpusPKI, host: str) -> Served:
        cas = [pki.intermediate]
        for index in range(length):
            cas.append(pki.ca(f"Corpus Deep CA {index}", issuer=cas[-1]))
        return Served((pki.leaf(host, issuer=cas[-1]), *reversed(cas)))

    return build


def _path_length_exceeded(pki: CorpusPKI, host: str) -> Served:
    capped = pki.ca("Corpus Capped CA", issuer=pki.root, path_length=0)
    below = pki.ca("Corpus Below-Cap CA", issuer=capped)
    return Served((pki.leaf(host, issuer=below), below, capped))


def _ca_without_basic_constraints(pki: CorpusPKI, host: str) -> Served:
    plain = pki.ca("Corpus No-Constraints CA", issuer=pki.root, basic_constraints=False)
    return Served((pki.leaf(host, issuer=plain), plain))


def _sha1_intermediate(pki: CorpusPKI, host: str) -> Served:
    sha1 = pki.ca("Corpus SHA-1 CA", issuer=pki.root, digest="sha1")
    return Served((pki.leaf(host, issuer=sha1), sha1))


def _weak_ca_key(pki: CorpusPKI, host: str) -> Served:
    weak = pki.ca("Corpus RSA-1024 CA", issuer=pki.root, key_kind="rsa1024")
    return Served((pki.leaf(host, issuer=weak), weak))


def _untrusted_root(pki: CorpusPKI, host: str) -> Served:
    return Served((pki.leaf(host, issuer=pki.other_intermediate), pki.other_intermediate, pki.other_root))


def _leaf_from_root(pki: CorpusPKI, host: str) -> Served:
    return Served((pki.leaf(host, issuer=pki.root),))


def _with_usage(**usages: bool) -> Callable[[CorpusPKI, str], Served]:
    """A good chain whose leaf's keyUsage allows only `usages` (digital_signature=True, ...)."""
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement")
    key_usage = x509.KeyUsage(
        **{n: usages.get(n, False) for n in names},
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    return lambda pki, host: _good(pki, host, key_usage=key_usage)


def _ns_cert_type_client(pki: CorpusPKI, host: str) -> Served:
    # nsCertType BIT STRING with "SSL client" alone (bit 0): OpenSSL reads it and refuses a TLS server.
    ns_cert_type = x509.UnrecognizedExtension(ObjectIdentifier("2.16.840.1.113730.1.1"), b"\x03\x02\x07\x80")
    return _good(pki, host, extra=((ns_cert_type, False),))


def _intermediate_with(name: str, *extra: tuple[x509.ExtensionType, bool]) -> Callable[[CorpusPKI, str], Served]:
    def build(pki: CorpusPKI, host: str) -> Served:
        ca = pki.ca(name, issuer=pki.root, extra=extra)
        return Served((pki.leaf(host, issuer=ca), ca))

    return build


def _expired_intermediate(pki: CorpusPKI, host: str) -> Served:
    """The intermediate's older issue (same name and key, expired) served instead of the current one."""
    current = pki.intermediate.cert.subject.rfc4514_string().removeprefix("CN=")
    old = pki.ca(current, issuer=pki.root, not_after=_now() - timedelta(days=5))
    return Served((pki.leaf(host), old))


def _v1_intermediate(pki: CorpusPKI, host: str) -> Served:
    v1 = pki.ca("Corpus X.509 v1 CA", issuer=pki.root, x509_v1=True)
    return Served((pki.leaf(host, issuer=v1), v1))


def _not_yet_valid_intermediate(pki: CorpusPKI, host: str) -> Served:
    """The intermediate's next issue (same name and key), valid only from two days on, served too early."""
    current = pki.intermediate.cert.subject.rfc4514_string().removeprefix("CN=")
    return Served((pki.leaf(host), pki.ca(current, issuer=pki.root, not_before=_now() + timedelta(days=2))))


def _wrong_authority_key_id(pki: CorpusPKI, host: str) -> Served:
    """Signed by the served intermediate, with an Authority Key Identifier naming another key."""
    return Served((pki.leaf(host, authority_key=pki.key("ec256", "unrelated")), pki.intermediate))


def _reordered(pki: CorpusPKI, host: str) -> Served:
    """Two intermediates sent root-side first: OpenSSL finds issuers wherever they are in the chain."""
    leaf, lower, upper = _with_chain_of(1)(pki, host).chain
    return Served((leaf, upper, lower))


def _served_also(*extra: Callable[[CorpusPKI], Cert]) -> Callable[[CorpusPKI, str], Served]:
    """A good chain with more certificates sent after it (a duplicate, the root, a stale one)."""

    def build(pki: CorpusPKI, host: str) -> Served:
        return Served((*_good(pki, host).chain, *(e(pki) for e in extra)))

    return build


def _under_bare_root(pki: CorpusPKI, host: str) -> Served:
    ca = pki.ca("Corpus Below-Bare-Root CA", issuer=pki.bare_root)
    return Served((pki.leaf(host, issuer=ca), ca))


def _trusted_self_signed(pki: CorpusPKI, host: str) -> Served:
    return Served((pki.trusted_leaf,))


def _leaf_with_dns_ip(pki: CorpusPKI, host: str) -> Served:
    """The IP target written as a DNS SAN (and CN), a common mistake: clients compare IPs with IP SANs only."""
    leaf = pki.leaf(host, san=False, extra=((x509.SubjectAlternativeName([x509.DNSName(host)]), False),))
    return Served((leaf, pki.intermediate))


def _with_dns_sans(*values: bytes, common_name: str | None = None) -> Callable[[CorpusPKI, str], Served]:
    """A leaf whose subjectAltName holds `values` as DNS names byte for byte (empty, with a NUL, in UTF-8: what
    `cryptography` will not write), its subject CN `common_name` (the host when None)."""

    def build(pki: CorpusPKI, host: str) -> Served:
        body = b"".join(_der(0x82, value) for value in values)  # [2] IMPLICIT IA5String: dNSName
        names = x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, _der(0x30, body))
        return _good(pki, host, common_name=common_name or host, san=False, extra=((names, False),))

    return build


def _client_ca(pki: CorpusPKI, host: str) -> Served:
    return Served((pki.leaf(host), pki.intermediate), client_ca=pki.ca("Corpus Client CA", issuer=pki.root))


def _client_ca_optional(pki: CorpusPKI, host: str) -> Served:
    return Served(_good(pki, host).chain, pki.ca("Corpus Client CA", issuer=pki.root), client_cert_optional=True)


def _under_constraints(
    permitted: Sequence[x509.GeneralName] | None = None,
    excluded: Sequence[x509.GeneralName] | None = None,
    *names: str,
    critical: bool = True,
    **leaf: object,
) -> Callable[[CorpusPKI, str], Served]:
    """A leaf for `names` (the host by default) from an intermediate with these nameConstraints."""

    def build(pki: CorpusPKI, host: str) -> Served:
        constraints = x509.NameConstraints(
            permitted_subtrees=list(permitted) if permitted else None,
            excluded_subtrees=list(excluded) if excluded else None,
        )
        ca = pki.ca("Corpus Name-Constrained CA", issuer=pki.root, extra=((constraints, critical),))
        return Served((pki.leaf(*(names or (host,)), issuer=ca, **leaf), ca))  # type: ignore[arg-type]

    return build


def _constrained_with_sans(
    permitted: Sequence[x509.GeneralName], *sans: x509.GeneralName
) -> Callable[[CorpusPKI, str], Served]:
    """A leaf for the host and `sans` of other forms (a URI, an email, an otherName) from a constrained CA."""

    def build(pki: CorpusPKI, host: str) -> Served:
        names = x509.SubjectAlternativeName([x509.DNSName(host), *sans])
        return _under_constraints(permitted, None, san=False, extra=((names, False),))(pki, host)

    return build


def _under_constrained_root(pki: CorpusPKI, host: str) -> Served:
    ca = pki.ca("Corpus Below-Constrained-Root CA", issuer=pki.constrained_root)
    return Served((pki.leaf(host, issuer=ca), ca))


def _signed_by(
    key_kind: KeyKind, *, digest: Digest = "sha256", leaf_key: KeyKind = "ec256"
) -> Callable[[CorpusPKI, str], Served]:
    """A leaf from an intermediate with a `key_kind` key, the intermediate signed by the root with `digest`."""

    def build(pki: CorpusPKI, host: str) -> Served:
        ca = pki.ca(f"Corpus {key_kind.upper()} CA", issuer=pki.root, key_kind=key_kind, digest=digest)
        return Served((pki.leaf(host, issuer=ca, key_kind=leaf_key), ca))

    return build


def _pss_signed_leaf(pki: CorpusPKI, host: str) -> Served:
    """An RSA intermediate that signs the leaf with RSASSA-PSS (the intermediate itself PKCS#1 v1.5)."""
    ca = pki.ca("Corpus RSA2048 CA", issuer=pki.root, key_kind="rsa2048")
    return Served((pki.leaf(host, issuer=ca, digest="sha256-pss"), ca))


def _rsa_pss_key(pki: CorpusPKI, host: str) -> Served:
    return Served((pki.rsa_pss_key_leaf(host), pki.intermediate))


_UNHANDLED = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.1.1"), b"\x05\x00")
_RSA_TLS12 = ("-no_tls1_3",)
_NC_DNS = (x509.DNSName("nc.corpus.test"),)
_NC_DOT = (x509.DNSName(".dot.nc.corpus.test"),)
_NC_LOOPBACK = (x509.IPAddress(ipaddress.ip_network("127.0.0.0/8")),)
_NC_PRIVATE = (x509.IPAddress(ipaddress.ip_network("10.0.0.0/8")),)
_NC_URI = (x509.UniformResourceIdentifier(".nc.corpus.test"),)


def _other_name(value: bytes) -> x509.OtherName:
    return x509.OtherName(ObjectIdentifier("1.3.6.1.4.1.55555.2"), value)  # value: a DER UTF8String


_NC_DIRECTORY = (x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Corpus")])),)
# The server must be willing to present what it serves: its own security level would refuse weak keys
# and SHA-1 signatures before any client sees them.
_WEAK_OK = ("-cipher", "DEFAULT@SECLEVEL=0")
# tlslite_server options: TLS 1.2 at most, RSA key exchange (with the RSA leaf these endpoints serve).
_TLSLITE_RSA_TLS12 = ("--key-exchange", "rsa", "--max-version", "1.2")
_TLSLITE_DHE_TLS12 = ("--key-exchange", "dhe_rsa", "--max-version", "1.2", "--cipher", "aes128gcm", "--mac", "aead")
# What the server does at the protocol level does not hang on how its CA writes extensions: one profile will do
# (and a tlslite-ng process less to start).
_ONE_PROFILE = ("critical",)
_TLSLITE_ECDHE = ("--key-exchange", "ecdhe_ecdsa", "--cipher", "aes128gcm", "--mac", "aead")
_TLSLITE_ALPN_REGARDLESS = (*_TLSLITE_ECDHE, "--alpn", "http/1.1", "--alpn-regardless")
# s_server that knows one name, other.corpus.test, and not the one clients ask for: it answers their SNI with
# an unrecognized_name alert, a warning (clients go on) unless `-servername_fatal` follows.
_SERVES_OTHER_NAME = ("-servername", "other.corpus.test", "-cert2", "leaf.pem", "-key2", "leaf.key")


def _endpoints() -> tuple[Endpoint, ...]:
    now = _now()
    c: Family = "certificate"
    return (
        # --- certificate: badssl.com's certificate and known-bad families
        Endpoint("sha256", c, "sha256.badssl.com", lambda p, h: _good(p, h)),
        Endpoint("sha384", c, "sha384.badssl.com", lambda p, h: _good(p, h, digest="sha384")),
        Endpoint("sha512", c, "sha512.badssl.com", lambda p, h: _good(p, h, digest="sha512")),
        Endpoint("sha1-leaf", c, "sha1-2016.badssl.com", lambda p, h: _good(p, h, digest="sha1"), _WEAK_OK),
        Endpoint("sha1-intermediate", c, "sha1-intermediate.badssl.com", _sha1_intermediate, _WEAK_OK),
        Endpoint("rsa2048", c, "rsa2048.badssl.com", _good_rsa),
        Endpoint("rsa4096", c, "rsa4096.badssl.com", lambda p, h: _good(p, h, key_kind="rsa4096")),
        Endpoint("rsa1024", c, "(weak leaf key)", lambda p, h: _good(p, h, key_kind="rsa1024"), _WEAK_OK),
        Endpoint("rsa1024-ca", c, "(weak CA key)", _weak_ca_key, _WEAK_OK),
        Endpoint("ecc256", c, "ecc256.badssl.com", lambda p, h: _good(p, h, key_kind="ec256")),
        Endpoint("ecc384", c, "ecc384.badssl.com", lambda p, h: _good(p, h, key_kind="ec384")),
        Endpoint(
            "expired",
            c,
            "expired.badssl.com",
            lambda p, h: _good(p, h, not_before=now - timedelta(days=90), not_after=now - timedelta(days=2)),
        ),
        Endpoint(
            "not-yet-valid",
            c,
            "(future validity)",
            lambda p, h: _good(p, h, not_before=now + timedelta(days=2), not_after=now + timedelta(days=90)),
        ),
        Endpoint("wrong-host", c, "wrong.host.badssl.com", lambda p, h: _good(p, "other.corpus.test")),
        Endpoint(
            "wildcard",
            c,
            "*.badssl.com",
            lambda p, h: _good(p, "*.wildcard.corpus.test"),
            host="a.wildcard.corpus.test",
        ),
        Endpoint(
            "wildcard-too-deep",
            c,
            "(wildcard one level too deep)",
            lambda p, h: _good(p, "*.corpus.test"),
            host="a.b.wildcard-deep.corpus.test",
        ),
        Endpoint("ip-san", c, "(IP address SAN)", lambda p, h: _good(p, "127.0.0.1"), host="127.0.0.1"),
        Endpoint("no-common-name", c, "no-common-name.badssl.com", lambda p, h: _good(p, h, common_name=None)),
        Endpoint("cn-only", c, "(CN, no SAN)", lambda p, h: _good(p, h, san=False)),
        Endpoint("1000-sans", c, "1000-sans.badssl.com", lambda p, h: _good(p, h, *_many(1000))),
        Endpoint("10000-sans", c, "10000-sans.badssl.com", lambda p, h: _good(p, h, *_many(10000))),
        Endpoint("self-signed", c, "self-signed.badssl.com", lambda p, h: Served((p.leaf(h, self_signed=True),))),
        Endpoint("untrusted-root", c, "untrusted-root.badssl.com", _untrusted_root),
        Endpoint("incomplete-chain", c, "incomplete-chain.badssl.com", lambda p, h: Served((p.leaf(h),))),
        Endpoint("leaf-from-root", c, "(leaf issued by the root, as mkcert does)", _leaf_from_root),
        Endpoint(
            "no-server-auth",
            c,
            "(EKU without serverAuth)",
            lambda p, h: _good(p, h, eku=(ExtendedKeyUsageOID.CLIENT_AUTH,)),
        ),
        Endpoint(
            "unhandled-critical",
            c,
            "(unknown critical extension)",
            lambda p, h: _good(p, h, extra=((_UNHANDLED, True),)),
        ),
        Endpoint("ca-without-basic-constraints", c, "(CA with no basicConstraints)", _ca_without_basic_constraints),
        # --- certificate: x509-limbo-style names, usages and chain shapes
        Endpoint(
            "wildcard-public-suffix", c, "(*.test for corpus.test)", lambda p, h: _good(p, "*.test"), host="corpus.test"
        ),
        Endpoint(
            "wildcard-in-a-label",
            c,
            "(xn--* wildcard)",
            lambda p, h: _good(p, "xn--*.corpus.test"),
            host="xn--bcher-kva.corpus.test",
        ),
        Endpoint(
            "wildcard-idn",
            c,
            "(whole-label wildcard for an A-label)",
            lambda p, h: _good(p, "*.idn.corpus.test"),
            host="xn--bcher-kva.idn.corpus.test",
        ),
        Endpoint(
            "partial-wildcard-prefix",
            c,
            "(f*.example: OpenSSL takes it, Python and curl do not)",
            lambda p, h: _good(p, "f*.pw.corpus.test"),
            host="foo.pw.corpus.test",
        ),
        Endpoint(
            "partial-wildcard-suffix",
            c,
            "(*oo.example)",
            lambda p, h: _good(p, "*oo.pws.corpus.test"),
            host="foo.pws.corpus.test",
        ),
        Endpoint("idn", c, "(A-label SAN)", lambda p, h: _good(p, h), host="xn--bcher-kva.corpus.test"),
        Endpoint("uppercase-san", c, "(SAN in capitals)", lambda p, h: _good(p, h.upper())),
        Endpoint("uppercase-target", c, "(name asked in capitals)", _good, host="UPPERCASE-TARGET.corpus.test"),
        Endpoint("trailing-dot-san", c, "(SAN ending in a dot)", lambda p, h: _good(p, h + ".")),
        Endpoint("ip-as-dns-san", c, "(IP written as a DNS SAN)", _leaf_with_dns_ip, host="127.0.0.1"),
        Endpoint("ip-in-cn-only", c, "(IP in the CN, no SAN)", lambda p, h: _good(p, h, san=False), host="127.0.0.1"),
        Endpoint("dns-target-ip-san", c, "(DNS name against an IP SAN)", lambda p, h: _good(p, "127.0.0.1")),
        Endpoint(
            "cn-only-wildcard",
            c,
            "(wildcard CN, no SAN)",
            lambda p, h: _good(p, "*.cn-only-wildcard.corpus.test", san=False),
            host="a.cn-only-wildcard.corpus.test",
        ),
        Endpoint(
            "any-eku",
            c,
            "(anyExtendedKeyUsage alone)",
            lambda p, h: _good(p, h, eku=(ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,)),
        ),
        Endpoint("ns-cert-type-client", c, "(nsCertType SSL client)", _ns_cert_type_client),
        Endpoint("leaf-ku-non-repudiation", c, "(keyUsage nonRepudiation alone)", _with_usage(content_commitment=True)),
        Endpoint("leaf-ku-key-agreement", c, "(keyUsage keyAgreement alone)", _with_usage(key_agreement=True)),
        # Over TLS 1.2 alone the server cannot sign ECDHE-ECDSA with that key: it refuses every offer.
        Endpoint(
            "leaf-ku-key-agreement-tls12",
            c,
            "(keyUsage keyAgreement alone, TLS 1.2 only)",
            _with_usage(key_agreement=True),
            _RSA_TLS12,
        ),
        Endpoint("leaf-is-ca", c, "(leaf with CA:TRUE)", lambda p, h: _good(p, h, ca=True)),
        Endpoint(
            "intermediate-no-server-auth",
            c,
            "(intermediate EKU clientAuth)",
            _intermediate_with(
                "Corpus ClientAuth CA", (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            ),
        ),
        Endpoint(
            "intermediate-unhandled-critical",
            c,
            "(unknown critical extension on the intermediate)",
            _intermediate_with("Corpus Critical-Extension CA", (_UNHANDLED, True)),
        ),
        Endpoint("expired-intermediate", c, "(intermediate expired, reissued)", _expired_intermediate),
        Endpoint("wrong-authority-key-id", c, "(AKI naming another key)", _wrong_authority_key_id),
        Endpoint("not-yet-valid-intermediate", c, "(intermediate valid from later)", _not_yet_valid_intermediate),
        Endpoint("v1-intermediate", c, "(X.509 v1 intermediate)", _v1_intermediate),
        Endpoint("negative-serial", c, "(negative serial number)", lambda p, h: _good(p, h, serial=-5)),
        Endpoint("zero-serial", c, "(serial number zero)", lambda p, h: _good(p, h, serial=0)),
        Endpoint("long-serial", c, "(serial number of 21 octets)", lambda p, h: _good(p, h, serial=2**160 + 1)),
        Endpoint("chain-out-of-order", c, "(intermediates out of order)", _reordered),
        Endpoint("duplicate-intermediate", c, "(intermediate sent twice)", _served_also(lambda p: p.intermediate)),
        Endpoint("root-served", c, "(root sent too)", _served_also(lambda p: p.root)),
        Endpoint(
            "unrelated-extra", c, "(stale certificate in the chain file)", _served_also(lambda p: p.other_intermediate)
        ),
        Endpoint("trusted-self-signed", c, "(self-signed leaf in the trust store)", _trusted_self_signed),
        Endpoint("root-without-basic-constraints", c, "(trusted root with no basicConstraints)", _under_bare_root),
        Endpoint("path-length-exceeded", c, "(pathLenConstraint 0 exceeded)", _path_length_exceeded),
        Endpoint("long-chain", c, "(eight intermediates)", _with_chain_of(7)),
        # --- certificate: x509-limbo's name constraints (RFC 5280 4.2.1.10) as OpenSSL applies them
        Endpoint(
            "nc-permitted",
            c,
            "(name inside a permitted DNS subtree)",
            _under_constraints(_NC_DNS),
            host="permitted.nc.corpus.test",
        ),
        Endpoint(
            "nc-permitted-outside",
            c,
            "(name outside the permitted DNS subtree)",
            _under_constraints(_NC_DNS),
            host="nc.other.corpus.test",
        ),
        Endpoint(
            "nc-one-san-outside",
            c,
            "(asked name inside, another SAN outside)",
            lambda p, h: _under_constraints(_NC_DNS, None, h, "api.other.corpus.test")(p, h),
            host="one-san.nc.corpus.test",
        ),
        Endpoint(
            "nc-excluded",
            c,
            "(name inside an excluded DNS subtree)",
            _under_constraints(None, _NC_DNS),
            host="excluded.nc.corpus.test",
        ),
        Endpoint(
            "nc-excluded-other",
            c,
            "(excluded subtree, name elsewhere)",
            _under_constraints(None, _NC_DNS),
            host="nc.other.corpus.test",
        ),
        Endpoint(
            "nc-ip-permitted",
            c,
            "(IP SAN inside a permitted range)",
            _under_constraints(_NC_LOOPBACK),
            host="127.0.0.1",
        ),
        Endpoint(
            "nc-ip-outside",
            c,
            "(IP SAN outside the permitted range)",
            _under_constraints(_NC_PRIVATE),
            host="127.0.0.1",
        ),
        Endpoint(
            "nc-cn-only-inside",
            c,
            "(CN only, inside the DNS constraint)",
            _under_constraints(_NC_DNS, san=False),
            host="cn-only.nc.corpus.test",
        ),
        Endpoint(
            "nc-cn-only-outside",
            c,
            "(CN only, outside the DNS constraint)",
            _under_constraints(_NC_DNS, san=False),
            host="nc.other.corpus.test",
        ),
        Endpoint(
            "nc-leading-dot-subdomain",
            c,
            "(.example constraint, a subdomain)",
            _under_constraints(_NC_DOT),
            host="a.dot.nc.corpus.test",
        ),
        Endpoint(
            "nc-leading-dot-bare",
            c,
            "(.example constraint, the bare name)",
            _under_constraints(_NC_DOT),
            host="dot.nc.corpus.test",
        ),
        Endpoint(
            "nc-not-critical",
            c,
            "(name constraints not critical)",
            _under_constraints(_NC_DNS, critical=False),
            host="nc.other.corpus.test",
        ),
        Endpoint(
            "nc-uri-constraint",
            c,
            "(a URI constraint, a DNS-only leaf)",
            _under_constraints(_NC_URI),
            host="uri.nc.corpus.test",
        ),
        Endpoint(
            "nc-uri-san-outside",
            c,
            "(a URI SAN outside a URI constraint)",
            _constrained_with_sans(_NC_URI, x509.UniformResourceIdentifier("https://x.other.corpus.test/")),
            host="uri-out.nc.corpus.test",
        ),
        Endpoint(
            "nc-email-san-outside",
            c,
            "(an email SAN outside an email constraint)",
            _constrained_with_sans((x509.RFC822Name("nc.corpus.test"),), x509.RFC822Name("ops@other.corpus.test")),
            host="email-out.nc.corpus.test",
        ),
        Endpoint(
            "nc-othername",
            c,
            "(an otherName constraint and SAN: a form OpenSSL does not apply)",
            _constrained_with_sans((_other_name(b"\x0c\x01b"),), _other_name(b"\x0c\x01a")),
            host="other-name.nc.corpus.test",
        ),
        Endpoint(
            "nc-directory-name",
            c,
            "(a directoryName constraint the subject is outside)",
            _under_constraints(_NC_DIRECTORY),
        ),
        Endpoint(
            "nc-on-the-root",
            c,
            "(name constraints on the trusted root)",
            _under_constrained_root,
            host="nc-root.corpus.test",
        ),
        Endpoint("nc-on-the-root-outside", c, "(outside the trusted root's constraints)", _under_constrained_root),
        # --- certificate: signature algorithms and key kinds
        Endpoint("rsa-pss-signature", c, "(leaf signed with RSASSA-PSS)", _pss_signed_leaf),
        Endpoint(
            "rsa-pss-intermediate", c, "(intermediate signed with RSASSA-PSS)", _signed_by("ec256", digest="sha256-pss")
        ),
        Endpoint("rsa-pss-key", c, "(leaf with an RSA-PSS key, rsassaPss SPKI)", _rsa_pss_key),
        Endpoint("ed25519", c, "(Ed25519 leaf)", lambda p, h: _good(p, h, key_kind="ed25519")),
        Endpoint("ed25519-intermediate", c, "(Ed25519 intermediate)", _signed_by("ed25519")),
        Endpoint("ed448", c, "(Ed448 leaf)", lambda p, h: _good(p, h, key_kind="ed448")),
        Endpoint(
            "ed25519-tls12", c, "(Ed25519 leaf over TLS 1.2)", lambda p, h: _good(p, h, key_kind="ed25519"), _RSA_TLS12
        ),
        Endpoint("ecc521", c, "(ECDSA P-521 leaf)", lambda p, h: _good(p, h, key_kind="ec521")),
        Endpoint("ecc521-intermediate", c, "(ECDSA P-521 intermediate)", _signed_by("ec521")),
        # Curves outside OpenSSL's default groups: the server has no certificate it can use with the client's offer.
        Endpoint("ecc224", c, "(ECDSA P-224 leaf)", lambda p, h: _good(p, h, key_kind="ec224")),
        Endpoint("brainpool256", c, "(ECDSA brainpoolP256r1 leaf)", lambda p, h: _good(p, h, key_kind="brainpool256")),
        # --- certificate: the name asked with a trailing dot
        Endpoint(
            "trailing-dot-target",
            c,
            "(name asked with a trailing dot)",
            lambda p, h: _good(p, h.rstrip(".")),
            host="trailing-dot-target.corpus.test.",
        ),
        Endpoint(
            "trailing-dot-both", c, "(trailing dot asked, and in the SAN)", _good, host="trailing-dot-both.corpus.test."
        ),
        # --- certificate: how the asked name meets the certificate's (x509-limbo's name-matching families). Names
        # hang on no CA extension: one profile will do.
        Endpoint(
            "wildcard-apex",
            c,
            "(*.example for the bare example)",
            lambda p, h: _good(p, "*.wildcard-apex.corpus.test"),
            host="wildcard-apex.corpus.test",
            profiles=_ONE_PROFILE,
        ),
        Endpoint(
            "wildcard-not-leftmost",
            c,
            "(foo.*.example)",
            lambda p, h: _good(p, "a.*.wnl.corpus.test"),
            host="a.b.wnl.corpus.test",
            profiles=_ONE_PROFILE,
        ),
        Endpoint(
            "wildcard-two",
            c,
            "(*.*.example)",
            lambda p, h: _good(p, "*.*.w2.corpus.test"),
            host="a.b.w2.corpus.test",
            profiles=_ONE_PROFILE,
        ),
        Endpoint(
            "wildcard-alone", c, "(* alone)", lambda p, h: _good(p, "*"), host="corpus.test", profiles=_ONE_PROFILE
        ),
        Endpoint(
            "partial-wildcard-inner",
            c,
            "(f*o.example: no client takes it)",
            lambda p, h: _good(p, "f*o.pwi.corpus.test"),
            host="foo.pwi.corpus.test",
            profiles=_ONE_PROFILE,
        ),
        Endpoint(
            "partial-wildcard-a-label",
            c,
            "(x*.example for an A-label)",
            lambda p, h: _good(p, "x*.pwa.corpus.test"),
            host="xn--bcher-kva.pwa.corpus.test",
            profiles=_ONE_PROFILE,
        ),
        Endpoint(
            "partial-wildcard-empty",
            c,
            "(foo*.example for foo.example: OpenSSL lets * stand for nothing)",
            lambda p, h: _good(p, "wildcard-empty*.corpus.test"),
            host="wildcard-empty.corpus.test",
            profiles=_ONE_PROFILE,
        ),
        # OpenSSL lets a wildcard stand for letters, digits and hyphens only, and takes a pattern with any other
        # character for a literal name; curl's own check looks at none of them.
        Endpoint(
            "wildcard-underscore-label",
            c,
            "(*.example for a_b.example)",
            lambda p, h: _good(p, "*.wul.corpus.test"),
            host="under_score.wul.corpus.test",
            profiles=_ONE_PROFILE,
        ),
        Endpoint(
            "wildcard-underscore-parent",
            c,
            "(*.a_b.example)",
            lambda p, h: _good(p, "*.under_score.corpus.test"),
            host="a.under_score.corpus.test",
            profiles=_ONE_PROFILE,
        ),
        Endpoint(
            "wildcard-trailing-dot-san",
            c,
            "(*.example. in the SAN)",
            lambda p, h: _good(p, "*.wtd.corpus.test."),
            host="a.wtd.corpus.test",
            profiles=_ONE_PROFILE,
        ),
        Endpoint(
            "wildcard-over-a-label-parent",
            c,
            "(*.xn--... for a name below an A-label)",
            lambda p, h: _good(p, "*.xn--bcher-kva.corpus.test"),
            host="a.xn--bcher-kva.corpus.test",
            profiles=_ONE_PROFILE,
        ),
        # The subject CN as the fallback name (no DNS subjectAltName), with OpenSSL's wildcard rules.
        Endpoint(
            "cn-only-partial-wildcard",
            c,
            "(f*.example CN, no SAN: s_client takes it, Python and curl do not)",
            lambda p, h: _good(p, "f*.cn-pw.corpus.test", san=False),
            host="foo.cn-pw.corpus.test",
            profiles=_ONE_PROFILE,
        ),
        Endpoint(
            "cn-only-wildcard-underscore",
            c,
            "(wildcard CN, no SAN, for a_b.example)",
            lambda p, h: _good(p, "*.cn-wu.corpus.test", san=False),
            host="under_score.cn-wu.corpus.test",
            profiles=_ONE_PROFILE,
        ),
        Endpoint(
            "cn-beside-ip-san",
            c,
            "(the name in the CN, an IP SAN alone: curl refuses)",
            lambda p, h: _good(p, "127.0.0.1", common_name=h),
            profiles=_ONE_PROFILE,
        ),
        # DNS SANs no client matches: what broken certificate templates write, and the NUL of the 2009 spoofing attacks.
        Endpoint(
            "empty-dns-san", c, "(an empty dNSName, the name in the CN)", _with_dns_sans(b""), profiles=_ONE_PROFILE
        ),
        Endpoint(
            "nul-in-dns-san",
            c,
            "(a dNSName with a NUL: host\\0.evil)",
            _with_dns_sans(b"nul-in-dns-san.corpus.test\x00.evil.test", common_name="evil.test"),
            profiles=_ONE_PROFILE,
        ),
        Endpoint(
            "utf8-dns-san",
            c,
            "(a dNSName in UTF-8, not an A-label)",
            _with_dns_sans("bücher.utf8-san.corpus.test".encode(), common_name="utf8"),
            host="xn--bcher-kva.utf8-san.corpus.test",
            profiles=_ONE_PROFILE,
        ),
        # IPv6 targets: the address checked against IP SANs only, written in any form, and no SNI sent.
        Endpoint(
            "ipv6-san",
            c,
            "(IPv6 address SAN)",
            lambda p, h: _good(p, "::1"),
            host="::1",
            listen="::1",
            profiles=_ONE_PROFILE,
        ),
        Endpoint(
            "ipv6-expanded-target",
            c,
            "(IPv6 target written out in full)",
            lambda p, h: _good(p, "::1"),
            host="0:0:0:0:0:0:0:1",
            listen="::1",
            profiles=_ONE_PROFILE,
        ),
        Endpoint(
            "ipv6-as-dns-san",
            c,
            "(IPv6 address written as a DNS SAN)",
            _leaf_with_dns_ip,
            host="::1",
            listen="::1",
            profiles=_ONE_PROFILE,
        ),
        Endpoint(
            "ipv6-in-cn-only",
            c,
            "(IPv6 address in the CN, no SAN)",
            lambda p, h: _good(p, h, san=False),
            host="::1",
            listen="::1",
            profiles=_ONE_PROFILE,
        ),
        Endpoint(
            "ipv6-target-ipv4-san",
            c,
            "(IPv6 target, an IPv4 SAN)",
            lambda p, h: _good(p, "127.0.0.1", "localhost"),
            host="::1",
            listen="::1",
            profiles=_ONE_PROFILE,
        ),
        Endpoint(
            "long-name",
            c,
            "(a 253-character name)",
            lambda p, h: _good(p, h, common_name=None),  # a CN holds 64 characters at most
            host=".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 49]) + ".corpus.test",
            profiles=_ONE_PROFILE,
        ),
        # --- client certificate
        Endpoint("client-cert-required", "client-certificate", "client-cert-missing.badssl.com", _client_ca),
        Endpoint(
            "client-cert-required-tls12",
            "client-certificate",
            "client-cert-missing.badssl.com (TLS 1.2)",
            _client_ca,
            server_args=("-no_tls1_3",),
        ),
        Endpoint(
            "client-cert-optional",
            "client-certificate",
            "(client certificate asked for, optional)",
            _client_ca_optional,
        ),
        Endpoint(
            "client-cert-optional-tls12",
            "client-certificate",
            "(client certificate asked for, optional, TLS 1.2)",
            _client_ca_optional,
            server_args=("-no_tls1_3",),
        ),
        # --- protocol
        Endpoint("tls-v1-0", "protocol", "tls-v1-0.badssl.com", _good, ("-tls1", "-cipher", "DEFAULT@SECLEVEL=0")),
        Endpoint("tls-v1-1", "protocol", "tls-v1-1.badssl.com", _good, ("-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")),
        Endpoint("tls-v1-2", "protocol", "tls-v1-2.badssl.com", _good, ("-tls1_2",)),
        Endpoint("tls-v1-3", "protocol", "tls-v1-3.badssl.com", _good, ("-tls1_3",)),
        # --- protocol: ALPN and SNI, as strict servers answer them
        Endpoint(
            "alpn-h2", "protocol", "(h2 offered and chosen)", _good, ("-alpn", "h2,http/1.1"), client_alpn=("h2",)
        ),
        Endpoint(
            "alpn-refused",
            "protocol",
            "(h2 offered, http/1.1 served: no_application_protocol)",
            _good,
            ("-alpn", "http/1.1"),
            client_alpn=("h2",),
        ),
        # A server that selects its one protocol whatever the client offered: clients must refuse it (RFC 7301).
        Endpoint(
            "alpn-unoffered",
            "protocol",
            "(http/1.1 selected, h2 offered)",
            _good,
            (*_TLSLITE_ALPN_REGARDLESS, "--max-version", "1.3"),
            client_alpn=("h2",),
            server="tlslite-faulty",
            profiles=_ONE_PROFILE,
        ),
        Endpoint(
            "alpn-unoffered-tls12",
            "protocol",
            "(http/1.1 selected, h2 offered, TLS 1.2)",
            _good,
            (*_TLSLITE_ALPN_REGARDLESS, "--max-version", "1.2"),
            client_alpn=("h2",),
            server="tlslite-faulty",
            profiles=_ONE_PROFILE,
        ),
        Endpoint(
            "sni-unknown-fatal",
            "protocol",
            "(unrecognized_name, fatal)",
            _good,
            (*_SERVES_OTHER_NAME, "-servername_fatal"),
        ),
        Endpoint("sni-unknown-warning", "protocol", "(unrecognized_name as a warning)", _good, _SERVES_OTHER_NAME),
        Endpoint(
            "sni-unknown-warning-tls12",
            "protocol",
            "(unrecognized_name as a warning, TLS 1.2)",
            _good,
            (*_SERVES_OTHER_NAME, "-no_tls1_3"),
        ),
        # A server that serves by SNI alone, asked without SNI: CDNs answer handshake_failure, nginx's
        # `ssl_reject_handshake` unrecognized_name.
        Endpoint(
            "sni-required",
            "protocol",
            "(no SNI sent: handshake_failure)",
            _good,
            (*_TLSLITE_ECDHE, "--max-version", "1.3", "--sni-required", "handshake_failure"),
            server="tlslite-faulty",
            profiles=_ONE_PROFILE,
            send_sni=False,
        ),
        Endpoint(
            "sni-required-unrecognized-name",
            "protocol",
            "(no SNI sent: unrecognized_name)",
            _good,
            (*_TLSLITE_ECDHE, "--max-version", "1.3", "--sni-required", "unrecognized_name"),
            server="tlslite-faulty",
            profiles=_ONE_PROFILE,
            send_sni=False,
        ),
        # --- protocol: servers that break off (tlslite-ng, told to)
        Endpoint(
            "plain-http",
            "protocol",
            "http.badssl.com (plain HTTP where TLS was asked for)",
            _good,
            (*_TLSLITE_ECDHE, "--plain-http"),
            server="tlslite-faulty",
            profiles=_ONE_PROFILE,
        ),
        Endpoint(
            "alert-on-hello",
            "protocol",
            "(internal_error instead of a ServerHello)",
            _good,
            (*_TLSLITE_ECDHE, "--alert-on-hello", "internal_error"),
            server="tlslite-faulty",
            profiles=_ONE_PROFILE,
        ),
        Endpoint(
            "closed-after-server-hello",
            "protocol",
            "(the ServerHello, then a close)",
            _good,
            (*_TLSLITE_ECDHE, "--max-version", "1.3", "--close-after-server-hello"),
            server="tlslite-faulty",
            profiles=_ONE_PROFILE,
        ),
        # --- key exchange
        Endpoint(
            "static-rsa",
            "key-exchange",
            "static-rsa.badssl.com",
            _good_rsa,
            (*_RSA_TLS12, "-cipher", "AES128-GCM-SHA256"),
        ),
        # s_server refuses DH groups below 1024 bits ("dh key too small", even at SECLEVEL=0): tlslite
        # serves them, DHE-RSA-AES128-GCM-SHA256 with the group alone.
        Endpoint(
            "dh480",
            "key-exchange",
            "dh480.badssl.com",
            _good_rsa,
            _TLSLITE_DHE_TLS12,
            dh_bits=480,
            server="tlslite",
        ),
        Endpoint(
            "dh512",
            "key-exchange",
            "dh512.badssl.com",
            _good_rsa,
            _TLSLITE_DHE_TLS12,
            dh_bits=512,
            server="tlslite",
        ),
        Endpoint(
            "dh1024",
            "key-exchange",
            "dh1024.badssl.com",
            _good_rsa,
            (*_RSA_TLS12, "-cipher", "DHE-RSA-AES128-GCM-SHA256@SECLEVEL=0"),
            dh_bits=1024,
        ),
        Endpoint(
            "dh2048",
            "key-exchange",
            "dh2048.badssl.com",
            _good_rsa,
            (*_RSA_TLS12, "-cipher", "DHE-RSA-AES128-GCM-SHA256"),  # OpenSSL's built-in 2048-bit group
        ),
        Endpoint("ecdh-x25519", "key-exchange", "(X25519 only)", _good, ("-groups", "X25519")),
        Endpoint("ecdh-p384", "key-exchange", "ecc384 key exchange", _good, ("-groups", "P-384")),
        # RFC 7919 groups alone: TLS 1.3 clients offer ffdhe2048 without a key share, so a HelloRetryRequest.
        Endpoint(
            "ffdhe2048-tls13", "key-exchange", "(TLS 1.3, ffdhe2048 only)", _good, ("-tls1_3", "-groups", "ffdhe2048")
        ),
        # --- cipher
        Endpoint("cbc", "cipher", "cbc.badssl.com", _good, (*_RSA_TLS12, "-cipher", "ECDHE-ECDSA-AES128-SHA")),
        # Ciphers this host's OpenSSL build leaves out: tlslite serves each alone, with RSA key exchange.
        Endpoint(
            "3des",
            "cipher",
            "3des.badssl.com",
            _good_rsa,
            (*_TLSLITE_RSA_TLS12, "--cipher", "3des", "--mac", "sha"),  # DES-CBC3-SHA
            server="tlslite",
        ),
        Endpoint(
            "rc4",
            "cipher",
            "rc4.badssl.com",
            _good_rsa,
            (*_TLSLITE_RSA_TLS12, "--cipher", "rc4", "--mac", "sha"),  # RC4-SHA
            server="tlslite",
        ),
        Endpoint(
            "rc4-md5",
            "cipher",
            "rc4-md5.badssl.com",
            _good_rsa,
            (*_TLSLITE_RSA_TLS12, "--cipher", "rc4", "--mac", "md5"),  # RC4-MD5
            server="tlslite",
        ),
        # Suites OpenSSL's default cipher list leaves out: the server, offered none of them, refuses.
        Endpoint("aes128-ccm", "cipher", "(AES-CCM only)", _good, (*_RSA_TLS12, "-cipher", "ECDHE-ECDSA-AES128-CCM")),
        Endpoint(
            "camellia", "cipher", "(Camellia only)", _good, (*_RSA_TLS12, "-cipher", "ECDHE-ECDSA-CAMELLIA128-SHA256")
        ),
        Endpoint(
            "null", "cipher", "null.badssl.com", _good, (*_RSA_TLS12, "-cipher", "ECDHE-ECDSA-NULL-SHA@SECLEVEL=0")
        ),
        Endpoint(
            "chacha20",
            "cipher",
            "(ChaCha20-Poly1305 only)",
            _good,
            ("-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"),
        ),
        Endpoint(
            "aes256-gcm-tls12",
            "cipher",
            "mozilla-intermediate.badssl.com",
            _good,
            (*_RSA_TLS12, "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"),
        ),
    )


def _many(count: int) -> tuple[str, ...]:
    return tuple(f"san-{index}.many.corpus.test" for index in range(count))


ENDPOINTS = _endpoints()


@dataclass
class RunningEndpoint:
    endpoint: Endpoint
    profile: Profile
    port: int
    workdir: Path
    served: Served
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def target(self) -> str:
        host = self.endpoint.hostname
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def leaf_pem(self) -> Path:
        return self.workdir / "leaf.pem"

    @property
    def untrusted_pem(self) -> Path:
        return self.workdir / "untrusted.pem"


def _dhparam(bits: int, cache: Path) -> Path:
    path = cache / f"dh{bits}.pem"
    if path.exists():
        return path
    if bits == OAKLEY_GROUP_2_BITS:
        path.write_bytes(oakley_group_2_pem())
        return path
    if bits >= 512:
        # s_server takes only PKCS#3 groups (not -dsaparam ones); small ones are quick to make.
        subprocess.run([OPENSSL, "dhparam", "-out", str(path), str(bits)], capture_output=True, timeout=300, check=True)
        return path
    # OpenSSL makes no DH group below 512 bits ("modulus too small"), but finds a safe prime p = 2q + 1 of
    # any size: with generator 2, that is a group as `dhparam` makes them (which tlslite_server reads).
    done = subprocess.run(
        [OPENSSL, "prime", "-generate", "-safe", "-bits", str(bits)],
        capture_output=True,
        timeout=300,
        check=True,
    )
    prime = int(done.stdout.decode().strip())
    body = _der(0x30, _der_integer(prime) + _der_integer(2))  # PKCS#3 DHParameter: SEQUENCE {p, g}
    path.write_bytes(_pem_block("DH PARAMETERS", body))
    return path


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + content


def _der_integer(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))  # a leading 0 keeps it positive


def _pem_block(label: str, der: bytes) -> bytes:
    import base64
    import textwrap

    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n".encode()


def _openssl_command(endpoint: Endpoint, served: Served, workdir: Path, has_chain: bool) -> list[str]:
    accept = f"[{endpoint.listen}]:0" if ":" in endpoint.listen else f"{endpoint.listen}:0"
    command = [OPENSSL, "s_server", "-accept", accept, "-cert", "leaf.pem", "-key", "leaf.key", "-naccept", "64"]
    command += ["-no_ticket"]
    if has_chain:
        command += ["-cert_chain", "untrusted.pem"]
    if served.client_ca is not None:
        (workdir / "client-ca.pem").write_bytes(served.client_ca.pem)
        command += ["-verify" if served.client_cert_optional else "-Verify", "1", "-CAfile", "client-ca.pem"]
    if endpoint.dh_bits:
        command += ["-dhparam", str(_dhparam(endpoint.dh_bits, workdir.parent))]
    return command + list(endpoint.server_args)


def _tlslite_command(endpoint: Endpoint, served: Served, workdir: Path, has_chain: bool) -> list[str]:
    if importlib.util.find_spec("tlslite") is None:
        raise EndpointUnavailable(f"tlslite-ng (a dev dependency) is not installed, so nothing serves {endpoint.name}")
    if endpoint.listen != "127.0.0.1":
        raise ValueError(f"{endpoint.name}: the tlslite server listens on 127.0.0.1 only")
    if served.client_ca is not None:
        raise ValueError(f"{endpoint.name}: the tlslite server does not ask for client certificates")
    module = f"{__package__}.tlslite_server"
    command = [sys.executable, "-m", module, "--accept", "127.0.0.1:0", "--cert", "leaf.pem", "--key", "leaf.key"]
    if has_chain:
        command += ["--chain", "untrusted.pem"]
    if endpoint.dh_bits:
        command += ["--dhparam", str(_dhparam(endpoint.dh_bits, workdir.parent))]
    return command + list(endpoint.server_args)


@contextmanager
def serve_endpoint(endpoint: Endpoint, pki: CorpusPKI, workdir: Path) -> Iterator[RunningEndpoint]:
    """Run the endpoint's server (`openssl s_server`, or `tlslite_server`) on its address (127.0.0.1 or ::1, any
    free port) until the block ends."""
    if not _can_listen(endpoint.listen):
        raise EndpointUnavailable(f"this host cannot listen on {endpoint.listen}, so nothing serves {endpoint.name}")
    workdir.mkdir(parents=True, exist_ok=True)
    served = endpoint.build(pki, endpoint.hostname)
    leaf, *rest = served.chain
    (workdir / "leaf.pem").write_bytes(leaf.pem)
    (workdir / "untrusted.pem").write_bytes(b"".join(c.pem for c in rest))
    key_path = workdir / "leaf.key"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(leaf.key_pem)
    make_command = _openssl_command if endpoint.server == "openssl" else _tlslite_command
    command = make_command(endpoint, served, workdir, bool(rest))
    process = subprocess.Popen(
        command, cwd=workdir, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        port = _accepted_port(process, endpoint.name)
        # Both servers report every connection on stdout; a full pipe would stall them.
        threading.Thread(target=_drain, args=(process,), daemon=True).start()
        yield RunningEndpoint(endpoint, pki.profile, port, workdir, served, process)
    finally:
        _stop(process)


def _can_listen(address: str) -> bool:
    """Whether a socket binds to `address` here (a host or container without IPv6 has no ::1)."""
    import socket

    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
    except OSError:
        return False
    return True


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the tlslite server closes its listener and exits), then SIGKILL if that did not do."""
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _drain(process: subprocess.Popen[bytes]) -> None:
    assert process.stdout is not None
    while process.stdout.read(65536):
        pass


class EndpointUnavailable(RuntimeError):
    """Nothing here can serve the endpoint: this host's OpenSSL leaves out what it needs, or tlslite-ng
    is not installed."""


# OpenSSL's packed error codes (SSL routines) for what this host's build refuses to serve at all.
_REFUSED_TO_SERVE = {
    ":0A0000B9:": "has none of the ciphers",  # no cipher match
    ":0A00018A:": "refuses the small DH group of",  # dh key too small, whatever the security level
}


def _accepted_port(process: subprocess.Popen[bytes], name: str) -> int:
    assert process.stdout is not None
    deadline = time.monotonic() + _START_TIMEOUT_S
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = process.stdout.readline().decode(errors="replace")
        if not line:
            break
        seen.append(line.rstrip())
        if line.startswith("ACCEPT"):
            return int(line.rsplit(":", 1)[1])
    for code, what in _REFUSED_TO_SERVE.items():
        if any(code in line for line in seen):
            raise EndpointUnavailable(f"this host's OpenSSL ({OPENSSL}) {what} {name}, so it cannot serve it")
    raise RuntimeError(f"the server for {name} did not start: {' | '.join(seen[-5:])}")
