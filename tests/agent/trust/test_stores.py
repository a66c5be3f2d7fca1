"""Trust-store discovery from an environment the test controls, over real files."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

from tlsfleet.agent.trust import stores as truststores
from tlsfleet.agent.trust.certinfo import fingerprint
from tlsfleet.agent.trust.runtimes import RuntimeOptions
from tlsfleet.agent.trust.stores import LoadedStore, discover_stores, load_store, store_fingerprint
from tlsfleet.coordinator.lab.pki import LabPKI, chain_pem, write_pem


@pytest.fixture(scope="module")
def pkis() -> tuple[LabPKI, LabPKI, LabPKI]:
    return LabPKI("One"), LabPKI("Two"), LabPKI("Three")


def by_name(stores: tuple[LoadedStore, ...]) -> dict[str, LoadedStore]:
    names = [s.info.name for s in stores]
    assert len(names) == len(set(names)), names
    return {s.info.name: s for s in stores}


def expected_fp(*ders: bytes) -> str:
    return hashlib.sha256("".join(sorted(fingerprint(d) for d in ders)).encode()).hexdigest()


def test_env_bundles_are_stores(tmp_path: Path, pkis: tuple[LabPKI, LabPKI, LabPKI]) -> None:
    one, two, _ = pkis
    bundle = write_pem(tmp_path / "bundle.pem", chain_pem(one.root, two.root))
    single = write_pem(tmp_path / "one.pem", one.root_pem())
    env = {
        "SSL_CERT_FILE": str(bundle),
        "REQUESTS_CA_BUNDLE": str(bundle),
        "CURL_CA_BUNDLE": str(single),
        "NODE_EXTRA_CA_CERTS": str(single),
        "UNRELATED": "/etc/passwd",
    }
    stores = by_name(discover_stores(env))
    ssl_file = stores["ssl_cert_file"].info
    assert (ssl_file.kind, ssl_file.path, ssl_file.root_count, ssl_file.error) == ("file", str(bundle), 2, "")
    assert ssl_file.fingerprint == expected_fp(one.root.der, two.root.der)
    # Same content under two names: kept apart, recognisable by the equal fingerprint.
    assert stores["requests_ca_bundle"].info.fingerprint == ssl_file.fingerprint
    assert stores["curl_ca_bundle"].info.root_count == 1
    node = stores["node_extra_ca_certs"]
    assert node.info.fingerprint == expected_fp(one.root.der)
    assert "built-in roots" in node.detail
    assert [r.subject.rfc4514_string() for r in stores["ssl_cert_file"].roots] == [
        "CN=One Root CA",
        "CN=Two Root CA",
    ]


def test_unset_and_empty_variables_add_no_store(tmp_path: Path) -> None:
    names = {s.info.name for s in discover_stores({"SSL_CERT_FILE": "", "CURL_CA_BUNDLE": ""})}
    assert not names & {"ssl_cert_file", "ssl_cert_dir", "requests_ca_bundle", "curl_ca_bundle"}


def test_bad_files_become_stores_with_errors(tmp_path: Path, pkis: tuple[LabPKI, LabPKI, LabPKI]) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"\x30\x82" + os.urandom(2048))  # starts like DER, is not
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"")
    broken_pem = tmp_path / "broken.pem"
    broken_pem.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it would block: it must be refused, not read
    env = {
        "SSL_CERT_FILE": str(garbage),
        "REQUESTS_CA_BUNDLE": str(empty),
        "CURL_CA_BUNDLE": str(broken_pem),
        "NODE_EXTRA_CA_CERTS": str(tmp_path / "missing.pem"),
    }
    stores = by_name(discover_stores(env, extra={"fifo": fifo, "dir-as-file": tmp_path / "nowhere"}))
    for name, words in {
        "ssl_cert_file": "no certificates",
        "requests_ca_bundle": "no certificates",
        "curl_ca_bundle": "none parseable",
        "node_extra_ca_certs": "does not exist",
        "extra:fifo": "not a regular file",
        "extra:dir-as-file": "does not exist",
    }.items():
        info = stores[name].info
        assert words in info.error, (name, info.error)
        assert (info.root_count, info.fingerprint, stores[name].roots) == (0, "", ())


def test_file_where_a_file_is_required(tmp_path: Path) -> None:
    stores = by_name(discover_stores({"SSL_CERT_FILE": str(tmp_path)}))
    assert "must name a file" in stores["ssl_cert_file"].info.error


def test_partly_bad_bundle_keeps_the_good_roots(tmp_path: Path, pkis: tuple[LabPKI, LabPKI, LabPKI]) -> None:
    one, two, _ = pkis
    corrupt = two.root_pem().replace(b"MI", b"!!", 1)
    path = write_pem(tmp_path / "mixed.pem", one.root_pem() + b"junk between blocks\n" + corrupt)
    store = load_store("mixed", path)
    assert store.info.root_count == 1
    assert "1 of 2 certificate blocks unparseable" in store.info.error


def test_der_and_trusted_certificate_forms(tmp_path: Path, pkis: tuple[LabPKI, LabPKI, LabPKI]) -> None:
    one, two, _ = pkis
    for i in range(40):  # enough certificates that some DER ends in a byte that looks like whitespace
        leaf = one.issue_leaf(f"h{i}.lab.test")
        der = tmp_path / f"{i}.der"
        der.write_bytes(leaf.der)
        assert load_store("der", der).info.fingerprint == expected_fp(leaf.der)
    # OpenSSL's TRUSTED CERTIFICATE: the certificate followed by an X509_AUX sequence.
    aux = b"\x30\x0c\x30\x0a\x06\x08\x2b\x06\x01\x05\x05\x07\x03\x01"  # trust: serverAuth
    body = base64.encodebytes(two.root.der + aux)
    trusted = tmp_path / "trusted.pem"
    trusted.write_bytes(b"-----BEGIN TRUSTED CERTIFICATE-----\n" + body + b"-----END TRUSTED CERTIFICATE-----\n")
    store = load_store("trusted", trusted)
    assert store.info.fingerprint == expected_fp(two.root.der), store.info.error


def test_cert_dirs(tmp_path: Path, pkis: tuple[LabPKI, LabPKI, LabPKI]) -> None:
    one, two, three = pkis
    d1 = tmp_path / "certs"
    d1.mkdir()
    write_pem(d1 / "one.pem", one.root_pem())
    write_pem(d1 / "two.pem", two.root_pem())
    (d1 / "abcdef01.0").symlink_to(d1 / "one.pem")  # hashed link: same file, read once
    (d1 / "README").write_text("hashed directory\n")
    (d1 / "sub").mkdir()
    write_pem(d1 / "sub" / "three.pem", three.root_pem())  # not recursed into
    d2 = tmp_path / "more"
    d2.mkdir()
    write_pem(d2 / "three.crt", three.root_pem())
    empty = tmp_path / "empty"
    empty.mkdir()

    stores = by_name(discover_stores({"SSL_CERT_DIR": str(d1)}, extra={"empty": empty}))
    info = stores["ssl_cert_dir"].info
    assert (info.kind, info.root_count, info.error) == ("dir", 2, "")
    assert info.fingerprint == expected_fp(one.root.der, two.root.der)
    assert stores["extra:empty"].info.kind == "dir"
    assert "no certificates in directory" in stores["extra:empty"].info.error

    both = by_name(discover_stores({"SSL_CERT_DIR": f"{d1}{os.pathsep}{d2}"}))["ssl_cert_dir"].info
    assert both.root_count == 3 and both.error == ""
    missing = by_name(discover_stores({"SSL_CERT_DIR": str(tmp_path / "none")}))["ssl_cert_dir"].info
    assert "is not a directory" in missing.error and missing.root_count == 0


def test_dir_reading_is_bounded(
    tmp_path: Path, pkis: tuple[LabPKI, LabPKI, LabPKI], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "many"
    d.mkdir()
    for i, pki in enumerate(pkis):
        write_pem(d / f"{i}.pem", pki.root_pem())
    monkeypatch.setattr(truststores, "MAX_DIR_FILES", 2)
    store = load_store("many", d)
    assert store.info.root_count == 2
    assert "read stopped at 2 files" in store.info.error

    monkeypatch.setattr(truststores, "MAX_FILE_BYTES", 100)
    big = write_pem(tmp_path / "big.pem", pkis[0].root_pem())
    assert "over the 100-byte cap" in load_store("big", big).info.error


def test_rereading_is_cached_until_the_file_changes(tmp_path: Path, pkis: tuple[LabPKI, LabPKI, LabPKI]) -> None:
    one, two, _ = pkis
    path = write_pem(tmp_path / "bundle.pem", one.root_pem())
    env = {"SSL_CERT_FILE": str(path)}
    first = by_name(discover_stores(env))["ssl_cert_file"]
    again = by_name(discover_stores(env))["ssl_cert_file"]
    assert again.roots[0] is first.roots[0]
    write_pem(path, chain_pem(one.root, two.root))
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse-grained filesystems
    changed = by_name(discover_stores(env))["ssl_cert_file"]
    assert changed.info.root_count == 2


def test_stores_holding_the_same_root_share_one_certificate(
    tmp_path: Path, pkis: tuple[LabPKI, LabPKI, LabPKI]
) -> None:
    """A bundle, a directory and another bundle with the same root: one object, its names read once; a file
    that changes still gives what it holds now."""
    one, two, _ = pkis
    bundle = write_pem(tmp_path / "bundle.pem", one.root_pem())
    certs = tmp_path / "certs"
    certs.mkdir()
    write_pem(certs / "one.pem", one.root_pem())
    other = write_pem(tmp_path / "other.pem", chain_pem(two.root, one.root))
    stores = [load_store("bundle", bundle), load_store("dir", certs), load_store("other", other)]
    assert stores[0].roots[0] is stores[1].roots[0] is stores[2].roots[1]
    write_pem(bundle, two.root_pem())
    os.utime(bundle, ns=(1, 1))
    changed = load_store("bundle", bundle)
    assert changed.info.fingerprint == expected_fp(two.root.der)
    assert changed.roots[0] is stores[2].roots[0]


def test_pem_blocks_are_found_as_the_pattern_finds_them(tmp_path: Path, pkis: tuple[LabPKI, LabPKI, LabPKI]) -> None:
    """Each BEGIN runs to the first END of either label after it; other blocks, text between blocks and a
    BEGIN left open are passed over."""
    one, two, three = pkis

    def block(begin: str, der: bytes, end: str) -> bytes:
        return f"-----BEGIN {begin}-----\n".encode() + base64.encodebytes(der) + f"-----END {end}-----\n".encode()

    data = b"".join(
        (
            b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
            block("CERTIFICATE", one.root.der, "TRUSTED CERTIFICATE"),  # the END of the other label closes it
            b"text between blocks -----BEGIN CERTIFICATE---- not a header\n",
            block("TRUSTED CERTIFICATE", two.root.der, "CERTIFICATE"),
            b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(three.root.der),  # never closed: not a block
        )
    )
    store = load_store("mixed", write_pem(tmp_path / "mixed.pem", data))
    assert store.info.fingerprint == expected_fp(one.root.der, two.root.der), store.info.error
    assert store.info.error == ""


def test_extra_bundles(tmp_path: Path, pkis: tuple[LabPKI, LabPKI, LabPKI]) -> None:
    one, _, _ = pkis
    corp = write_pem(tmp_path / "corp.pem", one.root_pem())
    stores = by_name(discover_stores({}, extra={"corp": corp}))
    assert stores["extra:corp"].info.root_count == 1
    assert stores["extra:corp"].info.path == str(corp)


def test_certifi_is_reported_when_its_interpreter_is_named() -> None:
    """The agent's own environment is no runtime of the host: its certifi counts only when named
    (tests/agent/trust/test_runtime_stores.py covers the search)."""
    certifi = pytest.importorskip("certifi", reason="certifi not installed")
    assert "certifi" not in by_name(discover_stores({}, runtimes=RuntimeOptions(search=False)))
    named = RuntimeOptions(named=(("python", sys.executable),), search=False)
    store = by_name(discover_stores({}, runtimes=named)).get("certifi")
    assert store is not None
    assert store.info.path == certifi.where()
    assert store.info.root_count > 50 and store.info.error == ""
    assert store.info.runtime == "python"
    assert store.info.found_by == f"certifi of {sys.executable} (--runtime python={sys.executable})"


def test_system_stores_when_present() -> None:
    stores = by_name(discover_stores({}))
    if "system" not in stores:
        pytest.skip("no system CA bundle on this host")
    assert stores["system"].info.root_count > 0, stores["system"].info.error
    assert not {"ssl_cert_file", "ssl_cert_dir"} & stores.keys()


def test_store_fingerprint_definition() -> None:
    assert store_fingerprint([]) == ""
    fps = ["bb" * 32, "aa" * 32, "bb" * 32]
    assert store_fingerprint(fps) == hashlib.sha256(("aa" * 32 + "bb" * 32).encode()).hexdigest()


# --- Java keystores -------------------------------------------------------------------------------


def write_jks(path: Path, trusted: list[bytes], key_chain: list[bytes] | None = None) -> Path:
    """A JKS keystore (version 2) as keytool writes it, with its password digest for "changeit"."""
    entries = len(trusted) + (1 if key_chain else 0)
    out = struct.pack(">III", 0xFEEDFEED, 2, entries)

    def utf(s: bytes) -> bytes:
        return struct.pack(">H", len(s)) + s

    def cert(der: bytes) -> bytes:
        return utf(b"X.509") + struct.pack(">I", len(der)) + der

    for i, der in enumerate(trusted):
        out += struct.pack(">I", 2) + utf(f"ca{i}".encode()) + struct.pack(">Q", 0) + cert(der)
    if key_chain:
        blob = os.urandom(64)  # the protected key is opaque to a trust-store reader
        out += struct.pack(">I", 1) + utf(b"server") + struct.pack(">Q", 0)
        out += struct.pack(">I", len(blob)) + blob + struct.pack(">I", len(key_chain))
        out += b"".join(cert(d) for d in key_chain)
    digest = hashlib.sha1("changeit".encode("utf-16-be") + b"Mighty Aphrodite" + out).digest()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out + digest)
    return path


def test_java_home_jks_keystore(tmp_path: Path, pkis: tuple[LabPKI, LabPKI, LabPKI]) -> None:
    one, two, three = pkis
    leaf = three.issue_leaf("svc.lab.test")
    home = tmp_path / "jdk"
    write_jks(home / "lib" / "security" / "cacerts", [one.root.der, two.root.der], [leaf.der, three.root.der])
    store = by_name(discover_stores({"JAVA_HOME": str(home)}))["java_home"]
    assert (store.info.kind, store.info.error) == ("java-keystore", "")
    # Java trusts the end-entity certificate of a private-key entry too.
    assert store.info.fingerprint == expected_fp(one.root.der, two.root.der, leaf.der)


def test_java_8_layout_and_pkcs12(tmp_path: Path, pkis: tuple[LabPKI, LabPKI, LabPKI]) -> None:
    one, two, _ = pkis
    home = tmp_path / "jre8"
    cacerts = home / "jre" / "lib" / "security" / "cacerts"
    cacerts.parent.mkdir(parents=True)
    cas = [
        pkcs12.PKCS12Certificate(one.root.cert, b"one"),
        pkcs12.PKCS12Certificate(two.root.cert, b"two"),
    ]
    cacerts.write_bytes(
        pkcs12.serialize_java_truststore(cas, BestAvailableEncryption(b"changeit"))
        if hasattr(pkcs12, "serialize_java_truststore")
        else pkcs12.serialize_key_and_certificates(None, None, None, cas, BestAvailableEncryption(b"changeit"))
    )
    store = by_name(discover_stores({"JAVA_HOME": str(home)}))["java_home"]
    assert store.info.error == "" and store.info.fingerprint == expected_fp(one.root.der, two.root.der)


def test_unreadable_keystores(tmp_path: Path, pkis: tuple[LabPKI, LabPKI, LabPKI]) -> None:
    good = write_jks(tmp_path / "good.jks", [pkis[0].root.der]).read_bytes()
    truncated = tmp_path / "truncated.jks"
    truncated.write_bytes(good[:40])
    assert "JKS format not readable" in load_store("t", truncated, kind="java-keystore").info.error
    other_password = tmp_path / "other.p12"
    other_password.write_bytes(
        pkcs12.serialize_key_and_certificates(
            None, None, None, [pkcs12.PKCS12Certificate(pkis[0].root.cert, b"x")], BestAvailableEncryption(b"s3")
        )
    )
    info = load_store("p", other_password, kind="java-keystore").info
    assert "password 'changeit'" in info.error and info.root_count == 0
    no_cacerts = by_name(discover_stores({"JAVA_HOME": str(tmp_path)}))["java_home"].info
    assert "has no lib/security/cacerts" in no_cacerts.error
    with pytest.raises(ValueError, match="unknown trust store kind"):
        load_store("x", truncated, kind="keychain")


@pytest.mark.slow  # a real subprocess or timer, most of a second: the full suite runs it
@pytest.mark.parametrize("storetype", ["JKS", "PKCS12"])
def test_keystores_written_by_keytool(tmp_path: Path, pkis: tuple[LabPKI, LabPKI, LabPKI], storetype: str) -> None:
    keytool = shutil.which("keytool")
    if keytool is None:
        pytest.skip("keytool (a JDK) is not installed")
    one, two, _ = pkis
    ks = tmp_path / "cacerts"
    for alias, issued in (("one", one.root), ("two", two.root)):
        pem = write_pem(tmp_path / f"{alias}.pem", issued.cert_pem)
        args = ["-importcert", "-noprompt", "-keystore", str(ks), "-storetype", storetype]
        args += ["-storepass", "changeit", "-alias", alias, "-file", str(pem)]
        subprocess.run([keytool, *args], check=True, capture_output=True, timeout=60)
    info = load_store("java", ks, kind="java-keystore").info
    assert info.error == "" and info.fingerprint == expected_fp(one.root.der, two.root.der)
