"""Which addresses an agent may connect to: its probe policy, checked on every address after resolution.

A coordinator asks an agent to connect somewhere; the policy keeps that from making the agent a way into
its own network. Rules (`--allow RULE`, `--deny RULE`, or `allow = [...]` / `deny = [...]` in a `--policy`
TOML file) take these forms, alone or combined with spaces (all parts must match):

- an address or CIDR: `10.0.0.0/8`, `::1/128`, `192.0.2.7`;
- a port or port range: `port:443`, `port:8000-8100`;
- a name pattern: `name:*.corp.example.com`, fnmatch on the target's name, case-insensitive;
- a combination: `10.0.0.0/8 port:443`.

Semantics, in the order `ProbePolicy.decide` applies them:

1. a deny rule that matches wins;
2. built-in denials apply unless an exact allow rule lifts them: 169.254.0.0/16 (link-local), fe80::/10
   (IPv6 link-local), fd00:ec2::254/128 (cloud metadata), and the agent's own listeners (its gRPC address
   and port, any other port it serves; a listener on 0.0.0.0, ::, or a name means every local address on
   that port). An allow rule is exact for a network when its address part lies inside that network
   (`--allow 169.254.169.254/32`; `--allow 0.0.0.0/0` is not), and for a listener when its port part is that
   one port (`--allow "127.0.0.1 port:7443"`);
3. when any allow rule exists, an address must match one;
4. otherwise it is allowed: loopback stays allowed, as do private networks, unless a rule says otherwise.

IPv4-mapped IPv6 addresses (::ffff:169.254.169.254) are judged as the IPv4 address they carry. The module
is pure but for `is_local_address`, which asks the kernel (a bind, no packet sent) whether an address is
one of this host's.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import UsageError

__all__ = [
    "ACCEPTED_RULES",
    "BUILT_IN_DENY",
    "Decision",
    "Listener",
    "PolicyError",
    "ProbePolicy",
    "Rule",
    "is_local_address",
    "load_policy",
    "parse_rule",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ACCEPTED_RULES = (
    "accepted: an address or CIDR (10.0.0.0/8, ::1/128, 192.0.2.7), port:443 or port:8000-8100, "
    "name:*.corp.example.com, or a combination such as '10.0.0.0/8 port:443'"
)
MAX_RULES = 1024  # per list: a policy is a short list written by a person
MAX_POLICY_FILE_BYTES = 256 * 1024


class PolicyError(UsageError):
    """A rule or policy file that is not accepted; the message names it and the accepted forms."""


@dataclass(frozen=True)
class Rule:
    """One rule: every part it has must match (a rule with no network matches every address, and so on)."""

    text: str  # the rule as written, normalised ("10.0.0.0/8 port:443")
    network: IPNetwork | None = None
    ports: tuple[int, int] | None = None  # inclusive range
    name: str | None = None  # lower-case fnmatch pattern

    def matches(self, address: IPAddress, port: int, name: str) -> bool:
        if self.network is not None and (address.version != self.network.version or address not in self.network):
            return False
        if self.ports is not None and not self.ports[0] <= port <= self.ports[1]:
            return False
        return self.name is None or fnmatch.fnmatchcase(name.lower().rstrip("."), self.name)

    def lifts_network(self, network: IPNetwork) -> bool:
        """True when this allow rule names addresses inside `network` explicitly (not a wider range)."""
        return (
            self.network is not None and self.network.version == network.version and self.network.subnet_of(network)  # type: ignore[arg-type]
        )

    def lifts_port(self, port: int) -> bool:
        return self.ports == (port, port)


@dataclass(frozen=True)
class Listener:
    """A socket this agent serves on; probes must not reach it. host None: every local address."""

    host: IPAddress | None
    port: int
    what: str  # "gRPC", "metrics"

    def describe(self) -> str:
        if self.host is None:
            return f"own {self.what} listener *:{self.port} (every local address)"
        where = f"[{self.host}]" if self.host.version == 6 else str(self.host)
        return f"own {self.what} listener {where}:{self.port}"

    @classmethod
    def of(cls, host: str, port: int, what: str) -> Listener:
        """From a listen address as configured: 0.0.0.0, :: and names mean every local address."""
        try:
            address = _plain(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            return cls(None, port, what)
        return cls(None if address.is_unspecified else address, port, what)


BUILT_IN_DENY: tuple[tuple[IPNetwork, str], ...] = (
    (ipaddress.ip_network("169.254.0.0/16"), "link-local"),
    (ipaddress.ip_network("fe80::/10"), "IPv6 link-local"),
    (ipaddress.ip_network("fd00:ec2::254/128"), "cloud metadata"),
)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str  # the rule that decided, in words ("deny 127.0.0.2/32", "built-in deny 169.254.0.0/16 (link-local)")

    @property
    def message(self) -> str:
        return f"{'allowed' if self.allowed else 'denied'} by policy: {self.rule}"


@dataclass(frozen=True)
class ProbePolicy:
    """Ordered rules; `decide` says whether an address may be connected to, and which rule said so."""

    allow: tuple[Rule, ...] = ()
    deny: tuple[Rule, ...] = ()
    listeners: tuple[Listener, ...] = ()

    def with_listener(self, host: str, port: int, what: str) -> ProbePolicy:
        return replace(self, listeners=(*self.listeners, Listener.of(host, port, what)))

    def decide(
        self,
        address: str,
        port: int,
        name: str = "",
        *,
        is_local: Callable[[IPAddress], bool] | None = None,
    ) -> Decision:
        """May this agent connect to `address`:`port` for the target `name`? `address` is an IP literal (a
        resolved or pinned address); anything else is denied. `is_local` (default: `is_local_address`)
        says whether an address is this host's, for listeners on every local address."""
        try:
            ip = _plain(ipaddress.ip_address(address))
        except ValueError:
            return Decision(False, f"{address!r} is not an IP address")
        for rule in self.deny:
            if rule.matches(ip, port, name):
                return Decision(False, f"deny {rule.text}")
        matching_allow = [rule for rule in self.allow if rule.matches(ip, port, name)]
        for network, why in BUILT_IN_DENY:
            inside = ip.version == network.version and ip in network
            if inside and not any(rule.lifts_network(network) for rule in matching_allow):
                return Decision(False, f"built-in deny {network} ({why})")
        for listener in self.listeners:
            reached = port == listener.port and _reaches(ip, listener, is_local or is_local_address)
            if reached and not any(rule.lifts_port(port) for rule in matching_allow):
                return Decision(False, f"built-in deny {listener.describe()}")
        if matching_allow:
            return Decision(True, f"allow {matching_allow[0].text}")
        if self.allow:
            return Decision(False, f"no allow rule matches (allow: {', '.join(r.text for r in self.allow)})")
        return Decision(True, "no rule denies it")

    def describe(self) -> tuple[str, ...]:
        """The policy in force, one line per rule in the order they are checked (for `tlsfleet agents`)."""
        lines = [f"deny {rule.text}" for rule in self.deny]
        lines += [f"built-in deny {network} ({why})" for network, why in BUILT_IN_DENY]
        lines += [f"built-in deny {listener.describe()}" for listener in self.listeners]
        lines += [f"allow {rule.text}" for rule in self.allow] or ["allow everything else"]
        if self.allow:
            lines.append("deny everything else")
        return tuple(lines)


def parse_rule(text: str, source: str = "rule") -> Rule:
    """One rule from its text; PolicyError naming `source` (the flag or file) and the accepted forms."""
    parts = text.split()

    def fail(why: str) -> PolicyError:
        return PolicyError(f"{source} {text!r} is not accepted: {why}; {ACCEPTED_RULES}")

    if not parts:
        raise fail("it is empty")
    network: IPNetwork | None = None
    ports: tuple[int, int] | None = None
    name: str | None = None
    for part in parts:
        kind, sep, value = part.partition(":")
        if sep and kind.lower() == "port":
            if ports is not None:
                raise fail("it has two port parts")
            ports = _ports(value, fail)
        elif sep and kind.lower() == "name":
            if name is not None:
                raise fail("it has two name parts")
            if not value or not value.isprintable():
                raise fail("the name pattern is empty")
            name = value.lower().rstrip(".")
        else:
            if network is not None:
                raise fail("it has two address parts")
            network = _network(part, fail)
    normalised = " ".join(
        p for p in (str(network) if network else "", _port_text(ports), f"name:{name}" if name else "") if p
    )
    return Rule(normalised, network, ports, name)


def load_policy(allow: Iterable[str] = (), deny: Iterable[str] = (), file: Path | None = None) -> ProbePolicy:
    """The policy from --allow/--deny rules and a --policy TOML file (`allow = [...]`, `deny = [...]`);
    the file's rules come first in each list."""
    allow_rules: list[Rule] = []
    deny_rules: list[Rule] = []
    if file is not None:
        loaded = _read_file(file)
        allow_rules += [parse_rule(r, f"{file}: allow") for r in loaded.get("allow", [])]
        deny_rules += [parse_rule(r, f"{file}: deny") for r in loaded.get("deny", [])]
    allow_rules += [parse_rule(r, "--allow") for r in allow]
    deny_rules += [parse_rule(r, "--deny") for r in deny]
    if len(allow_rules) > MAX_RULES or len(deny_rules) > MAX_RULES:
        raise PolicyError(f"the probe policy has more than {MAX_RULES} allow or deny rules; accepted: at most that")
    return ProbePolicy(allow=tuple(allow_rules), deny=tuple(deny_rules))


def is_local_address(address: IPAddress) -> bool:
    """True when `address` is one of this host's (loopback, unspecified, any interface's): binding a UDP
    socket to it succeeds. No packet is sent."""
    if address.is_loopback or address.is_unspecified:
        return True
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        return False
    return True


def _reaches(ip: IPAddress, listener: Listener, is_local: Callable[[IPAddress], bool]) -> bool:
    # A connection to 0.0.0.0 or :: lands on this host, on whatever listens on the port.
    if ip.is_unspecified:
        return True
    return is_local(ip) if listener.host is None else ip == listener.host


def _plain(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address as the IPv4 address it carries; a scope id dropped."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id:
            return ipaddress.IPv6Address(str(address).split("%", 1)[0])
    return address


def _network(text: str, fail: Callable[[str], PolicyError]) -> IPNetwork:
    try:
        network = ipaddress.ip_network(text)
    except ValueError:
        try:
            wider = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise fail(f"{text!r} is neither an address, a CIDR, port:N nor name:PATTERN") from None
        raise fail(f"{text!r} has host bits set (did you mean {wider}?)") from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:  # judged as IPv4, as the addresses are
            return ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
    return network


def _ports(value: str, fail: Callable[[str], PolicyError]) -> tuple[int, int]:
    low_text, dash, high_text = value.partition("-")
    bounds = (low_text, high_text if dash else low_text)
    if not all(b.isascii() and b.isdigit() for b in bounds):
        raise fail(f"port {value!r} is not a number or a range N-M")
    low, high = int(bounds[0]), int(bounds[1])
    if not 1 <= low <= high <= 65535:
        raise fail(f"port {value!r} is out of range; ports are 1-65535, a range low-high")
    return low, high


def _port_text(ports: tuple[int, int] | None) -> str:
    if ports is None:
        return ""
    return f"port:{ports[0]}" if ports[0] == ports[1] else f"port:{ports[0]}-{ports[1]}"


def _read_file(path: Path) -> dict[str, Sequence[str]]:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_POLICY_FILE_BYTES + 1)
    except OSError as error:
        raise PolicyError(
            f"--policy {path}: cannot read it ({error.strerror or error}); accepted: a TOML file with "
            "allow = [...], deny = [...]"
        ) from None
    if len(raw) > MAX_POLICY_FILE_BYTES:
        raise PolicyError(f"--policy {path} is larger than {MAX_POLICY_FILE_BYTES // 1024} KiB; a policy is short")
    try:
        data = tomllib.loads(raw.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise PolicyError(f"--policy {path} is not TOML ({error}); accepted: allow = [...], deny = [...]") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise PolicyError(
            f"--policy {path} nests arrays or tables too deeply; accepted: allow = [...], deny = [...]"
        ) from None
    unknown = sorted(set(data) - {"allow", "deny"})
    if unknown:
        raise PolicyError(f"--policy {path}: unknown key {unknown[0]!r}; accepted: allow = [...], deny = [...]")
    for key, value in data.items():
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise PolicyError(f"--policy {path}: {key} must be a list of rule strings; {ACCEPTED_RULES}")
    return data
