"""The language runtimes on this host whose own trust stores matter: Python interpreters (their certifi),
Java runtimes (their cacerts) and Node.js, found where the host's services get them.

- Python: the interpreters in /usr/bin and /usr/local/bin (`python3`, `python3.N`: what `#!/usr/bin/python3`
  units, shebangs and `python3 -m pip` there use), plus the interpreters, environments and site-packages
  directories named with `--runtime python=PATH`. Nothing is imported into the agent: an interpreter
  tells where its certifi is by being run once, isolated (`-I`: no PYTHON* variables, no user site, so
  the installation's own view, patched `where()` of Debian's python3-certifi included), with a short
  timeout; the answer is kept until the interpreter or its site-packages directories change. A named
  site-packages directory is asked the same way, with the agent's interpreter in isolated mode and no
  site (`-I -S`), so only that directory can provide certifi. The agent's own virtual environment is
  never found by searching (no application on the host uses it); name it to judge it.
- Java: a runtime where one is: JAVA_HOME, `java` on PATH resolved through its symlinks to its home (and
  its lib/security/cacerts), or `--runtime java=PATH` (a JRE home, a `java` executable, a keystore).
- Node: `node` on PATH or `--runtime node=PATH`. Each node is asked for its bundled roots once until it
  changes (node_roots.py), and the store it really verifies with is judged (stores.py): its bundled roots
  plus NODE_EXTRA_CA_CERTS, or OpenSSL's default store where NODE_OPTIONS says --use-openssl-ca.

How each runtime's client verifies beyond its store's content (`verification_rules`, read by verify.py) is
recorded when it is found: node's security level (asked of it, node_roots.node_level), and for a JRE its
java.security's algorithm constraints, partial chains and no security level (Java's PKIX).

`RuntimeOptions.search` False finds nothing by itself: only named runtimes (and JAVA_HOME, which names
one) count. A runtime found without a store (a Python without certifi, Node without the variable) is
still listed: it is a fact about the host.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from . import store_cache
from .node_roots import NodeLevel, ask_node, forget_node_answers, node_level, node_trust
from .node_roots import sources as node_sources

__all__ = [
    "HOST_RULES",
    "INTERPRETER_TIMEOUT_S",
    "PYTHON_SEARCH_DIRS",
    "RUNTIME_KINDS",
    "JavaConstraint",
    "JavaRules",
    "Runtime",
    "RuntimeOptions",
    "VerifyRules",
    "Watch",
    "find_runtimes",
    "forget_answers",
    "java_cacerts",
    "java_feature_version",
    "java_refusal",
    "java_security_files",
    "parse_disabled_algorithms",
    "read_java_properties",
    "search_watches",
    "verification_rules",
]

RUNTIME_KINDS: tuple[str, ...] = ("python", "java", "node")
PYTHON_SEARCH_DIRS: tuple[str, ...] = ("/usr/bin", "/usr/local/bin")
INTERPRETER_TIMEOUT_S = 2.0
MAX_SEARCHED_INTERPRETERS = 16
_MAX_ANSWER_BYTES = 64 * 1024
_PYTHON_NAME = re.compile(r"^python3(?:\.\d+)?$")

# Watches: (mode, path). "file": its identity and size; "dir": its entries too; "mtime": the mtime only.
Watch = tuple[str, str]

# Run by the interpreter asked, Python 3.0+ syntax, stdlib only. argv[1], when given, goes first on sys.path.
_ASK = r"""
import json, os, sys
if len(sys.argv) > 1:
    sys.path.insert(0, sys.argv[1])
out = {"prefix": sys.prefix, "version": "%d.%d.%d" % tuple(sys.version_info[:3]),
       "site": [p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages")]}
try:
    import certifi
    out["where"] = certifi.where()
    out["package"] = os.path.dirname(os.path.dirname(os.path.abspath(certifi.__file__)))
except ImportError as e:
    if getattr(e, "name", "certifi") not in ("certifi", None):
        out["error"] = "%s: %s" % (type(e).__name__, e)
except Exception as e:
    out["error"] = "%s: %s" % (type(e).__name__, e)
print(json.dumps(out))
"""


@dataclass(frozen=True)
class RuntimeOptions:
    """Which runtimes count: those named (`--runtime KIND=PATH`) and, with `search`, those found here."""

    named: tuple[tuple[str, str], ...] = ()
    search: bool = True
    python_dirs: tuple[str, ...] = PYTHON_SEARCH_DIRS

    def __post_init__(self) -> None:
        for kind, path in self.named:
            if kind not in RUNTIME_KINDS:
                raise ValueError(f"runtime {kind!r} is not known; accepted: {', '.join(RUNTIME_KINDS)}")
            if not path:
                raise ValueError(f"runtime {kind} needs a path")


@dataclass(frozen=True)
class Runtime:
    """One runtime found on the host, and the store its clients trust by default (if any)."""

    kind: str  # python, java, node
    location: str  # the interpreter, site-packages directory, JRE home or node executable
    found_by: str  # why it counts: "--runtime python=...", "system interpreter in /usr/bin", "JAVA_HOME", ...
    detail: str = ""  # what it is and what it trusts, or why it has no store
    store_path: str = ""  # certifi's bundle or the JRE's cacerts; "" when it has none
    store_error: str = ""  # why the store it should have is not usable
    store_label: str = ""  # what tells two stores of one kind apart in their names (site-packages dir, JRE home)
    identity: str = ""  # what makes two findings one runtime (an interpreter's prefix, a real path)
    # Named by the operator (--runtime KIND=PATH) or by JAVA_HOME, rather than found by searching the host:
    # its clients are known to be in use.
    declared: bool = False
    watches: tuple[Watch, ...] = field(default=(), compare=False)

    def fact(self) -> tuple[str, str]:
        """(runtime, where and why) as HostFacts.runtimes lists it."""
        real = os.path.realpath(self.location) if self.location else ""
        where = f"{self.location} -> {real}" if real and real != self.location else self.location
        text = f"{where} ({self.found_by})"
        return self.kind, f"{text}: {self.detail}" if self.detail else text


# --- Python ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    """What an interpreter said of itself and of its certifi."""

    prefix: str = ""
    version: str = ""
    site: tuple[str, ...] = ()
    where: str = ""  # certifi.where(); "" when certifi is not installed
    package: str = ""  # the directory that holds the certifi package
    error: str = ""  # certifi is installed but unusable
    failed: str = ""  # the interpreter gave no answer


@dataclass(frozen=True)
class _Cached:
    """An interpreter's answer, with the stamp it was given under."""

    stamp: tuple[object, ...]
    answer: _Answer


_answers: dict[tuple[str, ...], _Cached] = {}
_answers_lock = threading.Lock()


def forget_answers() -> None:
    """Ask every interpreter again next time (a forced re-read)."""
    with _answers_lock:
        _answers.clear()
    forget_node_answers()


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _file_stamp(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


def _run(argv: Sequence[str], environ: Mapping[str, str]) -> _Answer:
    try:
        done = subprocess.run(
            list(argv),
            env=dict(environ),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=INTERPRETER_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return _Answer(failed=f"did not answer within {INTERPRETER_TIMEOUT_S:g} s")
    except OSError as exc:
        return _Answer(failed=f"cannot be run: {exc.strerror or exc}")
    if done.returncode != 0:
        tail = (done.stderr.decode(errors="replace").strip().splitlines() or [""])[-1][:200]
        return _Answer(failed=f"exited {done.returncode}" + (f": {tail}" if tail else ""))
    try:
        raw = json.loads(done.stdout[:_MAX_ANSWER_BYTES].decode(errors="replace").strip().splitlines()[-1])
        return _Answer(
            prefix=str(raw.get("prefix", "")),
            version=str(raw.get("version", "")),
            site=tuple(str(p) for p in raw.get("site", ()))[:32],
            where=str(raw.get("where", "") or ""),
            package=str(raw.get("package", "") or ""),
            error=str(raw.get("error", "") or ""),
        )
    except (ValueError, IndexError, AttributeError, TypeError):
        return _Answer(failed="printed no answer")


def _ask(argv: tuple[str, ...], stamped: str, environ: Mapping[str, str]) -> _Answer:
    """The answer of `argv`, cached until `stamped` (the interpreter or directory) or a site dir changes."""
    key = (*argv, stamped)
    with _answers_lock:
        cached = _answers.get(key)
    if cached is not None:
        answer = cached.answer
        if cached.stamp == (_file_stamp(stamped), *(_mtime(p) for p in answer.site)):
            return answer
    answer = _remembered(argv, stamped) or _run(argv, environ)
    with _answers_lock:
        _answers[key] = _Cached((_file_stamp(stamped), *(_mtime(p) for p in answer.site)), answer)
    if not answer.failed:  # a timeout on a busy host is not kept for the next process
        store_cache.store_answer((*argv, stamped), _disk_stamp(stamped, answer.site), _answer_fields(answer))
    return answer


# The same answers across processes (store_cache), checked against the same stamp as in process.
def _disk_stamp(stamped: str, site: Sequence[str]) -> list[object]:
    stamp = _file_stamp(stamped)
    return [list(stamp) if stamp is not None else None, *(_mtime(p) for p in site)]


def _answer_fields(answer: _Answer) -> dict[str, object]:
    return {
        "prefix": answer.prefix,
        "version": answer.version,
        "site": list(answer.site),
        "where": answer.where,
        "package": answer.package,
        "error": answer.error,
    }


def _remembered(argv: tuple[str, ...], stamped: str) -> _Answer | None:
    found = store_cache.load_answer((*argv, stamped))
    if found is None:
        return None
    stamp, raw = found
    try:
        site = raw["site"]
        if not isinstance(site, list):
            return None
        answer = _Answer(
            prefix=str(raw["prefix"]),
            version=str(raw["version"]),
            site=tuple(str(p) for p in site)[:32],
            where=str(raw["where"]),
            package=str(raw["package"]),
            error=str(raw["error"]),
        )
    except KeyError:
        return None
    return answer if stamp == _disk_stamp(stamped, answer.site) else None


def _is_executable_file(path: Path) -> bool:
    try:
        return path.is_file() and os.access(path, os.X_OK)
    except OSError:
        return False


def _own_environment() -> str | None:
    """The agent's own virtual environment (real path), or None when it runs on a plain interpreter."""
    if sys.prefix == sys.base_prefix:
        return None
    return os.path.realpath(sys.prefix)


def _python_runtime(
    location: str, found_by: str, argv: tuple[str, ...], stamped: str, environ: Mapping[str, str], *, dir_mode: bool
) -> Runtime:
    answer = _ask(argv, stamped, environ)
    watches: list[Watch] = [("file", os.path.realpath(stamped))] if not dir_mode else [("mtime", stamped)]
    watches += [("mtime", p) for p in answer.site]
    identity = f"prefix:{os.path.realpath(answer.prefix)}" if answer.prefix and not dir_mode else f"dir:{stamped}"
    if answer.failed:
        return Runtime(
            "python",
            location,
            found_by,
            f"{answer.failed}; its certifi is not judged",
            identity=f"path:{os.path.realpath(stamped)}",
            watches=tuple(watches),
        )
    version = f"Python {answer.version}, prefix {answer.prefix}" if not dir_mode else "site-packages directory"
    package = os.path.realpath(answer.package) if answer.package else ""
    if dir_mode and package and package != os.path.realpath(location):
        answer = _Answer(prefix=answer.prefix, version=answer.version, site=answer.site)  # not from this directory
    if answer.error:
        return Runtime(
            "python",
            location,
            found_by,
            f"{version}; certifi is installed but unusable: {answer.error}",
            store_error=f"certifi is installed but unusable: {answer.error}",
            store_label=location,
            identity=identity,
            watches=tuple(watches),
        )
    if not answer.where:
        return Runtime(
            "python", location, found_by, f"{version}; no certifi", identity=identity, watches=tuple(watches)
        )
    return Runtime(
        "python",
        location,
        found_by,
        f"{version}; certifi in {answer.package} trusts {answer.where}",
        store_path=answer.where,
        store_label=answer.package,
        identity=identity,
        watches=tuple(watches),
    )


def _named_python(path: str, environ: Mapping[str, str]) -> Runtime:
    found_by = f"--runtime python={path}"
    p = Path(path)
    if p.is_dir():
        exe = next((c for c in (p / "bin" / "python3", p / "bin" / "python") if _is_executable_file(c)), None)
        if exe is not None:  # a virtual environment or an installation prefix
            return _python_runtime(str(exe), found_by, (str(exe), "-I", "-c", _ASK), str(exe), environ, dir_mode=False)
        argv = (sys.executable, "-I", "-S", "-c", _ASK, str(p))
        return _python_runtime(str(p), found_by, argv, str(p), environ, dir_mode=True)
    if _is_executable_file(p):
        return _python_runtime(str(p), found_by, (str(p), "-I", "-c", _ASK), str(p), environ, dir_mode=False)
    why = "does not exist" if not p.exists() else "is neither an executable interpreter nor a directory"
    return Runtime("python", str(p), found_by, f"{p} {why}", identity=f"missing:{p}", watches=(("file", str(p)),))


def _searched_pythons(dirs: Sequence[str]) -> list[str]:
    found: list[str] = []
    seen: set[str] = set()
    for directory in dirs:
        try:
            names = sorted(n for n in os.listdir(directory) if _PYTHON_NAME.match(n))
        except OSError:
            continue
        for name in names:
            path = os.path.join(directory, name)
            real = os.path.realpath(path)
            if real in seen or not _is_executable_file(Path(path)):
                continue
            seen.add(real)
            found.append(path)
    return found[:MAX_SEARCHED_INTERPRETERS]


def _pythons(environ: Mapping[str, str], options: RuntimeOptions) -> list[Runtime]:
    out = [_declared(_named_python(path, environ)) for kind, path in options.named if kind == "python"]
    if options.search:
        own = _own_environment()
        for path in _searched_pythons(options.python_dirs):
            runtime = _python_runtime(
                path,
                f"system interpreter in {os.path.dirname(path)}",
                (path, "-I", "-c", _ASK),
                path,
                environ,
                dir_mode=False,
            )
            if own is not None and runtime.identity == f"prefix:{own}":
                continue  # the agent's own environment: nothing on the host uses it
            out.append(runtime)
    return _merge(out)


def _merge(runtimes: list[Runtime]) -> list[Runtime]:
    """One entry per runtime: a later finding of the same one adds its reason to the first."""
    merged: dict[str, Runtime] = {}
    for runtime in runtimes:
        first = merged.get(runtime.identity)
        if first is None:
            merged[runtime.identity] = runtime
        else:
            found_by = first.found_by
            if runtime.found_by not in found_by:
                also = (
                    f"{runtime.location}: {runtime.found_by}"
                    if runtime.location != first.location
                    else runtime.found_by
                )
                found_by = f"{found_by}; also {also}"
            merged[runtime.identity] = replace(first, found_by=found_by, declared=first.declared or runtime.declared)
    return list(merged.values())


def _declared(runtime: Runtime) -> Runtime:
    return replace(runtime, declared=True)


# --- Java -----------------------------------------------------------------------------------------


def java_cacerts(home: str) -> tuple[str, str]:
    """(the cacerts of a JRE home, "") or (where it should be, why it is not there)."""
    candidates = [
        os.path.join(home, "lib", "security", "cacerts"),
        os.path.join(home, "jre", "lib", "security", "cacerts"),
    ]
    found = next((c for c in candidates if os.path.isfile(c)), None)
    if found is not None:
        return found, ""
    return candidates[0], f"{home} has no lib/security/cacerts"


def _home_of(executable: str) -> str | None:
    """The home of a `java` executable, through its symlinks (/usr/bin/java -> /usr/lib/jvm/X/bin/java)."""
    real = os.path.realpath(executable)
    parent = os.path.dirname(real)
    return os.path.dirname(parent) if os.path.basename(parent) == "bin" else None


def _java_at_home(home: str, found_by: str, via: str = "") -> Runtime:
    cacerts, error = java_cacerts(home)
    watches: list[Watch] = [("file", os.path.join(home, "lib", "security", "cacerts"))]
    watches.append(("file", os.path.join(home, "jre", "lib", "security", "cacerts")))
    rules = _java_rules(home)
    watches += [("file", p) for p in java_security_files(home)]
    _record_rules(cacerts, rules)
    if via:
        watches.append(("file", os.path.realpath(via)))
    detail = error or f"cacerts {cacerts}"
    assert rules.java is not None
    detail += f"; jdk.certpath.disabledAlgorithms from {rules.java.source}"
    return Runtime(
        "java",
        via or home,
        found_by,
        detail if not via else f"home {home}; {detail}",
        store_path=cacerts,
        store_error=error,
        store_label=home,
        identity=f"store:{os.path.realpath(cacerts)}",
        watches=tuple(watches),
    )


def _named_java(path: str) -> Runtime:
    found_by = f"--runtime java={path}"
    p = Path(path)
    if p.is_dir():
        return _java_at_home(str(p), found_by)
    if _is_executable_file(p):
        home = _home_of(str(p))
        if home is None:
            return Runtime("java", str(p), found_by, f"{p} is not in a JRE's bin directory", identity=f"path:{p}")
        return _java_at_home(home, found_by, via=str(p))
    if p.is_file():  # a keystore named directly
        return Runtime(
            "java",
            str(p),
            found_by,
            f"keystore {p}",
            store_path=str(p),
            store_label=str(p),
            identity=f"store:{os.path.realpath(p)}",
            watches=(("file", str(p)),),
        )
    return Runtime(
        "java", str(p), found_by, f"{p} does not exist", identity=f"missing:{p}", watches=(("file", str(p)),)
    )


def _on_path(command: str, environ: Mapping[str, str]) -> str | None:
    search = environ.get("PATH", "")
    return shutil.which(command, path=search) if search else None


def _javas(environ: Mapping[str, str], options: RuntimeOptions) -> list[Runtime]:
    out: list[Runtime] = []
    java_home = environ.get("JAVA_HOME", "")
    if java_home:
        out.append(_declared(_java_at_home(java_home, "JAVA_HOME in the agent's environment")))
    out += [_declared(_named_java(path)) for kind, path in options.named if kind == "java"]
    if options.search:
        java = _on_path("java", environ)
        if java is not None:
            home = _home_of(java)
            if home is not None:
                out.append(_java_at_home(home, "`java` on PATH", via=java))
    return _merge(out)


# --- Node -----------------------------------------------------------------------------------------


def _node(location: str, found_by: str, environ: Mapping[str, str]) -> Runtime:
    """A node executable, asked for its bundled roots (node_roots); its store is built by stores.py."""
    real = os.path.realpath(location)
    identity = f"path:{real}"
    watches: tuple[Watch, ...] = (("file", real),)
    answer = ask_node(location, environ=environ)
    if answer.failed:
        return Runtime(
            "node", location, found_by, f"{answer.failed}; its roots are not judged", identity=identity, watches=watches
        )
    trust = node_trust(answer, environ)
    level = node_level(answer, environ)
    _record_rules(location, _node_rules(level))
    if level.config:
        watches += (("file", level.config),)
    if trust.error:
        detail = f"node {answer.version}; {trust.error}"
        return Runtime("node", location, found_by, detail, store_error=trust.error, identity=identity, watches=watches)
    used = node_sources(answer, trust, environ)
    what = " + ".join(f"{s.label} ({len(answer.roots)})" if s.kind == "bundled" else s.label for s in used)
    for source in used:  # the files and directories it reads at start: a change there changes its store
        if source.kind == "file":
            watches += (("file", source.path),)
        elif source.kind == "dirs":
            watches += tuple(("dir", d) for d in source.path.split(os.pathsep) if d)
    if trust.why:
        what += f" ({trust.why}{'' if trust.bundled else ', not its bundled roots'})"
    return Runtime(
        "node",
        location,
        found_by,
        f"node {answer.version}; trusts {what}; verifies at {level.describe()}",
        store_path=location,
        store_label=location,
        identity=identity,
        watches=watches,
    )


def _named_node(path: str, environ: Mapping[str, str]) -> Runtime:
    found_by = f"--runtime node={path}"
    p = Path(path)
    if p.is_dir():
        exe = next((c for c in (p / "bin" / "node", p / "node") if _is_executable_file(c)), None)
        if exe is not None:
            return _node(str(exe), found_by, environ)
    elif _is_executable_file(p):
        return _node(str(p), found_by, environ)
    why = "does not exist" if not p.exists() else "is not a node executable or a directory with bin/node"
    return Runtime("node", str(p), found_by, f"{p} {why}", identity=f"missing:{p}", watches=(("file", str(p)),))


def _nodes(environ: Mapping[str, str], options: RuntimeOptions) -> list[Runtime]:
    out = [_declared(_named_node(path, environ)) for kind, path in options.named if kind == "node"]
    if options.search:
        node = _on_path("node", environ)
        if node is not None:
            out.append(_node(node, "`node` on PATH", environ))
    return _merge(out)


# --- how each runtime's own client verifies ---------------------------------------------------------
#
# The store verdict is X509_verify_cert with the store's certificates; these are the parameters that make it
# the runtime's own verdict rather than `openssl verify`'s at the host's level. Recorded at discovery, where
# the environment and the runtime's configuration are read, and looked up by the store's kind and path.


@dataclass(frozen=True)
class JavaConstraint:
    """One entry of a jdk.*.disabledAlgorithms property: the algorithm (or curve) and what restricts it."""

    algorithm: str  # as written: "MD5", "SHA1", "MD5withRSA", "RSA", "secp192r1"
    key_size: tuple[str, int] | None = None  # ("<", 1024): keys for which this holds are refused
    jdk_ca: bool = False  # only for chains anchored at a root the JDK ships (its own cacerts)
    usage: frozenset[str] = frozenset()  # only for these uses (TLSServer, SignedJAR, ...)
    deny_after: int | None = None  # only after this Unix time
    text: str = ""


@dataclass(frozen=True)
class JavaRules:
    """A JRE's algorithm constraints on certification paths (PKIX, as its TLS client runs it)."""

    certpath: tuple[JavaConstraint, ...]  # jdk.certpath.disabledAlgorithms
    tls: tuple[JavaConstraint, ...]  # jdk.tls.disabledAlgorithms (JSSE checks the chain against both)
    source: str  # the java.security read, or which defaults
    jdk_ca_anchors: bool = False  # the store is the JRE's own cacerts, so its roots are jdkCA
    # The EC curves its SunEC verifies with; None: any. Java 16 dropped all but these three.
    curves: frozenset[str] | None = frozenset({"secp256r1", "secp384r1", "secp521r1"})


@dataclass(frozen=True)
class VerifyRules:
    """How a store's runtime verifies a server beyond the store's content (hashable: part of cache keys)."""

    runtime: str = ""  # "", "node", "java"
    security_level: int | None = None  # OpenSSL's auth level; None: the host's default
    level_source: str = ""  # what set `security_level`, for people
    partial_chain: bool = False  # any store certificate is a trust anchor (Java's PKIX)
    java: JavaRules | None = None


HOST_RULES = VerifyRules()
_JAVA_TIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_KEY_SIZE = re.compile(r"^keySize\s*(<=|>=|==|!=|<|>)\s*(\d+)$")
# Java 17's own values (conf/security/java.security), for a JRE without that file and a keystore named alone.
JAVA17_CERTPATH = (
    "MD2, MD5, SHA1 jdkCA & usage TLSServer, RSA keySize < 1024, DSA keySize < 1024, EC keySize < 224, "
    "SHA1 usage SignedJAR & denyAfter 2019-01-01"
)
JAVA17_TLS = (
    "SSLv3, TLSv1, TLSv1.1, DTLSv1.0, RC4, DES, MD5withRSA, DH keySize < 1024, EC keySize < 224, 3DES_EDE_CBC, "
    "anon, NULL, ECDH"
)

_rules: dict[tuple[str, str], VerifyRules] = {}
_rules_lock = threading.Lock()


def _record_rules(path: str, rules: VerifyRules) -> None:
    with _rules_lock:
        _rules[(rules.runtime, path)] = rules


def verification_rules(kind: str, path: str) -> VerifyRules:
    """The rules of the store of `kind` ("node", "java-keystore", ...) at `path`, as the last discovery found
    them. A Java keystore discovery did not meet is judged by Java 17's defaults; anything else as OpenSSL."""
    if kind == "node":
        with _rules_lock:
            return _rules.get(("node", path), HOST_RULES)
    if kind == "java-keystore":
        with _rules_lock:
            found = _rules.get(("java", path))
        return found or _keystore_rules()
    return HOST_RULES


def _node_rules(level: NodeLevel) -> VerifyRules:
    if level.level is None:
        return VerifyRules("node", None, f"node's own level unknown ({level.failed}): the host's")
    return VerifyRules("node", level.level, f"node's {level.describe()}")


def java_security_files(home: str) -> tuple[str, ...]:
    """Where a JRE home keeps java.security: conf/security (9+), lib/security or jre/lib/security (8)."""
    return tuple(
        os.path.join(home, *parts, "java.security")
        for parts in (("conf", "security"), ("lib", "security"), ("jre", "lib", "security"))
    )


def read_java_properties(text: str) -> dict[str, str]:
    """java.util.Properties' reading of `text`, as far as java.security uses it: comments, `=` or `:`,
    backslash continuations."""
    props: dict[str, str] = {}
    logical: list[str] = []
    for raw in text.splitlines():
        line = raw.lstrip() if not logical else raw.strip()
        if not logical and (not line or line[0] in "#!"):
            continue
        ends = len(line) - len(line.rstrip("\\"))
        if ends % 2:
            logical.append(line[:-1])
            continue
        logical.append(line)
        whole, logical = "".join(logical), []
        found = re.match(r"^([^=:\s]+)\s*[=:]?\s*(.*)$", whole)
        if found:
            props[found.group(1)] = found.group(2).strip()
    return props


def parse_disabled_algorithms(value: str, props: Mapping[str, str] | None = None) -> tuple[JavaConstraint, ...]:
    """The entries of a disabledAlgorithms value, with `include PROPERTY` expanded from `props`."""
    out: list[JavaConstraint] = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        if entry.startswith("include "):
            included = (props or {}).get(entry.split(None, 1)[1].strip(), "")
            out += parse_disabled_algorithms(included, None)
            continue
        algorithm, _, rest = entry.partition(" ")
        key_size, jdk_ca, usage, deny_after = None, False, frozenset[str](), None
        for part in (p.strip() for p in rest.split("&") if p.strip()):
            size = _KEY_SIZE.match(part)
            if size:
                key_size = (size.group(1), int(size.group(2)))
            elif part == "jdkCA":
                jdk_ca = True
            elif part.startswith("usage "):
                usage = frozenset(part.split()[1:])
            elif part.startswith("denyAfter "):
                when = _JAVA_TIME.match(part.split(None, 1)[1].strip())
                if when:
                    y, m, d = (int(g) for g in when.groups())
                    deny_after = calendar.timegm((y, m, d, 0, 0, 0))
        out.append(JavaConstraint(algorithm, key_size, jdk_ca, usage, deny_after, entry))
    return tuple(out)


@lru_cache(maxsize=1)
def _default_java_rules() -> JavaRules:
    return JavaRules(
        parse_disabled_algorithms(JAVA17_CERTPATH),
        parse_disabled_algorithms(JAVA17_TLS),
        "Java 17's defaults (no JRE known for this keystore)",
    )


def java_feature_version(home: str) -> int | None:
    """The feature release (8, 11, 17, ...) a JRE home's `release` file names; None when it names none."""
    try:
        with open(os.path.join(home, "release"), encoding="utf-8", errors="replace") as f:
            text = f.read(64 * 1024)
    except OSError:
        return None
    found = re.search(r'^JAVA_VERSION="(?:1\.)?(\d+)', text, re.MULTILINE)
    return int(found.group(1)) if found else None


def _java_rules(home: str) -> VerifyRules:
    """Java's PKIX for the cacerts of `home`: partial chains, no security level, its java.security's
    constraints (Java 17's defaults when it has none), its own roots as the JDK's (jdkCA), and the curves its
    version verifies with (all before Java 16)."""
    version = java_feature_version(home)
    curves = _default_java_rules().curves if version is None or version >= 16 else None
    for path in java_security_files(home):
        try:
            with open(path, encoding="latin-1") as f:
                props = read_java_properties(f.read())
        except OSError:
            continue
        java = JavaRules(
            parse_disabled_algorithms(props.get("jdk.certpath.disabledAlgorithms", ""), props),
            parse_disabled_algorithms(props.get("jdk.tls.disabledAlgorithms", ""), props),
            path,
            jdk_ca_anchors=True,
            curves=curves,
        )
        break
    else:
        defaults = f"Java 17's defaults ({home} has no java.security)"
        java = replace(_default_java_rules(), source=defaults, jdk_ca_anchors=True, curves=curves)
    return VerifyRules("java", 0, "Java has no security level", partial_chain=True, java=java)


@lru_cache(maxsize=1)
def _keystore_rules() -> VerifyRules:
    return VerifyRules("java", 0, "Java has no security level", partial_chain=True, java=_default_java_rules())


_OPS = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}
_HASH_NAMES = {"sha1": "SHA1", "md5": "MD5", "md2": "MD2", "sha224": "SHA224", "sha256": "SHA256"}
_HASH_NAMES |= {"sha384": "SHA384", "sha512": "SHA512"}
# Java's names of the curves OpenSSL and cryptography name otherwise.
_CURVES = {"secp192r1": ("secp192r1", "NIST P-192", "X9.62 prime192v1"), "secp256r1": ("secp256r1", "NIST P-256")}


def _key_facts(cert: Any) -> tuple[str, int | None, tuple[str, ...]]:
    """(Java's key algorithm name, key size in bits, curve names) of a certificate's public key."""
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size, ()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC", key.curve.key_size, _CURVES.get(key.curve.name, (key.curve.name,))
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size, ()
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 255, ()
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 448, ()
    return type(key).__name__, None, ()


def _signature_names(cert: Any) -> tuple[str, set[str]]:
    """(Java's name of a certificate's signature algorithm, the names a constraint may match in it)."""
    from cryptography.x509.oid import SignatureAlgorithmOID

    oid = cert.signature_algorithm_oid
    try:
        digest = cert.signature_hash_algorithm
    except Exception:  # UnsupportedAlgorithm: a digest cryptography does not know
        digest = None
    hash_name = _HASH_NAMES.get(digest.name, digest.name.upper()) if digest is not None else ""
    if oid == SignatureAlgorithmOID.RSASSA_PSS:
        return "RSASSA-PSS", {"RSASSA-PSS", "RSA", hash_name}
    if oid in (SignatureAlgorithmOID.ED25519, SignatureAlgorithmOID.ED448):
        name = "Ed25519" if oid == SignatureAlgorithmOID.ED25519 else "Ed448"
        return name, {name, "EdDSA"}
    name = getattr(oid, "_name", "").lower()
    key = "ECDSA" if "ecdsa" in name else "DSA" if "dsa" in name else "RSA"
    full = f"{hash_name}with{key}" if hash_name else name
    parts = {full, hash_name, key}
    if hash_name.startswith("SHA"):
        parts.add(f"SHA-{hash_name[3:]}")
    return full, parts


def _applies(c: JavaConstraint, java: JavaRules, at: int) -> bool:
    if c.jdk_ca and not java.jdk_ca_anchors:
        return False
    if c.usage and "TLSServer" not in c.usage:
        return False
    return c.deny_after is None or at >= c.deny_after


def java_refusal(path: Sequence[Any], java: JavaRules, at: int) -> tuple[int, int, str] | None:
    """Where Java's algorithm constraints refuse a path OpenSSL built (leaf first, the trust anchor last):
    (OpenSSL's code for the like refusal: 68 digest, 66 leaf key, 67 CA key; the depth; why), or None.

    As Java's PKIX: from the anchor down, every certificate's key (the anchor's too) and every signature but
    the anchor's own; an entry's jdkCA, usage and denyAfter must all hold for it to count."""
    constraints = [(c, "jdk.certpath.disabledAlgorithms") for c in java.certpath]
    constraints += [(c, "jdk.tls.disabledAlgorithms") for c in java.tls]
    for depth in range(len(path) - 1, -1, -1):
        cert = path[depth]
        algorithm, size, curves = _key_facts(cert)
        for c, prop in constraints:
            if not _applies(c, java, at):
                continue
            named = c.algorithm.lower()
            if c.key_size is not None:
                if named == algorithm.lower() and size is not None and _OPS[c.key_size[0]](size, c.key_size[1]):
                    what = f"{algorithm} {size}-bit key ({prop} in {java.source}: {c.text})"
                    return (66 if depth == 0 else 67), depth, what
            elif named == algorithm.lower() or named in (n.lower() for n in curves):
                what = f"{algorithm} key{' on ' + curves[0] if curves else ''} ({prop} in {java.source}: {c.text})"
                return (66 if depth == 0 else 67), depth, what
        if algorithm == "EC" and java.curves is not None and curves and curves[0] not in java.curves:
            return (66 if depth == 0 else 67), depth, f"EC key on {curves[0]}, a curve Java's SunEC does not support"
        signature, parts = _signature_names(cert)
        lowered = {p.lower() for p in parts if p}
        if depth == len(path) - 1:
            # The anchor's own signature is not verified. But a leaf the keystore holds is still sent by the
            # server, which in TLS 1.3 cannot present a certificate signed with what the client leaves out of its
            # signature_algorithms_cert: Java leaves out what jdk.tls.disabledAlgorithms disables.
            if depth == 0:
                for c in java.tls:
                    if c.key_size is None and c.algorithm.lower() in lowered and _applies(c, java, at):
                        why = f"jdk.tls.disabledAlgorithms in {java.source}: {c.text}"
                        return 68, depth, f"signature {signature}, which its TLS client does not offer ({why})"
            continue
        for c, prop in constraints:
            if c.key_size is None and c.algorithm.lower() in lowered and _applies(c, java, at):
                return 68, depth, f"signature {signature} ({prop} in {java.source}: {c.text})"
    return None


# --- all ------------------------------------------------------------------------------------------


def find_runtimes(environ: Mapping[str, str], options: RuntimeOptions | None = None) -> tuple[Runtime, ...]:
    """Every runtime that counts on this host, Python first, then Java, then Node; blocking (it may run
    interpreters, each at most INTERPRETER_TIMEOUT_S, once until they change)."""
    options = options or RuntimeOptions()
    return (*_pythons(environ, options), *_javas(environ, options), *_nodes(environ, options))


def search_watches(environ: Mapping[str, str], options: RuntimeOptions) -> tuple[Watch, ...]:
    """Directories whose change may bring a runtime that searching would find (a new interpreter, a JRE)."""
    if not options.search:
        return ()
    dirs = list(options.python_dirs)
    dirs += [d for d in environ.get("PATH", "").split(os.pathsep) if d and d not in dirs]
    return tuple(("mtime", d) for d in dirs if os.path.isabs(d))
