"""The fleet inventory: a small TOML file naming each agent, where to reach it, its labels, and the
credentials the coordinator presents.

    [coordinator]                 # optional; defaults come from the fleet PKI directory
    name = "coordinator"
    ca = "~/.config/tlsfleet/pki/ca.pem"
    cert = "~/.config/tlsfleet/pki/coordinators/coordinator.pem"
    key = "~/.config/tlsfleet/pki/coordinators/coordinator.key"

    [[agent]]
    name = "web-1"
    address = "10.0.0.5:7443"
    labels = { env = "prod", region = "eu-west" }
    # insecure = true             # plaintext, loopback addresses only
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ...agent.bounded_read import FileTooLarge, read_capped_text
from ...agent.endpoints import EndpointError, is_loopback_host, join_host_port, split_host_port
from ...agent.errors import UsageError
from ...agent.naming import LABEL_KEY_PATTERN, MAX_LABEL_VALUE, MAX_LABELS, NAME_PATTERN, NAME_RULE, RESERVED_NAMES

ENV_INVENTORY = "TLSFLEET_INVENTORY"
MAX_AGENTS = 10_000
MAX_INVENTORY_BYTES = 4 * 1024 * 1024
DEFAULT_COORDINATOR_NAME = "coordinator"


class InventoryError(UsageError):
    """The inventory cannot be used; the message names the file, the entry and what is accepted."""


@dataclass(frozen=True)
class AgentEntry:
    """An agent the inventory lists: its name, address, labels, and whether it is dialled without TLS."""

    name: str
    address: str
    labels: tuple[tuple[str, str], ...] = ()
    insecure: bool = False


@dataclass(frozen=True)
class MergedLabels:
    """An agent's labels: the inventory's, plus those the agent reports (`agent serve --label`) for keys
    the inventory leaves unset. Where both set a key the inventory wins, and the difference is kept."""

    labels: tuple[tuple[str, str], ...] = ()
    conflicts: tuple[tuple[str, str, str], ...] = ()  # (key, the inventory's value, the agent's value)

    def shown(self) -> tuple[tuple[str, str], ...]:
        """The labels for a person: a conflicting value says what the agent says, e.g.
        `env=prod (agent says env=staging)`."""
        said = {key: reported for key, _, reported in self.conflicts}
        return tuple(
            (key, f"{value} (agent says {key}={said[key]})" if key in said else value) for key, value in self.labels
        )


def merge_labels(listed: tuple[tuple[str, str], ...], reported: tuple[tuple[str, str], ...]) -> MergedLabels:
    inventory = dict(listed)
    agent = dict(reported)
    merged = {**agent, **inventory}
    conflicts = tuple(
        (key, inventory[key], agent[key]) for key in sorted(inventory) if key in agent and agent[key] != inventory[key]
    )
    return MergedLabels(labels=tuple(sorted(merged.items())), conflicts=conflicts)


@dataclass(frozen=True)
class CoordinatorCredentialPaths:
    """Where the coordinator's fleet CA, certificate and key are."""

    name: str
    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class Inventory:
    """The inventory file as read: its agents and the coordinator's credentials."""

    path: Path | None  # None: no inventory file, the local vantage only
    agents: tuple[AgentEntry, ...]
    credentials: CoordinatorCredentialPaths


def default_inventory_path() -> Path:
    configured = os.environ.get(ENV_INVENTORY)
    if configured:
        return Path(configured).expanduser()
    return Path("~/.config/tlsfleet/inventory.toml").expanduser()


def default_credentials(pki_dir: Path, name: str = DEFAULT_COORDINATOR_NAME) -> CoordinatorCredentialPaths:
    return CoordinatorCredentialPaths(
        name=name,
        ca=pki_dir / "ca.pem",
        cert=pki_dir / "coordinators" / f"{name}.pem",
        key=pki_dir / "coordinators" / f"{name}.key",
    )


def load_inventory(path: Path | None, *, pki_dir: Path) -> Inventory:
    """Read `path`, or the default path when None. A missing default file means: no fleet, local only."""
    # A path named on the command line or in $TLSFLEET_INVENTORY must exist: a typo must not hide the fleet.
    explicit = path is not None or bool(os.environ.get(ENV_INVENTORY))
    path = (path or default_inventory_path()).expanduser()
    if not path.exists():
        if explicit:
            raise InventoryError(
                f"inventory {path} does not exist; pass an existing TOML file to --inventory or ${ENV_INVENTORY}"
            )
        return Inventory(path=None, agents=(), credentials=default_credentials(pki_dir))
    import tomllib  # a probe from this machine alone reads no inventory

    try:
        data = tomllib.loads(read_capped_text(path, MAX_INVENTORY_BYTES))
    except FileTooLarge:
        raise InventoryError(f"inventory {path} is larger than {MAX_INVENTORY_BYTES // 2**20} MiB") from None
    except tomllib.TOMLDecodeError as error:
        raise InventoryError(f"inventory {path} is not valid TOML: {error}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise InventoryError(f"inventory {path} nests arrays or tables too deeply to be an inventory") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InventoryError(f"inventory {path} cannot be read: {error}") from None
    return parse_inventory(data, path=path, pki_dir=pki_dir)


def parse_inventory(data: dict, *, path: Path, pki_dir: Path) -> Inventory:
    unknown = set(data) - {"coordinator", "agent"}
    if unknown:
        raise InventoryError(
            f"inventory {path}: unknown top-level key(s) {sorted(unknown)}; accepted: [coordinator], [[agent]]"
        )
    credentials = _parse_coordinator(data.get("coordinator", {}), path, pki_dir)
    raw_agents = data.get("agent", [])
    if not isinstance(raw_agents, list):
        raise InventoryError(f"inventory {path}: 'agent' must be an array of tables ([[agent]])")
    if len(raw_agents) > MAX_AGENTS:
        raise InventoryError(f"inventory {path}: {len(raw_agents)} agents; at most {MAX_AGENTS} are accepted")
    agents: list[AgentEntry] = []
    seen_names: dict[str, int] = {}
    seen_addresses: dict[str, str] = {}
    for index, raw in enumerate(raw_agents, start=1):
        entry = _parse_agent(raw, f"inventory {path}: agent #{index}")
        if entry.name in seen_names:
            raise InventoryError(
                f"inventory {path}: agent #{index} repeats the name {entry.name!r} "
                f"(first used by agent #{seen_names[entry.name]}); names must be unique"
            )
        if entry.address in seen_addresses:
            raise InventoryError(
                f"inventory {path}: agents {seen_addresses[entry.address]!r} and {entry.name!r} "
                f"share the address {entry.address}"
            )
        seen_names[entry.name] = index
        seen_addresses[entry.address] = entry.name
        agents.append(entry)
    return Inventory(path=path, agents=tuple(agents), credentials=credentials)


def _parse_coordinator(raw: object, path: Path, pki_dir: Path) -> CoordinatorCredentialPaths:
    where = f"inventory {path}: [coordinator]"
    if not isinstance(raw, dict):
        raise InventoryError(f"{where} must be a table")
    unknown = set(raw) - {"name", "ca", "cert", "key", "pki_dir"}
    if unknown:
        raise InventoryError(f"{where}: unknown key(s) {sorted(unknown)}; accepted: name, ca, cert, key, pki_dir")
    name = _string(raw, "name", where, default=DEFAULT_COORDINATOR_NAME)
    if not NAME_PATTERN.match(name):
        raise InventoryError(f"{where}: name {name!r} is not accepted; {NAME_RULE}")
    base = Path(_string(raw, "pki_dir", where, default=str(pki_dir))).expanduser()
    if not base.is_absolute():
        base = path.parent / base
    defaults = default_credentials(base, name)

    def file(key: str, default: Path) -> Path:
        value = _string(raw, key, where, default="")
        if not value:
            return default
        candidate = Path(value).expanduser()
        # Relative paths are relative to the inventory file, so an inventory can travel with its PKI.
        return candidate if candidate.is_absolute() else path.parent / candidate

    return CoordinatorCredentialPaths(
        name=name,
        ca=file("ca", defaults.ca),
        cert=file("cert", defaults.cert),
        key=file("key", defaults.key),
    )


def _parse_agent(raw: object, where: str) -> AgentEntry:
    if not isinstance(raw, dict):
        raise InventoryError(f"{where} must be a table")
    unknown = set(raw) - {"name", "address", "labels", "insecure"}
    if unknown:
        raise InventoryError(f"{where}: unknown key(s) {sorted(unknown)}; accepted: name, address, labels, insecure")
    name = _string(raw, "name", where)
    if not NAME_PATTERN.match(name) or name in RESERVED_NAMES:
        raise InventoryError(f"{where}: name {name!r} is not accepted; {NAME_RULE}; 'local' is reserved")
    where = f"{where} ({name})"
    address = _string(raw, "address", where)
    try:
        host, port = split_host_port(address)
    except EndpointError as error:
        raise InventoryError(f"{where}: {error}") from None
    labels_raw = raw.get("labels", dict(AgentEntry.labels))
    if not isinstance(labels_raw, dict):
        raise InventoryError(f'{where}: labels must be a table of strings, e.g. labels = {{ env = "prod" }}')
    if len(labels_raw) > MAX_LABELS:
        raise InventoryError(f"{where}: {len(labels_raw)} labels; at most {MAX_LABELS} are accepted")
    labels: list[tuple[str, str]] = []
    for key, value in sorted(labels_raw.items()):
        if not LABEL_KEY_PATTERN.match(key) or key == "name":
            raise InventoryError(
                f"{where}: label key {key!r} is not accepted; letters, digits, '_', '.', '-', "
                "starting with a letter or '_'; 'name' is reserved"
            )
        if not isinstance(value, str) or len(value) > MAX_LABEL_VALUE:
            raise InventoryError(f"{where}: label {key} must be a string of at most {MAX_LABEL_VALUE} characters")
        labels.append((key, value))
    insecure = raw.get("insecure", AgentEntry.insecure)
    if not isinstance(insecure, bool):
        raise InventoryError(f"{where}: insecure must be true or false")
    if insecure and not is_loopback_host(host):
        raise InventoryError(
            f"{where}: insecure (plaintext) is refused for {address}; it is accepted for loopback addresses only"
        )
    return AgentEntry(name=name, address=join_host_port(host, port), labels=tuple(labels), insecure=insecure)


def _string(raw: dict, key: str, where: str, *, default: str | None = None) -> str:
    value = raw.get(key, default)
    if value is None:
        raise InventoryError(f"{where}: '{key}' is missing")
    if not isinstance(value, str):
        raise InventoryError(f"{where}: '{key}' must be a string")
    return value
