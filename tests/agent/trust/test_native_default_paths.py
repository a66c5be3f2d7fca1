"""The native verifier on OpenSSL's default verify paths reads the default file's certificates in as chains
reach them, and concludes what the store X509_STORE_set_default_paths loads whole concludes: the same code for
every chain, with the whole store asked wherever the fast road cannot vouch for its answer."""

from __future__ import annotations

import os
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tlsfleet.agent.trust import verify
from tlsfleet.agent.trust.stores import forget_cached_reads, openssl_bundle
from tlsfleet.agent.trust.verify import NativeCheck, NativeVerifier, clear_caches

from .chains import Cert, issue, openssl_cli, openssl_skip_reason, pem_of

NOW = datetime.now(UTC).replace(microsecond=0)
ROOT = issue("Default Paths Root", ca=True)
INTERMEDIATE = issue("Default Paths Intermediate", ROOT, ca=True)
OTHERS = [issue(f"Bystander Root {i}", ca=True) for i in range(20)]


@dataclass
class Defaults:
    bundle: Path
    directory: Path
    whole_store_reads: list[int]

    def write(self, *certs: Cert, extra: bytes = b"") -> None:
        self.bundle.write_bytes(b"".join(c.pem for c in certs) + extra)


@pytest.fixture
def defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Defaults]:
    """SSL_CERT_FILE a bundle of bystanders around the root, SSL_CERT_DIR an empty directory; counts the times
    the store set_default_paths builds is read whole."""
    bundle, directory = tmp_path / "bundle.pem", tmp_path / "certs"
    directory.mkdir()
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setenv("SSL_CERT_DIR", str(directory))
    reads: list[int] = []
    real = verify._client_store

    def counting(cafile: str | None) -> int:
        reads.append(1)
        return real(cafile)

    monkeypatch.setattr(verify, "_client_store", counting)
    found = Defaults(bundle, directory, reads)
    found.write(*OTHERS[:10], ROOT, *OTHERS[10:])
    clear_caches()
    forget_cached_reads()
    yield found
    clear_caches()
    forget_cached_reads()


def check(host: str = "svc.test") -> NativeCheck:
    context = ssl.create_default_context()
    return NativeCheck(host, context.security_level, int(context.verify_flags), True)


def whole(chain: tuple[bytes, ...], native: NativeCheck, at: datetime = NOW) -> int:
    """The code of the store set_default_paths loads whole, as the handshake's own verification has it."""
    return verify._verify_as_client(verify._client_store(None), chain, native, int(at.timestamp()))[0]


def test_a_chain_the_default_file_verifies_reads_only_what_it_reaches(defaults: Defaults) -> None:
    chain = (issue("svc.test", INTERMEDIATE).der, INTERMEDIATE.der)
    assert NativeVerifier(None).verify(chain, check(), int(NOW.timestamp())) == 0
    assert defaults.whole_store_reads == []
    assert whole(chain, check()) == 0


@pytest.mark.parametrize(
    "case",
    ["expired leaf", "other name", "no intermediate", "unknown root", "not yet valid root", "intermediate as leaf"],
)
def test_every_refusal_is_the_whole_stores(defaults: Defaults, case: str) -> None:
    leaf = issue("svc.test", INTERMEDIATE)
    chain = (leaf.der, INTERMEDIATE.der)
    native = check()
    if case == "expired leaf":
        chain = (issue("svc.test", INTERMEDIATE, not_after=NOW - timedelta(days=1)).der, INTERMEDIATE.der)
    elif case == "other name":
        native = check("other.test")
    elif case == "no intermediate":
        chain = (leaf.der,)
    elif case == "unknown root":
        stranger = issue("Stranger Root", ca=True)
        chain = (issue("svc.test", stranger).der,)
    elif case == "not yet valid root":
        late = issue("Late Root", ca=True, not_before=NOW + timedelta(days=2), not_after=NOW + timedelta(days=900))
        defaults.write(late, *OTHERS)
        chain = (issue("svc.test", late).der,)
    else:
        chain = (INTERMEDIATE.der,)
    code = NativeVerifier(None).verify(chain, native, int(NOW.timestamp()))
    assert code != 0 and code == whole(chain, native)


def test_an_issuer_the_directory_gives_is_confirmed_by_the_whole_store(defaults: Defaults) -> None:
    """The root only in SSL_CERT_DIR (hashed): the path holds a certificate the default file does not."""
    cli = openssl_cli()
    if cli is None:
        pytest.skip(openssl_skip_reason())
    defaults.write(*OTHERS)
    (defaults.directory / "root.pem").write_bytes(ROOT.pem)
    subprocess.run([cli, "rehash", str(defaults.directory)], capture_output=True, timeout=30, check=True)
    chain = (issue("svc.test", INTERMEDIATE).der, INTERMEDIATE.der)
    assert NativeVerifier(None).verify(chain, check(), int(NOW.timestamp())) == 0 == whole(chain, check())
    assert len(defaults.whole_store_reads) == 2  # the verifier's own, then this test's


def test_trust_settings_in_the_default_file_hold(defaults: Defaults) -> None:
    """A TRUSTED CERTIFICATE block that rejects serverAuth: refused (28) as the whole store refuses it."""
    cli = openssl_cli()
    if cli is None:
        pytest.skip(openssl_skip_reason())
    root_file = defaults.bundle.parent / "root.pem"
    root_file.write_bytes(ROOT.pem)
    trusted = subprocess.run(
        [cli, "x509", "-in", str(root_file), "-addreject", "serverAuth", "-trustout"],
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout
    defaults.write(*OTHERS, extra=trusted)
    chain = (issue("svc.test", INTERMEDIATE).der, INTERMEDIATE.der)
    code = NativeVerifier(None).verify(chain, check(), int(NOW.timestamp()))
    assert code == 28 == whole(chain, check())


def test_crl_checks_use_the_whole_store(defaults: Defaults) -> None:
    chain = (issue("svc.test", INTERMEDIATE).der, INTERMEDIATE.der)
    crl_check = check()
    crl_check = NativeCheck(crl_check.host, crl_check.security_level, crl_check.verify_flags | 0x4, True)
    code = NativeVerifier(None).verify(chain, crl_check, int(NOW.timestamp()))
    assert code == whole(chain, crl_check) != 0  # no CRL in the store: unable to get CRL (3)
    assert len(defaults.whole_store_reads) == 2


@pytest.mark.parametrize(
    ("content", "vouched"),
    [
        ("plain", True),
        ("crl", False),
        ("old label", False),
        ("no end", False),
        ("bad base64", False),
        ("der", False),
        ("missing", True),
    ],
)
def test_the_default_file_is_read_here_only_when_openssl_would_read_it_the_same(
    tmp_path: Path, content: str, vouched: bool
) -> None:
    path = tmp_path / "bundle.pem"
    pems = ROOT.pem + INTERMEDIATE.pem
    texts = {
        "plain": pems,
        "crl": pems + b"-----BEGIN X509 CRL-----\nMA==\n-----END X509 CRL-----\n",
        "old label": pems.replace(b"BEGIN CERTIFICATE", b"BEGIN X509 CERTIFICATE", 1),
        "no end": pems + b"-----BEGIN CERTIFICATE-----\nMIIB\n",
        "bad base64": pems + pem_of(b"\x30\x03\x02\x01\x00").replace(b"MAMCAQA=", b"M@MCAQA="),
        "der": ROOT.der,
    }
    if content in texts:
        path.write_bytes(texts[content])
    forget_cached_reads()
    read = openssl_bundle("default", str(path))
    assert (read is not None) is vouched
    if read is not None:
        assert len(read.roots) == (2 if content == "plain" else 0)


def test_the_openssl_default_file_is_the_one_its_variable_names(
    defaults: Defaults, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SSL_CERT_FILE set but empty: OpenSSL reads that (no) file, not its built-in bundle."""
    monkeypatch.setenv("SSL_CERT_FILE", "")
    paths = verify._DefaultPaths.read()
    assert paths is not None and paths.trust.roots == ()
    chain = (issue("svc.test", INTERMEDIATE).der, INTERMEDIATE.der)
    assert NativeVerifier(None).verify(chain, check(), int(NOW.timestamp())) == whole(chain, check()) != 0
    assert os.environ["SSL_CERT_FILE"] == ""


def test_an_acceptance_holds_until_the_chains_next_validity_edge(
    defaults: Defaults, monkeypatch: pytest.MonkeyPatch
) -> None:
    ends = NOW + timedelta(days=3)
    chain = (issue("svc.test", INTERMEDIATE, not_after=ends).der, INTERMEDIATE.der)
    runs: list[int] = []
    real = verify._verify_as_client

    def counting(*args: object) -> tuple[int, tuple[bytes, ...]]:
        runs.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(verify, "_verify_as_client", counting)
    verifier = NativeVerifier(None)
    at = int(NOW.timestamp())
    assert verifier.verify(chain, check(), at) == 0
    assert verifier.verify(chain, check(), at + 5 * 3600) == 0  # hours later, no edge between: the same span
    assert verifier.verify(chain, check(), int(ends.timestamp()) - 1) == 0
    assert len(runs) == 1
    assert verifier.verify(chain, check(), int(ends.timestamp())) == 10  # expired from notAfter on
    refused = len(runs)
    assert verifier.verify(chain, check(), int(ends.timestamp()) + 60) == 10
    assert len(runs) > refused  # refusals are verified each time
