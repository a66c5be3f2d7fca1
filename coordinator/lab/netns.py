"""Separate hosts on one machine: network namespaces joined to the root namespace by veth pairs (root
only), and private views of single files (mount namespaces) for host facts such as Java's cacerts.

Each namespace gets a /30 of 10.250.0.0/16: the root side of its veth pair holds the first address
(targets the namespace reaches), the namespace side the second (where its agent listens for the
coordinator). Its loopback is its own, so 127.0.0.0/8 inside is a different place from outside. It gets
its own `/etc/netns/<name>/hosts` and `resolv.conf`, which `ip netns exec` mounts over /etc inside:
split-horizon DNS without a DNS server.

Names carry the creating process's PID (`tlsfleet-lab-<pid>-<n>`, veths `tf<pid>x<n>r`/`...n`), so a
sweep removes what a crashed run left behind and never touches what a live run is using.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import TracebackType

__all__ = [
    "NS_PREFIX",
    "Namespace",
    "NetnsError",
    "NetnsLab",
    "available",
    "hosts_text",
    "list_lab_links",
    "list_lab_namespaces",
    "mount_view_available",
    "mount_view_prefix",
    "sweep_stale",
]

NS_PREFIX = "tlsfleet-lab-"
VETH_PREFIX = "tf"
NETNS_ETC = Path("/etc/netns")
LOCK_PATH = Path("/run/tlsfleet-lab-netns.lock")
POOL = ipaddress.IPv4Network("10.250.0.0/16")
IP_TIMEOUT_S = 10.0
MAX_NAMESPACES = 64  # per process: the veth names leave room for two digits
_NS_NAME = re.compile(rf"^{re.escape(NS_PREFIX)}(?P<pid>\d+)-(?P<index>\d+)$")
_VETH_NAME = re.compile(rf"^{VETH_PREFIX}(?P<pid>\d+)x(?P<index>\d+)[rn]$")
# Unknown names fail at once inside a namespace: nothing answers DNS on its own loopback.
_RESOLV_CONF = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"


class NetnsError(RuntimeError):
    """A namespace could not be made, used or removed; the message carries what `ip` said."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise NetnsError("the `ip` command (iproute2) is not installed") from None
    except subprocess.TimeoutExpired:
        raise NetnsError(f"`ip {' '.join(args)}` did not finish within {IP_TIMEOUT_S:g} s") from None
    if check and done.returncode != 0:
        raise NetnsError(f"`ip {' '.join(args)}` failed: {done.stderr.strip() or done.stdout.strip()}")
    return done


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_lab_namespaces() -> list[str]:
    """Every namespace whose name has this module's prefix, from any run."""
    done = _ip("netns", "list", check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.startswith(NS_PREFIX)]


def list_lab_links() -> list[str]:
    """Every link in the root namespace whose name looks like one of this module's veths."""
    done = _ip("-o", "link", "show", check=False)
    names = []
    for line in done.stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            name = parts[1].strip().split("@", 1)[0]
            if _VETH_NAME.match(name):
                names.append(name)
    return names


def _namespace_pids(name: str) -> list[int]:
    done = _ip("netns", "pids", name, check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def _remove_namespace(name: str) -> None:
    # Anything still running inside was started in this namespace by the lab; it cannot outlive it.
    for pid in _namespace_pids(name):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _ip("netns", "del", name, check=False)
    shutil.rmtree(NETNS_ETC / name, ignore_errors=True)


def sweep_stale() -> list[str]:
    """Remove namespaces, veths and /etc/netns folders left by runs that are no longer alive."""
    removed: list[str] = []
    for name in list_lab_namespaces():
        match = _NS_NAME.match(name)
        if match and not _pid_alive(int(match["pid"])):
            _remove_namespace(name)
            removed.append(name)
    for link in list_lab_links():
        match = _VETH_NAME.match(link)
        if match and not _pid_alive(int(match["pid"])):
            _ip("link", "del", link, check=False)
            removed.append(link)
    if NETNS_ETC.is_dir():
        for entry in NETNS_ETC.iterdir():
            match = _NS_NAME.match(entry.name)
            if match and not _pid_alive(int(match["pid"])):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(str(entry))
    return removed


@cache
def available() -> str | None:
    """None when this process can make namespaces with veths; otherwise why not (a skip reason)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return f"network namespaces need root (running as uid {os.getuid() if hasattr(os, 'getuid') else '?'})"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    try:
        with NetnsLab() as lab:
            lab.create()
    except (NetnsError, OSError) as error:
        return f"cannot create a network namespace with a veth pair: {error}"
    return None


_MOUNT_SCRIPT = 'while [ "$1" != "--" ]; do mount --bind "$1" "$2" || exit 125; shift 2; done; shift; exec "$@"'


def mount_view_prefix(binds: Sequence[tuple[Path, str]]) -> list[str]:
    """Prefix a command so that it sees each `source` file in place of `target`, and nothing else changes.

    The command runs in a private mount namespace (a user namespace too when not root), so the host's own
    files stay as they are; `unshare` and the shell exec in place, so the command keeps the prefix's PID.
    """
    flat: list[str] = []
    for source, target in binds:
        flat += [str(source), str(target)]
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return [
        "unshare",
        *user,
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        _MOUNT_SCRIPT,
        "lab",
        *flat,
        "--",
    ]


@cache
def mount_view_available() -> str | None:
    """None when `mount_view_prefix` works here; otherwise why not."""
    if shutil.which("unshare") is None:
        return "the `unshare` command (util-linux) is not installed"
    probe = Path("/etc/hostname") if Path("/etc/hostname").is_file() else Path("/etc/passwd")
    try:
        done = subprocess.run(
            [*mount_view_prefix([(probe, str(probe))]), "true"],
            capture_output=True,
            text=True,
            timeout=IP_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"cannot run unshare: {error}"
    if done.returncode != 0:
        how = "mount namespaces" if os.geteuid() == 0 else "unprivileged user and mount namespaces"
        return f"{how} are not permitted here: {done.stderr.strip() or f'exit {done.returncode}'}"
    return None


def hosts_text(entries: Mapping[str, Sequence[str]]) -> str:
    """An /etc/hosts file: loopback lines, then one line per (address, name); several addresses per name allowed."""
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    for name, addresses in entries.items():
        for address in addresses:
            lines.append(f"{ipaddress.ip_address(address)} {name}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Namespace:
    """One namespace: its name, its veth pair and the two addresses on it."""

    name: str
    root_link: str
    link: str
    root_address: str  # in the root namespace; what processes inside reach the outside by
    address: str  # inside; what the root namespace reaches processes inside by

    @property
    def etc_dir(self) -> Path:
        return NETNS_ETC / self.name

    @property
    def exec_prefix(self) -> list[str]:
        """Prefix a command with this to run it inside (same PID: `ip netns exec` execs in place)."""
        return ["ip", "netns", "exec", self.name]

    def write_hosts(self, entries: Mapping[str, Sequence[str]]) -> Path:
        """Replace the /etc/hosts that processes started inside from now on see."""
        path = self.etc_dir / "hosts"
        path.write_text(hosts_text(entries))
        return path

    def run(self, *command: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        """Run a short command inside and wait for it."""
        return subprocess.run(
            [*self.exec_prefix, *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def pids(self) -> list[int]:
        """Processes running inside right now."""
        return _namespace_pids(self.name)


@dataclass
class NetnsLab:
    """Creates namespaces on demand and removes every one of them on close, also after failures."""

    namespaces: list[Namespace] = field(default_factory=list)
    _next: int = 0

    def __enter__(self) -> NetnsLab:
        sweep_stale()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def create(self, hosts: Mapping[str, Sequence[str]] | None = None) -> Namespace:
        """A new namespace with its veth pair up, loopback up, and its own hosts and resolv.conf."""
        if self._next >= MAX_NAMESPACES:
            raise NetnsError(f"at most {MAX_NAMESPACES} namespaces per lab")
        index = self._next
        self._next += 1
        pid = os.getpid()
        name = f"{NS_PREFIX}{pid}-{index}"
        root_link, link = f"{VETH_PREFIX}{pid}x{index}r", f"{VETH_PREFIX}{pid}x{index}n"
        with _allocation_lock():
            subnet = _free_subnet()
            root_address, address = (str(h) for h in subnet.hosts())
            namespace = Namespace(name, root_link, link, root_address, address)
            # Recorded before the first command, so close() removes whatever part of it came to exist.
            self.namespaces.append(namespace)
            try:
                _ip("netns", "add", name)
                _ip("link", "add", root_link, "type", "veth", "peer", "name", link)
                _ip("link", "set", link, "netns", name)
                _ip("addr", "add", f"{root_address}/{subnet.prefixlen}", "dev", root_link)
                _ip("link", "set", root_link, "up")
                _ip("-n", name, "addr", "add", f"{address}/{subnet.prefixlen}", "dev", link)
                _ip("-n", name, "link", "set", link, "up")
                _ip("-n", name, "link", "set", "lo", "up")
            except NetnsError:
                self._remove(namespace)
                self.namespaces.remove(namespace)
                raise
        namespace.etc_dir.mkdir(parents=True, exist_ok=True)
        namespace.write_hosts(hosts or {})
        (namespace.etc_dir / "resolv.conf").write_text(_RESOLV_CONF)
        return namespace

    def close(self) -> None:
        """Remove every namespace made here, its veths and its /etc/netns folder."""
        errors = []
        for namespace in reversed(self.namespaces):
            try:
                self._remove(namespace)
            except NetnsError as error:
                errors.append(str(error))
        self.namespaces.clear()
        if errors:
            raise NetnsError("; ".join(errors))

    @staticmethod
    def _remove(namespace: Namespace) -> None:
        _remove_namespace(namespace.name)
        # Deleting the namespace destroys its end of the pair and with it the root end; a pair that
        # never moved into the namespace is still whole in the root namespace.
        deadline = time.monotonic() + IP_TIMEOUT_S
        while namespace.root_link in list_lab_links():
            _ip("link", "del", namespace.root_link, check=False)
            if time.monotonic() > deadline:
                raise NetnsError(f"veth {namespace.root_link} of {namespace.name} could not be removed")
            time.sleep(0.05)


@contextlib.contextmanager
def _allocation_lock() -> Iterator[None]:
    """Serialises subnet choice between concurrent lab runs on this machine."""
    with LOCK_PATH.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _free_subnet() -> ipaddress.IPv4Network:
    done = _ip("-o", "-4", "addr", "show")
    used = set()
    for match in re.finditer(r"inet (\d+\.\d+\.\d+\.\d+)/", done.stdout):
        address = ipaddress.ip_address(match.group(1))
        if address in POOL:
            used.add(ipaddress.IPv4Network(f"{address}/30", strict=False))
    for subnet in POOL.subnets(new_prefix=30):
        if subnet not in used:
            return subnet
    raise NetnsError(f"every /30 of {POOL} is in use")
