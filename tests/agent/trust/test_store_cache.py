"""The disk cache of parsed store files and interpreter answers (store_cache): used when the bytes and stamps
are the recorded ones, and ignored when the store changed or the cache is corrupt, tampered with or not ours.

Each test is a run of "the next process": `forget_cached_reads()` drops what this process holds, so the next
discovery knows only what is on disk, as a fresh CLI process does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from tlsfleet.agent.trust import issuer_lookup, store_cache
from tlsfleet.agent.trust import stores as truststores
from tlsfleet.agent.trust.runtimes import RuntimeOptions
from tlsfleet.agent.trust.stores import discover, forget_cached_reads, load_store
from tlsfleet.coordinator.lab.pki import LabPKI, chain_pem, write_pem

PADDED_SIZE = 1024


def padded(pem: bytes) -> bytes:
    """`pem` followed by newlines to a fixed size (ECDSA signatures vary in length): another root of the same
    size, so that only the content tells two versions of a file apart."""
    assert len(pem) <= PADDED_SIZE
    return pem + b"\n" * (PADDED_SIZE - len(pem))


@pytest.fixture(scope="module")
def pkis() -> tuple[LabPKI, LabPKI]:
    return LabPKI("Cached One"), LabPKI("Cached Two")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The cache enabled in $XDG_CACHE_HOME under tmp_path; disabled again and forgotten afterwards."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    forget_cached_reads()
    # Through monkeypatch, which undoes in reverse order: a test that disables it too still ends disabled.
    monkeypatch.setattr(store_cache, "_enabled", True)
    yield tmp_path / "xdg" / "tlsfleet"
    forget_cached_reads()


class Parses:
    """Counts the PEM decodings stores.py really does."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = truststores._parse_certificates

        def counting(data: bytes):  # type: ignore[no-untyped-def]
            self.count += 1
            return real(data)

        monkeypatch.setattr(truststores, "_parse_certificates", counting)


def next_run() -> None:
    store_cache.save()
    forget_cached_reads()
    issuer_lookup.forget_keys()


def test_the_next_run_takes_a_store_from_the_cache(
    tmp_path: Path, cache: Path, pkis: tuple[LabPKI, LabPKI], monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two = pkis
    bundle = write_pem(tmp_path / "bundle.pem", chain_pem(one.root, two.root))
    first = load_store("bundle", bundle)
    next_run()
    assert (cache / "store-files.v2").is_file()
    parses = Parses(monkeypatch)
    again = load_store("bundle", bundle)
    assert parses.count == 0
    assert again.info == first.info and again.info.root_count == 2
    assert [c.public_bytes(Encoding.DER) for c in again.roots] == [one.root.der, two.root.der]


def test_a_store_changed_in_place_is_seen_on_the_next_run(
    tmp_path: Path, cache: Path, pkis: tuple[LabPKI, LabPKI]
) -> None:
    """Same path, inode, size and mtime, other roots: the content's hash tells them apart."""
    one, two = pkis
    bundle = write_pem(tmp_path / "bundle.pem", padded(one.root_pem()))
    before = load_store("bundle", bundle).info
    next_run()
    stat = bundle.stat()
    replacement = padded(two.root_pem())
    assert len(replacement) == stat.st_size
    with bundle.open("r+b") as f:  # rewritten in place, keeping the inode
        f.write(replacement)
    os.utime(bundle, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (bundle.stat().st_ino, bundle.stat().st_size, bundle.stat().st_mtime_ns) == (
        stat.st_ino,
        stat.st_size,
        stat.st_mtime_ns,
    )
    after = load_store("bundle", bundle).info
    assert after.fingerprint != before.fingerprint
    assert after.fingerprint == load_store("fresh", write_pem(tmp_path / "two.pem", two.root_pem())).info.fingerprint


@pytest.mark.parametrize(
    "damage",
    ["garbage", "truncated", "tampered certificate", "writable by others", "another interpreter", "another shape"],
)
def test_a_corrupt_or_foreign_cache_is_ignored_and_replaced(
    tmp_path: Path, cache: Path, pkis: tuple[LabPKI, LabPKI], monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    one, two = pkis
    bundle = write_pem(tmp_path / "bundle.pem", chain_pem(one.root, two.root))
    expected = load_store("bundle", bundle).info
    next_run()
    cached = cache / "store-files.v2"
    data = cached.read_bytes()
    if damage == "garbage":
        cached.write_bytes(b"\x00garbage" * 100)
    elif damage == "truncated":
        cached.write_bytes(data[: len(data) // 2])
    elif damage == "tampered certificate":
        # One byte inside the last certificate's DER: its recorded sha256 no longer matches.
        at = len(data) - 40
        cached.write_bytes(data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :])
    elif damage == "another interpreter":
        cached.write_bytes(data.replace(sys.version.encode(), b"3.99.0 (other build)", 1))
    elif damage == "another shape":
        import marshal

        header = data[: data.index(b"\n") + 1]
        cached.write_bytes(header + marshal.dumps({("x", 1, 2, 3, 4): ("digest", (("fp", "not bytes"),), 1, 0)}))
    else:
        cached.chmod(0o666)
    parses = Parses(monkeypatch)
    got = load_store("bundle", bundle).info
    assert got == expected
    assert parses.count == 1  # parsed afresh: nothing of the damaged cache was used
    next_run()
    assert cached.stat().st_mode & 0o077 == 0  # replaced by a whole file of our own
    parses.count = 0
    assert load_store("bundle", bundle).info == expected
    assert parses.count == 0


def test_entries_of_files_gone_are_dropped(tmp_path: Path, cache: Path, pkis: tuple[LabPKI, LabPKI]) -> None:
    one, two = pkis
    kept = write_pem(tmp_path / "kept.pem", one.root_pem())
    gone = write_pem(tmp_path / "gone.pem", two.root_pem())
    load_store("kept", kept)
    load_store("gone", gone)
    next_run()
    gone.unlink()
    store_cache.store_answer(("unrelated",), [], {})  # any change makes the next save write
    next_run()
    paths = [key[0] for key in store_cache._loaded_parsed()]
    assert paths == [str(kept)]


def test_nothing_is_kept_unless_the_process_enables_the_cache(
    tmp_path: Path, cache: Path, pkis: tuple[LabPKI, LabPKI], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_cache, "_enabled", False)  # an agent: it discovers once and keeps what it read
    load_store("bundle", write_pem(tmp_path / "bundle.pem", pkis[0].root_pem()))
    next_run()
    assert not cache.exists()


def counting_python(path: Path, runs: Path, answer: dict[str, object]) -> Path:
    """An 'interpreter' that answers the agent's question and notes each run in `runs`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho run >> {runs}\ncat <<'EOF'\n{json.dumps(answer)}\nEOF\n")
    path.chmod(0o755)
    return path


def test_an_interpreter_is_asked_again_only_when_it_or_its_site_packages_change(
    tmp_path: Path, cache: Path, pkis: tuple[LabPKI, LabPKI]
) -> None:
    bundle = write_pem(tmp_path / "certifi.pem", pkis[0].root_pem())
    site = tmp_path / "site-packages"
    site.mkdir()
    runs = tmp_path / "runs"
    answer = {"prefix": "/opt/py", "version": "3.12.1", "site": [str(site)], "where": str(bundle), "package": str(site)}
    python = counting_python(tmp_path / "bin" / "python3", runs, answer)
    options = RuntimeOptions(named=(("python", str(python)),), search=False)

    def certifi_store() -> tuple[str, int]:
        found = discover({}, runtimes=options)  # saves what it learnt, as every discovery does
        forget_cached_reads()
        [store] = [s.info for s in found.stores if s.info.name == "certifi"]
        return store.path, len(runs.read_text().splitlines())

    assert certifi_store() == (str(bundle), 1)
    assert certifi_store() == (str(bundle), 1)  # the next run: answered from the cache
    (site / "newly-installed").mkdir()  # pip installed something: the site directory's mtime moved
    assert certifi_store() == (str(bundle), 2)
    assert certifi_store() == (str(bundle), 2)
    python.write_text(python.read_text() + "\n")  # the interpreter itself changed
    assert certifi_store() == (str(bundle), 3)
    (cache / "interpreter-answers.v1.json").write_text("{not json")
    assert certifi_store() == (str(bundle), 4)
    assert certifi_store() == (str(bundle), 4)


def test_the_next_run_takes_the_store_certificates_names_as_read_and_kept(
    tmp_path: Path, cache: Path, pkis: tuple[LabPKI, LabPKI], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tlsfleet.agent.trust.certinfo import fingerprint

    one, two = pkis
    store = load_store("bundle", write_pem(tmp_path / "bundle.pem", chain_pem(one.root, two.root)))
    fps = [fingerprint(truststores.der_of(c)) for c in store.roots]
    assert fps == [fingerprint(one.root.der), fingerprint(two.root.der)]  # the DER as read, not encoded anew
    first = issuer_lookup.StoreIndex.of(store.roots, fps)
    assert first == issuer_lookup.StoreIndex.of(store.roots)
    next_run()
    (kept,) = cache.glob("certificate-names.*")
    assert kept.stat().st_mode & 0o777 == 0o600
    read: list[object] = []
    monkeypatch.setattr(issuer_lookup, "_store_keys", lambda cert: read.append(cert) or (None, None))
    assert issuer_lookup.StoreIndex.of(store.roots, fps) == first
    assert read == []  # every name came from the cache
    # A kept entry of the wrong shape (a damaged or foreign file) is read again, not used.
    stamp = issuer_lookup._keys_stamp()
    store_cache.store_names(fps[0], stamp, ("not", "keys"))
    next_run()
    assert issuer_lookup.StoreIndex.of(store.roots, fps).issuers == (None, first.issuers[1])
    assert len(read) == 1
    # Names read by other code (another stamp) are not taken.
    assert store_cache.load_names(fps[1], "another reader") is None


@pytest.mark.e2e  # processes of its own
def test_the_names_stamp_is_the_same_in_every_process_of_the_same_code() -> None:
    # A stamp that moved with what else the process had touched would make every kept name a miss.
    stamp = "from tlsfleet.agent.trust import issuer_lookup as il; print(il._keys_stamp())"
    touched = (
        "from tlsfleet.agent.trust import issuer_lookup as il, certinfo\n"
        "held = [f.__code__.co_consts for f in (il.name_key, il._compared, il._key_of, certinfo.raw_name_attributes)]\n"
        "print(il._keys_stamp())"
    )
    stamps = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        for code in (stamp, touched, stamp)
    }
    assert len(stamps) == 1 and len(stamps.pop().strip()) == 32


def test_kept_names_over_the_cap_keep_those_this_process_used(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_cache, "MAX_NAMES", 3)
    for i in range(3):
        store_cache.store_names(f"fp{i}", "stamp", (None, None))
    next_run()
    assert store_cache.load_names("fp1", "stamp") == (None, None)
    store_cache.store_names("fp9", "stamp", (None, None))  # four entries: over the cap
    next_run()
    assert [fp for fp in ("fp0", "fp1", "fp2", "fp9") if store_cache.load_names(fp, "stamp")] == ["fp1", "fp9"]


@pytest.mark.parametrize("damage", ["garbage", "another interpreter", "truncated", "writable by others"])
def test_a_names_file_that_is_not_a_good_one_is_ignored(cache: Path, damage: str) -> None:
    store_cache.store_names("fp", "stamp", (None, None))
    next_run()
    (path,) = cache.glob("certificate-names.*")
    good = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"\x00\xff" * 40)
    elif damage == "another interpreter":
        path.write_bytes(good.replace(sys.version.encode(), b"3.99.0 (other build)", 1))
    elif damage == "truncated":
        path.write_bytes(good[:-3])
    else:
        path.chmod(0o622)
    forget_cached_reads()
    assert store_cache.load_names("fp", "stamp") is None
