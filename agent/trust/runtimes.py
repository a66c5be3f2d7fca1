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

`RuntimeOptions.search` False finds nothing by itself: only named runtimes (and JAVA_HOME, which names
one) count. A runtime found without a store (a Python without certifi, Node without the variable) is
still listed: it is a fact about the host.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import store_cache
from .node_roots import ask_node, forget_node_answers, node_trust
from .node_roots import sources as node_sources

__all__ = [
    "INTERPRETER_TIMEOUT_S",
    "PYTHON_SEARCH_DIRS",
    "RUNTIME_KINDS",
    "Runtime",
    "RuntimeOptions",
    "Watch",
    "find_runtimes",
    "forget_answers",
    "java_cacerts",
    "search_watches",
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
    prefix: str = ""
    version: str = ""
    site: tuple[str, ...] = ()
    where: str = ""  # certifi.where(); "" when certifi is not installed
    package: str = ""  # the directory that holds the certifi package
    error: str = ""  # certifi is installed but unusable
    failed: str = ""  # the interpreter gave no answer


@dataclass(frozen=True)
class _Cached:
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
    if via:
        watches.append(("file", os.path.realpath(via)))
    detail = error or f"cacerts {cacerts}"
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
    answer = ask_node(location)
    if answer.failed:
        return Runtime(
            "node", location, found_by, f"{answer.failed}; its roots are not judged", identity=identity, watches=watches
        )
    trust = node_trust(answer, environ)
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
        f"node {answer.version}; trusts {what}",
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
