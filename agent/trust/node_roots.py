"""What a Node.js executable trusts: its bundled roots, asked of it once until it changes, and which store a
node process started with a given environment verifies with.

Node's bundled roots are compiled into the binary (`tls.rootCertificates`); nothing on disk holds them, so
the executable is run, with no environment but its OpenSSL settings (the bundled list depends on the binary
alone), stdin closed, a short timeout and a cap on what it may print. The answer is kept until the executable
(its real path's inode, mtime or size) changes: in process, and on disk where the CLI enables store_cache. A node that
hangs, exits non-zero, prints garbage or too much gives an answer with `failed` set, never an exception.

Which store a node process uses (`node_trust`) is Node's rule, read from the environment it starts with:
- by default its bundled roots (or OpenSSL's default store, for a build made to use it);
- `--use-openssl-ca` in NODE_OPTIONS: OpenSSL's default store instead (its default file and directory, or
  SSL_CERT_FILE / SSL_CERT_DIR), `--use-bundled-ca` the bundled roots;
- `--use-system-ca` (or NODE_USE_SYSTEM_CA=1) on versions that know it: the system store as well as the
  bundled roots (on Linux, OpenSSL's default file and directory);
- NODE_EXTRA_CA_CERTS, read at start, adds its file in every case.
OpenSSL's defaults are those of the OpenSSL node carries: its OPENSSLDIR, read from the binary when node
bundles OpenSSL, else those of the OpenSSL the agent is linked against (the host's).

The security level it verifies at (`node_level`) is asked in the same run, with the environment's OpenSSL
settings (OPENSSL_CONF and NODE_OPTIONS' OpenSSL options, nothing else), and asked again when they or the
configuration file change.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shlex
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache

from . import store_cache

__all__ = [
    "MAX_ANSWER_BYTES",
    "MAX_BUNDLED_ROOTS",
    "NODE_TIMEOUT_S",
    "NodeAnswer",
    "NodeLevel",
    "NodeTrust",
    "Source",
    "ask_node",
    "forget_node_answers",
    "node_level",
    "node_trust",
    "openssl_defaults",
    "sources",
]

NODE_TIMEOUT_S = 3.0
MAX_ANSWER_BYTES = 4 * 1024 * 1024  # Node 20's 144 roots print as about 200 KiB
MAX_BUNDLED_ROOTS = 1024
_MAX_BINARY_BYTES = 1024 * 1024 * 1024
_STDERR_TAIL = 4096
_VERSION = re.compile(r"^v\d+\.\d+\.\d+[\w.+-]*$")
_OPENSSLDIR_MARK = b'OPENSSLDIR: "'
_OPENSSLDIR = re.compile(rb'OPENSSLDIR: "([^"\x00]{1,255})"')
_OPENSSLDIR_SPAN = 300  # the mark and the longest value the pattern takes
_SCAN_CHUNK = 1024 * 1024
_CA_FLAGS = ("--use-openssl-ca", "--use-bundled-ca", "--use-system-ca")
_NO_ANSWER = "printed no answer (expected its version and bundled roots as JSON)"

# Node 12.3+ syntax (tls.rootCertificates), no modules but tls. The build's configuration says whether it was
# made to use OpenSSL's store by default (configure --openssl-use-def-ca-store) or to load a system CA file
# first (--openssl-system-ca-path). PROBES becomes the security level probe certificates (see node_level).
_ASK = r"""
const refused = [];
for (const der of PROBES) {
  const pem = "-----BEGIN CERTIFICATE-----\n" + der.match(/.{1,64}/g).join("\n") + "\n-----END CERTIFICATE-----\n";
  try { require("tls").createSecureContext().context.setCert(pem); refused.push(""); }
  catch (e) { refused.push(String(e)); }
}
const c = process.config || {};
const v = c.variables || {};
process.stdout.write(JSON.stringify({
  version: process.version,
  roots: require("tls").rootCertificates,
  openssl_store_default: ((c.target_defaults || {}).defines || []).includes("NODE_OPENSSL_CERT_STORE"),
  system_cert_path: v.openssl_system_ca_path || "",
  shared_openssl: !!v.node_shared_openssl,
  flags: [...process.allowedNodeEnvironmentFlags].filter((f) => /^--use-[a-z]+-ca$/.test(f)),
  refused,
}));
"""


@dataclass(frozen=True)
class NodeAnswer:
    """What one node executable said about itself; `failed` says why there is no answer."""

    version: str = ""
    roots: tuple[str, ...] = ()  # the bundled roots, PEM
    openssl_store_default: bool = False  # built to use OpenSSL's default store unless --use-bundled-ca
    system_cert_path: str = ""  # a CA file the build loads first (--openssl-system-ca-path)
    flags: frozenset[str] = frozenset()  # the CA-store options this version accepts
    shared_openssl: bool = True  # linked against the host's libcrypto rather than carrying its own
    executable: str = ""  # the real path asked
    # Per probe certificate (weakest key first), why node's default TLS context refused it ("": loaded).
    refused: tuple[str, ...] = ()
    asked_with: tuple[str, ...] = ()  # the OpenSSL settings it was asked with (_asked_with)
    failed: str = ""
    printed: dict[str, object] = field(default_factory=dict, compare=False, hash=False, repr=False)  # as node said


@dataclass(frozen=True)
class _Cached:
    """Node's answer, with the stamp of the executable it came from."""

    stamp: tuple[int, int, int, int] | None
    answer: NodeAnswer


_answers: dict[str, _Cached] = {}
_answers_lock = threading.Lock()


def forget_node_answers() -> None:
    """Ask every node again next time (a forced re-read)."""
    with _answers_lock:
        _answers.clear()


def _stamp(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def ask_node(executable: str, timeout: float | None = None, environ: Mapping[str, str] | None = None) -> NodeAnswer:
    """The answer of the node at `executable`, asked again only when its real file changes, or, with `environ`,
    when its OpenSSL settings there (OPENSSL_CONF, NODE_OPTIONS' OpenSSL options) or its configuration file
    change: node is started with those, so its answer says the security level they give (`node_level`)."""
    real = os.path.realpath(executable)
    stamp = _stamp(real)
    with _answers_lock:
        cached = _answers.get(real)
    fresh = cached is not None and cached.stamp == stamp
    if (
        cached is not None
        and fresh
        and (environ is None or cached.answer.asked_with == _asked_with(cached.answer, environ))
    ):
        return cached.answer
    env = _openssl_env(environ) if environ is not None else {}
    key = (real, "-e", _ASK, *(f"{k}={v}" for k, v in sorted(env.items())))
    answer = _remembered(key, stamp, environ or {}) or _ask(real, NODE_TIMEOUT_S if timeout is None else timeout, env)
    # A failed answer is kept too (a node that hangs is not run again each time), for these settings alone.
    answer = replace(answer, asked_with=_asked_with(answer, environ or {}))
    with _answers_lock:
        _answers[real] = _Cached(stamp, answer)
    if not answer.failed:  # a timeout on a busy host is not kept for the next process
        store_cache.store_answer(key, _disk_stamp(stamp, answer), answer.printed)
    return answer


def _disk_stamp(stamp: tuple[int, int, int, int] | None, answer: NodeAnswer) -> list[object] | None:
    if stamp is None:
        return None
    return [*stamp, *answer.asked_with[-1:]]


def _remembered(
    key: tuple[str, ...], stamp: tuple[int, int, int, int] | None, environ: Mapping[str, str]
) -> NodeAnswer | None:
    """What an earlier process was told by this very executable (store_cache), checked as node's own output is."""
    found = store_cache.load_answer(key)
    if found is None or stamp is None:
        return None
    answer = _answer_of(found[1], key[0])
    if answer.failed:
        return None
    answer = replace(answer, asked_with=_asked_with(answer, environ))
    return answer if found[0] == _disk_stamp(stamp, answer) else None


def _kill(process: subprocess.Popen[bytes]) -> None:
    # Its own session: a script standing in for node may have children that hold the pipes open.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        process.kill()
    process.wait()


def _bounded_run(
    argv: list[str], timeout: float, env: Mapping[str, str] | None = None
) -> tuple[int, bytes, bytes] | str:
    """(exit status, stdout, stderr's tail), or why there is none: not run, timed out, printed too much.
    `env` None runs it with an empty environment."""
    try:
        process = subprocess.Popen(
            argv,
            env=dict(env or {}),
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        return f"cannot be run: {exc.strerror or exc}"
    assert process.stdout is not None and process.stderr is not None
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ, out)
        selector.register(process.stderr, selectors.EVENT_READ, err)
        try:
            while selector.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    _kill(process)
                    return f"did not answer within {timeout:g} s"
                for key, _ in selector.select(left):
                    chunk = os.read(key.fd, 64 * 1024)
                    if not chunk:
                        selector.unregister(key.fileobj)
                        continue
                    key.data.extend(chunk)
                    if len(out) > MAX_ANSWER_BYTES:
                        _kill(process)
                        return f"printed more than {MAX_ANSWER_BYTES} bytes"
                    del err[:-_STDERR_TAIL]
            try:
                status = process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill(process)
                return f"did not exit within {timeout:g} s"
        finally:
            process.stdout.close()
            process.stderr.close()
    return status, bytes(out), bytes(err)


def _openssl_dir_in(executable: str) -> str:
    """The OPENSSLDIR compiled into a node that bundles OpenSSL (OpenSSL_version(OPENSSL_DIR)), or ""."""
    # Read in chunks, not mapped: a mapping's pages count in the agent's resident memory while it scans, and a
    # node binary is some 100 MB (a container's memory limit sees the peak).
    tail = b""
    try:
        with open(executable, "rb") as f:
            if os.fstat(f.fileno()).st_size > _MAX_BINARY_BYTES:
                return ""
            while chunk := f.read(_SCAN_CHUNK):
                data = tail + chunk
                at = data.find(_OPENSSLDIR_MARK)
                if at >= 0:
                    data += f.read(_OPENSSLDIR_SPAN)  # the value may run past this chunk
                    found = _OPENSSLDIR.match(data[at : at + _OPENSSLDIR_SPAN])
                    return found.group(1).decode(errors="replace") if found else ""
                tail = data[-len(_OPENSSLDIR_MARK) :]
    except OSError:
        return ""
    return ""


def _ask(executable: str, timeout: float, env: Mapping[str, str]) -> NodeAnswer:
    script = _ASK.replace("PROBES", json.dumps(list(_probe_certificates())), 1)
    ran = _bounded_run([executable, "-e", script], timeout, env)
    if isinstance(ran, str):
        return NodeAnswer(failed=ran)
    status, out, err = ran
    if status != 0:
        tail = (err.decode(errors="replace").strip().splitlines() or [""])[-1][:200]
        return NodeAnswer(failed=f"exited {status}" + (f": {tail}" if tail else ""))
    try:
        raw = json.loads(out.decode())
    except (ValueError, UnicodeDecodeError):
        raw = None
    return _answer_of(raw, executable)


def _answer_of(raw: object, executable: str) -> NodeAnswer:
    """The answer in what node printed (parsed JSON), checked field by field."""
    if not isinstance(raw, dict):
        return NodeAnswer(failed=_NO_ANSWER)
    try:
        version, roots, flags = raw["version"], raw["roots"], raw["flags"]
        if not (isinstance(version, str) and _VERSION.match(version)):
            raise ValueError("version")
        if not (isinstance(roots, list) and all(isinstance(r, str) for r in roots)):
            raise ValueError("roots")
        if not (isinstance(flags, list) and all(isinstance(f, str) for f in flags)):
            raise ValueError("flags")
        cert_path = raw.get("system_cert_path", "")
        shared = bool(raw.get("shared_openssl", False))
        openssl_store_default = bool(raw.get("openssl_store_default", False))
        refused = raw.get("refused", [])
        if not (isinstance(refused, list) and all(isinstance(r, str) for r in refused)):
            raise ValueError("refused")
    except (ValueError, KeyError, TypeError):
        return NodeAnswer(failed=_NO_ANSWER)
    if len(roots) > MAX_BUNDLED_ROOTS:
        return NodeAnswer(failed=f"listed {len(roots)} bundled roots, over the cap of {MAX_BUNDLED_ROOTS}")
    return NodeAnswer(
        version=version,
        roots=tuple(roots),
        openssl_store_default=openssl_store_default,
        system_cert_path=cert_path if isinstance(cert_path, str) else "",
        flags=frozenset(f for f in flags if f in _CA_FLAGS),
        shared_openssl=shared,
        executable=executable,
        refused=tuple(refused) if len(refused) == _PROBE_COUNT else (),
        printed=raw,
    )


@lru_cache(maxsize=16)
def _openssl_home(executable: str, stamp: tuple[int, int, int, int] | None) -> str:
    # Finding it reads the whole binary (some 40 ms for a 100 MB node): a CLI process takes an earlier one's.
    key = (executable, "OPENSSLDIR")
    found = store_cache.load_answer(key) if stamp is not None else None
    if found is not None and found[0] == list(stamp or ()) and isinstance(found[1].get("dir"), str):
        return str(found[1]["dir"])
    home = _openssl_dir_in(executable)
    if stamp is not None:
        store_cache.store_answer(key, list(stamp), {"dir": home})
    return home


def openssl_defaults(answer: NodeAnswer) -> tuple[str, str]:
    """OpenSSL's default CA file and directory for this node. A node linked against the host's libcrypto has
    that library's defaults, which are the agent's own; one that carries OpenSSL has its own OPENSSLDIR
    (read from the binary only when a store needs it, once per executable)."""
    home = "" if answer.shared_openssl else _openssl_home(answer.executable, _stamp(answer.executable))
    if home:
        return os.path.join(home, "cert.pem"), os.path.join(home, "certs")
    paths = ssl.get_default_verify_paths()
    return paths.openssl_cafile, paths.openssl_capath


@dataclass(frozen=True)
class NodeTrust:
    """The store a node process started with one environment verifies with, by where its roots come from."""

    bundled: bool  # its bundled roots
    openssl: bool  # OpenSSL's default file and directory (or SSL_CERT_FILE / SSL_CERT_DIR)
    extra: str  # NODE_EXTRA_CA_CERTS, "" when unset
    why: str  # what chose the store, "" for Node's default
    error: str = ""  # node refuses to start with this environment


def _options(environ: Mapping[str, str]) -> list[str]:
    return environ.get("NODE_OPTIONS", "").split()


def node_trust(answer: NodeAnswer, environ: Mapping[str, str]) -> NodeTrust:
    """Node's rule for its CA store (see the module), applied to `environ` (the agent's, as a node started
    like the agent gets it)."""
    extra = environ.get("NODE_EXTRA_CA_CERTS", "")
    given = [o for o in _options(environ) if o in _CA_FLAGS]
    unknown = [o for o in dict.fromkeys(given) if o not in answer.flags]
    if unknown:
        return NodeTrust(
            False, False, extra, "", f"NODE_OPTIONS has {', '.join(unknown)}, which node {answer.version} refuses"
        )
    if "--use-openssl-ca" in given and "--use-bundled-ca" in given:
        return NodeTrust(
            False, False, extra, "", "NODE_OPTIONS has both --use-openssl-ca and --use-bundled-ca, which node refuses"
        )
    in_env = "from NODE_OPTIONS in the agent's environment"
    if "--use-openssl-ca" in given:
        return NodeTrust(False, True, extra, f"--use-openssl-ca {in_env}")
    system = "--use-system-ca" in given or (
        "--use-system-ca" in answer.flags and environ.get("NODE_USE_SYSTEM_CA", "") == "1"
    )
    if system:
        why = (
            f"--use-system-ca {in_env}"
            if "--use-system-ca" in given
            else "NODE_USE_SYSTEM_CA in the agent's environment"
        )
        return NodeTrust(True, True, extra, why)
    if answer.openssl_store_default and "--use-bundled-ca" not in given:
        return NodeTrust(False, True, extra, "built to use OpenSSL's store (--openssl-use-def-ca-store)")
    return NodeTrust(True, False, extra, f"--use-bundled-ca {in_env}" if given else "")


@dataclass(frozen=True)
class Source:
    """One place a node process takes roots from: its bundled list, a file, or OpenSSL directories."""

    label: str  # as the store's description names it: "bundled roots", "NODE_EXTRA_CA_CERTS=/etc/x.pem"
    kind: str  # "bundled", "file", "dirs" (os.pathsep-separated, as SSL_CERT_DIR)
    path: str = ""
    required: bool = False  # missing or unreadable is worth saying (node warns); OpenSSL's defaults may be absent


def sources(answer: NodeAnswer, trust: NodeTrust, environ: Mapping[str, str]) -> tuple[Source, ...]:
    """Where the roots of `trust` come from, in the order node loads them."""
    out: list[Source] = []
    if answer.system_cert_path:
        out.append(Source(f"the build's CA file {answer.system_cert_path}", "file", answer.system_cert_path))
    if trust.bundled:
        out.append(Source("bundled roots", "bundled"))
    if trust.openssl:
        cafile, cadir = environ.get("SSL_CERT_FILE", ""), environ.get("SSL_CERT_DIR", "")
        default_file, default_dir = openssl_defaults(answer) if not (cafile and cadir) else ("", "")
        file_label = f"SSL_CERT_FILE={cafile}" if cafile else f"OpenSSL's default file {default_file}"
        dir_label = f"SSL_CERT_DIR={cadir}" if cadir else f"OpenSSL's default directory {default_dir}"
        out.append(Source(file_label, "file", cafile or default_file))
        out.append(Source(dir_label, "dirs", cadir or default_dir))
    if trust.extra:
        out.append(Source(f"NODE_EXTRA_CA_CERTS={trust.extra}", "file", trust.extra, required=True))
    return tuple(out)


# --- the security level node verifies at ---------------------------------------------------------------
#
# Node reads the `nodejs_conf` section of its OpenSSL configuration (OPENSSL_CONF, or openssl.cnf in its
# OPENSSLDIR), not `openssl_conf` (unless --openssl-shared-config), so a host's system-wide SECLEVEL may not
# reach it, and a node carrying its own OpenSSL starts from that OpenSSL's default level (1), not the host's.
# Rather than re-implement that, node is asked: it loads certificates whose keys have 56, 96, 112, 128, 192
# and 260 bits of security into a default TLS context (SSL_CTX_use_certificate refuses a key below the level:
# 80, 112, 128, 192, 256 bits for levels 1 to 5); the level is how many it refuses.

# What of NODE_OPTIONS changes node's OpenSSL setup; nothing else of it reaches the asked node (a --require
# in it would run code).
_OPENSSL_OPTIONS = (
    "--openssl-config",
    "--openssl-shared-config",
    "--tls-cipher-list",
    "--openssl-legacy-provider",
    "--enable-fips",
    "--force-fips",
)
_VALUED = ("--openssl-config", "--tls-cipher-list")


@dataclass(frozen=True)
class NodeLevel:
    """The OpenSSL security level a node process started with one environment verifies servers at."""

    level: int | None  # None: node did not say (`failed`)
    config: str  # the OpenSSL configuration file node reads ("" when none is named and the default is unknown)
    section: str  # the section of it node applies: nodejs_conf, or openssl_conf with --openssl-shared-config
    options: tuple[str, ...] = ()  # what of NODE_OPTIONS changed OpenSSL's setup
    failed: str = ""

    def describe(self) -> str:
        if self.level is None:
            return f"its security level is unknown: {self.failed}"
        where = f"the {self.section} section of {self.config}" if self.config else f"its {self.section} section"
        opts = f", NODE_OPTIONS {' '.join(self.options)}" if self.options else ""
        return f"security level {self.level} ({where}{opts})"


def _node_options(environ: Mapping[str, str]) -> list[str]:
    """NODE_OPTIONS as node splits it (spaces, double quotes), keeping only the OpenSSL options."""
    raw = environ.get("NODE_OPTIONS", "")
    try:
        words = shlex.split(raw)
    except ValueError:
        words = raw.split()
    kept: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        name = word.split("=", 1)[0]
        if name in _OPENSSL_OPTIONS:
            if name in _VALUED and "=" not in word and i + 1 < len(words):
                word = f"{word}={words[i + 1]}"
                i += 1
            kept.append(word)
        i += 1
    return kept


def _config_file(answer: NodeAnswer, environ: Mapping[str, str], options: list[str]) -> str:
    """The configuration node reads: --openssl-config, else OPENSSL_CONF, else openssl.cnf in its OPENSSLDIR."""
    named = [o.split("=", 1)[1] for o in options if o.startswith("--openssl-config=")]
    if named:
        return named[-1]
    if environ.get("OPENSSL_CONF"):
        return environ["OPENSSL_CONF"]
    home = "" if answer.shared_openssl else _openssl_home(answer.executable, _stamp(answer.executable))
    if not home:
        home = os.path.dirname(ssl.get_default_verify_paths().openssl_cafile or "")
    return os.path.join(home, "openssl.cnf") if home else ""


# The level probe's certificates (base64 DER), weakest key first: a 512-bit RSA key (56 bits of security in
# OpenSSL's count, below level 1), then P-192, P-224, P-256, P-384 and P-521, each the weakest key that passes one
# more level (96, 112, 128, 192 and 256 bits). Self-signed with SHA-512 by a P-521 key (SHA-512 passes every level:
# only the key is weighed), valid 2000 to 2099. Kept as data rather than made at start, which would load
# cryptography's OpenSSL backend into every agent for some 3 MiB; tests/agent/trust/test_node_roots.py checks
# each one's key, and `make_level_probes` there makes them again.
_PROBE_CERTIFICATES: tuple[str, ...] = (
    (
        "MIIBhjCB6KADAgECAgEBMAoGCCqGSM49BAMEMCgxJjAkBgNVBAMMHXRsc2ZsZWV0IHNlY3VyaXR5IGxldmVsIHByb2JlMCAXDTAw"
        "MDEwMTAwMDAwMFoYDzIwOTkxMjMxMDAwMDAwWjAoMSYwJAYDVQQDDB10bHNmbGVldCBzZWN1cml0eSBsZXZlbCBwcm9iZTBcMA0G"
        "CSqGSIb3DQEBAQUAA0sAMEgCQQCAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        "AAAAAAAAAQABAgMBAAEwCgYIKoZIzj0EAwQDgYwAMIGIAkIBluTDQWGoo/QGClZZ/U7wQc6KOxFKnoZ3hPD1NgiygFc/ST+nl0OC"
        "MbMZEjZaHdyHCtksPTKVoBzJtPet2xuAjIUCQgGQcrOg6Xx4QRIQ3b5G5QgTNY33JbA2UB/Qw7LP/kyf+OEnJfcxRgm3AtyMGbTu"
        "19y3YBK4VU811uklKSsH0/Oe5w=="
    ),
    (
        "MIIBczCB1aADAgECAgEBMAoGCCqGSM49BAMEMCgxJjAkBgNVBAMMHXRsc2ZsZWV0IHNlY3VyaXR5IGxldmVsIHByb2JlMCAXDTAw"
        "MDEwMTAwMDAwMFoYDzIwOTkxMjMxMDAwMDAwWjAoMSYwJAYDVQQDDB10bHNmbGVldCBzZWN1cml0eSBsZXZlbCBwcm9iZTBJMBMG"
        "ByqGSM49AgEGCCqGSM49AwEBAzIABOAKc/ioMNz1tWgh6+CY4t3wh5f6CTRTeq2DlJrImAQokykqUI/6Kt2rrlxkkz8TMDAKBggq"
        "hkjOPQQDBAOBjAAwgYgCQgHfPN17Q25K3s9Ub38EUGQGKcS4+QfbrGr8vTyQinO3eWOtrl9+W1flyn/vtsHb8z0yXfXWbTWfFZ/N"
        "kgpi/gKYHAJCAcJzQjyPCaTUWLa+bLnE4EFLGnHM366fq6pzm7Pvc5J1bShVbw31Je7oPGiYgmCN25SYBKC7YxqtEfXr7S+ZpWzV"
    ),
    (
        "MIIBeDCB2qADAgECAgEBMAoGCCqGSM49BAMEMCgxJjAkBgNVBAMMHXRsc2ZsZWV0IHNlY3VyaXR5IGxldmVsIHByb2JlMCAXDTAw"
        "MDEwMTAwMDAwMFoYDzIwOTkxMjMxMDAwMDAwWjAoMSYwJAYDVQQDDB10bHNmbGVldCBzZWN1cml0eSBsZXZlbCBwcm9iZTBOMBAG"
        "ByqGSM49AgEGBSuBBAAhAzoABLA2uKem+Tl5a3FE9rRF5XRd3J7d+iARBt6DuGtG6Rxh7chrqsoENIMqkaZp3O0/KEI/Mke3Dkhm"
        "MAoGCCqGSM49BAMEA4GMADCBiAJCAX92BAVScQt7jWd/v8EVlVC7bmHOUQ4FUN35evtxCKwfKDXdGTeBjQFuHgJ2+5Cko/GAExV0"
        "IhTQ/drJJl3mWs+nAkIBuNRd/ucTnI9c0DLXEY3oV8tEWSLPl+xL/3t73vAk1wwrN0kB1X2hSN+VV+BUvzMhawp9q4kjmCxoGAyM"
        "5aNhGtM="
    ),
    (
        "MIIBgzCB5aADAgECAgEBMAoGCCqGSM49BAMEMCgxJjAkBgNVBAMMHXRsc2ZsZWV0IHNlY3VyaXR5IGxldmVsIHByb2JlMCAXDTAw"
        "MDEwMTAwMDAwMFoYDzIwOTkxMjMxMDAwMDAwWjAoMSYwJAYDVQQDDB10bHNmbGVldCBzZWN1cml0eSBsZXZlbCBwcm9iZTBZMBMG"
        "ByqGSM49AgEGCCqGSM49AwEHA0IABNc5bNQlCE5etyAlk7hee9P9TNgLh5+w8SYk30ErG7ydmUhHR5i3pTPP3v2OBXqI+BV9nH+0"
        "T3G7KV6D6yFAUnEwCgYIKoZIzj0EAwQDgYwAMIGIAkIBI7iALIMcya1x4Dd+s0gf2xfERhG/leIw0H01ueusBfOvJl0VPk60HrhI"
        "tjWGtckTNObp92E9iqkWRUpheOZAPXsCQgE+hd8pa2oWCnco/2/dNRyKPbhGcl9wvYVeiJevoDWLAEepz0muttmegEajfWGEvUPN"
        "SqBpXPKO5hhmRuuxbXKvDg=="
    ),
    (
        "MIIBoTCCAQKgAwIBAgIBATAKBggqhkjOPQQDBDAoMSYwJAYDVQQDDB10bHNmbGVldCBzZWN1cml0eSBsZXZlbCBwcm9iZTAgFw0w"
        "MDAxMDEwMDAwMDBaGA8yMDk5MTIzMTAwMDAwMFowKDEmMCQGA1UEAwwddGxzZmxlZXQgc2VjdXJpdHkgbGV2ZWwgcHJvYmUwdjAQ"
        "BgcqhkjOPQIBBgUrgQQAIgNiAAQi44BJw9vWMBAnEqeMQwpaIjOdIOji+5uFkfjDjLRU+OFAVBOIVkn9MOHZDS5x826pMaU9naEE"
        "psOMqcnIoDov35DDQxScWCFunnbnqJ2HmHuIlAb1+Zk2DCsO3LxfeiEwCgYIKoZIzj0EAwQDgYwAMIGIAkIBCqBFZedPncPhuG+B"
        "YeFzHtWksXa+UcEkIG8vSYqJizm8AsnSpm/Y7Oska4LBll2EFPeKU1bPMXi+Gi33vVZkXq0CQgD9gcjocj3bRR594iIScRRFL+Qn"
        "N61dqo3oVuqtD8W1vq7770u0JFbLfqbTyPB4591jITidd3SPZhEOQFXcSX2Wvw=="
    ),
    (
        "MIIBxjCCASigAwIBAgIBATAKBggqhkjOPQQDBDAoMSYwJAYDVQQDDB10bHNmbGVldCBzZWN1cml0eSBsZXZlbCBwcm9iZTAgFw0w"
        "MDAxMDEwMDAwMDBaGA8yMDk5MTIzMTAwMDAwMFowKDEmMCQGA1UEAwwddGxzZmxlZXQgc2VjdXJpdHkgbGV2ZWwgcHJvYmUwgZsw"
        "EAYHKoZIzj0CAQYFK4EEACMDgYYABAFLncZWQ73+WWJ1+jGV7javjrlq3s8jfZ+juSw8Wy5od45ziPAvltzg7lqixi8EePyqm/Mt"
        "2kPy/zb3syLv2vpcnAB5whNnwI3X51rsymzwYzKBEoRulmoO0gWFTEb8J7TCTWayiJJy6TgsFmFec5RWFHqZQt9JR+rmhzXWzfEj"
        "l0BYhzAKBggqhkjOPQQDBAOBiwAwgYcCQgHoYdIB2WPZ/WYwqIc+U5euI2qdJBZ5f1f9AUC7dR5ngwEhx+MKvuGLSmunvi/T5rE0"
        "2HCuvIQB5u6EhWXr6RhQvQJBORNgj18elIrwkqnXHzbRR6z6fp/ivFGCdX/A1UNl0jaBdfT+EwBmYtSEktb1G+H4LIrbrHmb1fGM"
        "ByVqSpunGFY="
    ),
)
_PROBE_COUNT = len(_PROBE_CERTIFICATES)


def _probe_certificates() -> tuple[str, ...]:
    """Base64 DER of the probe certificates, weakest key first (see above): public keys only matter."""
    return _PROBE_CERTIFICATES


def node_level(answer: NodeAnswer, environ: Mapping[str, str]) -> NodeLevel:
    """The security level node verifies at when started with `environ`'s OpenSSL settings (OPENSSL_CONF and
    NODE_OPTIONS), from its answer to `ask_node(..., environ=environ)`."""
    options = _node_options(environ)
    config = _config_file(answer, environ, options)
    section = "openssl_conf" if "--openssl-shared-config" in options else "nodejs_conf"
    found = NodeLevel(None, config, section, tuple(options))
    if answer.failed:
        return replace(found, failed=answer.failed)
    if answer.asked_with != _asked_with(answer, environ):
        return replace(found, failed="node was asked with other OpenSSL settings")
    refused = answer.refused
    if not refused:
        return replace(found, failed="node did not say (no probe certificate was loaded)")
    level = 0
    while level < len(refused) and refused[level]:
        level += 1
    if level >= len(refused) or any(refused[level:]):
        return replace(found, failed=f"node refused the probe certificates out of order: {list(refused)}")
    return replace(found, level=level)


def _openssl_env(environ: Mapping[str, str]) -> dict[str, str]:
    """What of `environ` reaches the asked node: its OpenSSL settings, nothing that could run code."""
    env = {"OPENSSL_CONF": environ["OPENSSL_CONF"]} if environ.get("OPENSSL_CONF") else {}
    options = _node_options(environ)
    if options:
        env["NODE_OPTIONS"] = " ".join(options)
    return env


def _asked_with(answer: NodeAnswer, environ: Mapping[str, str]) -> tuple[str, ...]:
    """The OpenSSL settings an answer holds for: the variables passed and the configuration file's stamp."""
    config = _config_file(answer, environ, _node_options(environ))
    stamp = _stamp(config) if config else None
    return (*(f"{k}={v}" for k, v in sorted(_openssl_env(environ).items())), f"{config}:{stamp}")
