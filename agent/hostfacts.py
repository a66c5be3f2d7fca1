"""Facts about the host that explain why its TLS view differs: versions, proxies, resolver, clock sync.

Gathering reads a few small files and asks the kernel once; `HostFactsCache` keeps the result for a
while, so answering every probe with facts stays cheap. Gathering blocks (at most about a second, when
it falls back to `timedatectl`): async callers run it in a worker thread.
"""

from __future__ import annotations

import ctypes
import dataclasses
import platform
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from .model import HostFacts
from .probe.openssl_policy import host_policy
from .trust.runtimes import find_runtimes

__all__ = [
    "MAX_HOSTS_LINES",
    "PROXY_VARIABLES",
    "HostFactsCache",
    "filter_hosts_entries",
    "gather_host_facts",
    "ntp_state",
    "redact_proxy",
]

PROXY_VARIABLES: tuple[str, ...] = tuple(
    name for base in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY") for name in (base, base.lower())
)
MAX_HOSTS_LINES = 200
MAX_RESOLV_LINES = 100
_MAX_FILE_BYTES = 1024 * 1024
_RESOLV_KEYS = ("nameserver", "search", "domain", "options")
_STA_UNSYNC = 0x0040
_TIME_ERROR = 5
_TIMEDATECTL_TIMEOUT = 1.0

_USERINFO = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*://)?[^:/@\s]+):[^@/\s]*@")


def redact_proxy(value: str) -> str:
    """A proxy URL without its password: facts leave the host, credentials must not."""
    return _USERINFO.sub(r"\1:***@", value.strip())


def _read_lines(path: Path) -> tuple[list[str], str]:
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_FILE_BYTES)
    except OSError as exc:
        return [], f"cannot read {path}: {exc.strerror or exc}"
    return data.decode("utf-8", "replace").splitlines(), ""


def _resolv_lines(path: Path) -> tuple[str, ...]:
    lines, _ = _read_lines(path)
    out = [
        " ".join(line.split())
        for line in lines
        if line.split() and line.split()[0] in _RESOLV_KEYS and not line.lstrip().startswith(("#", ";"))
    ]
    return tuple(out[:MAX_RESOLV_LINES])


def _hosts_lines(path: Path) -> tuple[str, ...]:
    """Non-comment /etc/hosts lines, whitespace collapsed and trailing comments dropped."""
    lines, _ = _read_lines(path)
    out: list[str] = []
    for line in lines:
        entry = " ".join(line.split("#", 1)[0].split())
        if entry:
            out.append(entry)
    return tuple(out)


def filter_hosts_entries(lines: tuple[str, ...], target_host: str | None) -> tuple[str, ...]:
    """The lines naming `target_host` (as a name or as the address), or all of them; at most 200."""
    if target_host:
        target = target_host.strip().strip("[]").rstrip(".").lower()
        lines = tuple(line for line in lines if target in (t.rstrip(".").lower() for t in line.split()))
    return lines[:MAX_HOSTS_LINES]


class _Timex(ctypes.Structure):
    # The leading fields of Linux `struct timex`; the tail is reserved space the kernel may write.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 512),
    ]


def _adjtimex() -> tuple[bool | None, str]:
    """The kernel's own sync flag (what timedatectl reports as NTPSynchronized), read without privilege."""
    if not sys.platform.startswith("linux"):
        return None, f"kernel clock state not readable on {sys.platform}"
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        timex = _Timex()  # modes 0: read only
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError) as exc:
        return None, f"adjtimex unavailable: {exc}"
    if state < 0:
        return None, f"adjtimex failed: errno {ctypes.get_errno()}"
    synced = not (timex.status & _STA_UNSYNC) and state != _TIME_ERROR
    return synced, (
        f"kernel clock {'synchronized' if synced else 'not synchronized'} "
        f"(adjtimex state {state}, status 0x{timex.status:x}, max error {timex.maxerror} us)"
    )


def _timedatectl() -> tuple[bool | None, str]:
    exe = shutil.which("timedatectl")
    if exe is None:
        return None, "timedatectl not installed"
    try:
        done = subprocess.run(
            [exe, "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=_TIMEDATECTL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, f"timedatectl did not answer within {_TIMEDATECTL_TIMEOUT:g} s"
    except OSError as exc:
        return None, f"timedatectl failed to start: {exc}"
    value = done.stdout.strip()
    if done.returncode == 0 and value in ("yes", "no"):
        return value == "yes", f"timedatectl NTPSynchronized={value}"
    why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[0]
    return None, f"timedatectl: {why}"


def ntp_state() -> tuple[bool | None, str]:
    """Whether the clock is NTP-synchronized, and how that was learned; None when unknowable here."""
    synced, detail = _adjtimex()
    if synced is not None:
        return synced, detail
    fallback, fallback_detail = _timedatectl()
    if fallback is not None:
        return fallback, fallback_detail
    return None, f"{detail}; {fallback_detail}"


def _os_description() -> str:
    kernel = f"{platform.system()} {platform.release()} {platform.machine()}".strip()
    try:
        pretty = platform.freedesktop_os_release().get("PRETTY_NAME", "")
    except OSError:
        pretty = ""
    if not pretty and sys.platform == "darwin":
        pretty = f"macOS {platform.mac_ver()[0]}"
    return f"{pretty} ({kernel})" if pretty else kernel


def gather_host_facts(
    agent_version: str,
    environ: Mapping[str, str],
    target_host: str | None = None,
    *,
    resolv_conf: Path = Path("/etc/resolv.conf"),
    hosts_file: Path = Path("/etc/hosts"),
    ntp: Callable[[], tuple[bool | None, str]] = ntp_state,
) -> HostFacts:
    """Gather the facts now. `environ` is the environment the host's clients run with."""
    facts, hosts = _gather(agent_version, environ, resolv_conf, hosts_file, ntp)
    return dataclasses.replace(facts, hosts_entries=filter_hosts_entries(hosts, target_host))


def _gather(
    agent_version: str,
    environ: Mapping[str, str],
    resolv_conf: Path,
    hosts_file: Path,
    ntp: Callable[[], tuple[bool | None, str]],
) -> tuple[HostFacts, tuple[str, ...]]:
    """The facts without /etc/hosts entries, and all the /etc/hosts lines for per-target filtering."""
    synced, ntp_detail = ntp()
    facts = HostFacts(
        hostname=socket.gethostname(),
        os=_os_description(),
        python_version=f"{platform.python_implementation()} {platform.python_version()}",
        openssl_version=ssl.OPENSSL_VERSION,
        agent_version=agent_version,
        proxy_env=tuple((n, redact_proxy(environ[n])) for n in PROXY_VARIABLES if environ.get(n)),
        resolv_conf=_resolv_lines(resolv_conf),
        ntp_synchronized=synced,
        ntp_detail=ntp_detail,
        gathered_ns=time.time_ns(),
        openssl_policy=host_policy().facts(),  # read once per process, as OpenSSL reads its configuration
    )
    return facts, _hosts_lines(hosts_file)


class HostFactsCache:
    """Host facts re-gathered at most every `max_age` seconds; /etc/hosts is filtered per target.

    `runtimes` gives HostFacts.runtimes on every call (an agent passes its probe engine's, which follow
    --runtime and store refreshes); without it, the runtimes a default search finds are gathered with
    the rest.
    """

    def __init__(
        self,
        agent_version: str,
        environ: Mapping[str, str],
        *,
        max_age: float = 60.0,
        resolv_conf: Path = Path("/etc/resolv.conf"),
        hosts_file: Path = Path("/etc/hosts"),
        ntp: Callable[[], tuple[bool | None, str]] = ntp_state,
        clock: Callable[[], float] = time.monotonic,
        runtimes: Callable[[], tuple[tuple[str, str], ...]] | None = None,
        client_certs: tuple[str, ...] = (),
    ) -> None:
        if max_age < 0:
            raise ValueError(f"max_age must be >= 0 seconds, got {max_age}")
        self._args = (agent_version, dict(environ))
        self._paths = (resolv_conf, hosts_file)
        self._ntp = ntp
        self._clock = clock
        self._runtimes = runtimes
        self._client_certs = tuple(client_certs)
        self._max_age = max_age
        self._lock = threading.Lock()
        self._facts: HostFacts | None = None
        self._hosts: tuple[str, ...] = ()
        self._at = 0.0

    def get(self, target_host: str | None = None) -> HostFacts:
        """Cached facts, with /etc/hosts entries for `target_host` (all of them, capped, when None)."""
        with self._lock:
            now = self._clock()
            if self._facts is None or now - self._at >= self._max_age:
                version, environ = self._args
                resolv, hosts = self._paths
                self._facts, self._hosts = _gather(version, environ, resolv, hosts, self._ntp)
                if self._runtimes is None:
                    found = tuple(r.fact() for r in find_runtimes(environ))
                    self._facts = dataclasses.replace(self._facts, runtimes=found)
                self._at = now
            base = self._facts
            all_hosts = self._hosts
        runtimes = self._runtimes() if self._runtimes is not None else base.runtimes
        return dataclasses.replace(
            base,
            hosts_entries=filter_hosts_entries(all_hosts, target_host),
            runtimes=runtimes,
            client_certs=self._client_certs,
        )
