"""The fleet inventory file: what a valid one yields, and how each mistake in it is named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tlsfleet.coordinator.fleet.inventory import (
    ENV_INVENTORY,
    MAX_AGENTS,
    MAX_INVENTORY_BYTES,
    AgentEntry,
    CoordinatorCredentialPaths,
    Inventory,
    InventoryError,
    default_credentials,
    default_inventory_path,
    load_inventory,
    parse_inventory,
)


@pytest.fixture
def pki_dir(tmp_path: Path) -> Path:
    return tmp_path / "fleet-pki"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads the real ~/.config or a TLSFLEET_INVENTORY set in the caller's environment."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv(ENV_INVENTORY, raising=False)
    return home


def _write(tmp_path: Path, text: str, name: str = "inventory.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _load(tmp_path: Path, pki_dir: Path, text: str) -> Inventory:
    return load_inventory(_write(tmp_path, text), pki_dir=pki_dir)


def _refused(tmp_path: Path, pki_dir: Path, text: str, *fragments: str) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(InventoryError) as caught:
        load_inventory(path, pki_dir=pki_dir)
    message = str(caught.value)
    # Every message names the file, so a reader with several inventories knows which one to open.
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def _agent(name: str = "web-1", address: str = "10.0.0.5:7443", extra: str = "") -> str:
    return f'[[agent]]\nname = "{name}"\naddress = "{address}"\n{extra}\n'


# --- a valid file ------------------------------------------------------------------------------------


def test_valid_inventory_with_labels_insecure_loopback_and_relative_credentials(tmp_path: Path, pki_dir: Path) -> None:
    inventory_dir = tmp_path / "conf"
    path = _write(
        inventory_dir,
        """
[coordinator]
name = "coord-eu"
ca = "pki/ca.pem"
cert = "pki/coordinators/coord-eu.pem"
key = "/secure/coord-eu.key"

[[agent]]
name = "web-1"
address = "10.0.0.5:7443"
labels = { region = "eu-west", env = "prod", "k8s.cluster" = "c-1" }

[[agent]]
name = "db-1"
address = "[2001:db8::7]:7443"

[[agent]]
name = "lab"
address = "127.0.0.1:17443"
insecure = true

[[agent]]
name = "lab-6"
address = "[::1]:17443"
insecure = true

[[agent]]
name = "lab-name"
address = "localhost:17444"
insecure = true
""",
    )
    inventory = load_inventory(path, pki_dir=pki_dir)
    assert inventory.path == path
    assert inventory.agents == (
        # Labels are kept sorted by key, whatever order the file lists them in.
        AgentEntry("web-1", "10.0.0.5:7443", (("env", "prod"), ("k8s.cluster", "c-1"), ("region", "eu-west"))),
        AgentEntry("db-1", "[2001:db8::7]:7443"),
        AgentEntry("lab", "127.0.0.1:17443", insecure=True),
        AgentEntry("lab-6", "[::1]:17443", insecure=True),
        AgentEntry("lab-name", "localhost:17444", insecure=True),
    )
    # Relative credential paths are relative to the inventory file, not to the working directory.
    assert inventory.credentials == CoordinatorCredentialPaths(
        name="coord-eu",
        ca=inventory_dir / "pki" / "ca.pem",
        cert=inventory_dir / "pki" / "coordinators" / "coord-eu.pem",
        key=Path("/secure/coord-eu.key"),
    )


def test_relative_credentials_do_not_depend_on_the_working_directory(
    tmp_path: Path, pki_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "conf", '[coordinator]\nca = "ca.pem"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_inventory(path, pki_dir=pki_dir).credentials.ca == tmp_path / "conf" / "ca.pem"


def test_tilde_in_credential_paths_is_expanded(tmp_path: Path, pki_dir: Path, _isolated_home: Path) -> None:
    inventory = _load(tmp_path, pki_dir, '[coordinator]\nkey = "~/keys/c.key"\n')
    assert inventory.credentials.key == _isolated_home / "keys" / "c.key"


def test_credentials_default_to_the_pki_dir(tmp_path: Path, pki_dir: Path) -> None:
    inventory = _load(tmp_path, pki_dir, _agent())
    assert inventory.credentials == default_credentials(pki_dir)
    assert inventory.credentials == CoordinatorCredentialPaths(
        name="coordinator",
        ca=pki_dir / "ca.pem",
        cert=pki_dir / "coordinators" / "coordinator.pem",
        key=pki_dir / "coordinators" / "coordinator.key",
    )


def test_coordinator_name_and_absolute_pki_dir_choose_the_default_files(tmp_path: Path, pki_dir: Path) -> None:
    other = tmp_path / "other-pki"
    inventory = _load(tmp_path, pki_dir, f'[coordinator]\nname = "ops"\npki_dir = "{other}"\ncert = "c.pem"\n')
    assert inventory.credentials == CoordinatorCredentialPaths(
        name="ops",
        ca=other / "ca.pem",
        cert=tmp_path / "c.pem",
        key=other / "coordinators" / "ops.key",
    )


def test_relative_pki_dir_is_relative_to_the_inventory_file(
    tmp_path: Path, pki_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "conf", '[coordinator]\npki_dir = "pki"\n')
    monkeypatch.chdir(tmp_path)
    assert load_inventory(path, pki_dir=pki_dir).credentials.ca == tmp_path / "conf" / "pki" / "ca.pem"


def test_empty_file_is_a_fleet_of_none(tmp_path: Path, pki_dir: Path) -> None:
    path = _write(tmp_path, "")
    inventory = load_inventory(path, pki_dir=pki_dir)
    assert inventory == Inventory(path=path, agents=(), credentials=default_credentials(pki_dir))


def test_address_is_normalised(tmp_path: Path, pki_dir: Path) -> None:
    inventory = _load(tmp_path, pki_dir, _agent(address="  agent.example:0443 "))
    assert inventory.agents[0].address == "agent.example:443"


@pytest.mark.parametrize(
    "name", ["a", "0", "web-1", "a" * 63, "1-2-3", "x9"], ids=["one", "digit", "dash", "max", "digits", "alnum"]
)
def test_accepted_names(tmp_path: Path, pki_dir: Path, name: str) -> None:
    assert _load(tmp_path, pki_dir, _agent(name=name)).agents[0].name == name


def test_label_edges_accepted(tmp_path: Path, pki_dir: Path) -> None:
    key = "k" + "x" * 62  # 63 characters
    text = _agent(extra=f'labels = {{ _private = "", {key} = "{"v" * 253}", "a.b-c_d" = "x" }}')
    labels = dict(_load(tmp_path, pki_dir, text).agents[0].labels)
    assert labels == {"_private": "", key: "v" * 253, "a.b-c_d": "x"}


# --- errors ------------------------------------------------------------------------------------------


def test_bad_toml(tmp_path: Path, pki_dir: Path) -> None:
    message = _refused(tmp_path, pki_dir, '[[agent]]\nname = "web-1\n', "is not valid TOML")
    assert "line 2" in message  # tomllib's position survives, so the reader can find the mistake


def test_more_labels_than_an_agent_may_carry_are_refused(tmp_path: Path, pki_dir: Path) -> None:
    labels = ", ".join(f'k{i} = "v"' for i in range(65))
    _refused(tmp_path, pki_dir, _agent(extra=f"labels = {{ {labels} }}"), "65 labels; at most 64 are accepted")


def test_deeply_nested_toml_is_refused_in_one_line(tmp_path: Path, pki_dir: Path) -> None:
    # tomllib recurses per level: without a catch this was a RecursionError, exit 70.
    _refused(tmp_path, pki_dir, "x = " + "[" * 100_000 + "]" * 100_000, "nests arrays or tables too deeply")


def test_not_utf8(tmp_path: Path, pki_dir: Path) -> None:
    path = tmp_path / "inventory.toml"
    path.write_bytes(b'[[agent]]\nname = "\xff\xfe"\n')
    with pytest.raises(InventoryError, match="cannot be read"):
        load_inventory(path, pki_dir=pki_dir)


def test_a_directory_is_not_an_inventory(tmp_path: Path, pki_dir: Path) -> None:
    directory = tmp_path / "inventory.d"
    directory.mkdir()
    with pytest.raises(InventoryError, match=r"inventory .*inventory\.d cannot be read"):
        load_inventory(directory, pki_dir=pki_dir)


def test_unknown_top_level_key(tmp_path: Path, pki_dir: Path) -> None:
    _refused(
        tmp_path,
        pki_dir,
        "agents = []\n[fleet]\nx = 1\n",
        "unknown top-level key(s) ['agents', 'fleet']",
        "accepted: [coordinator], [[agent]]",
    )


def test_unknown_agent_key(tmp_path: Path, pki_dir: Path) -> None:
    _refused(
        tmp_path,
        pki_dir,
        _agent(extra='port = 7443\nlabel = "x"'),
        "agent #1",
        "unknown key(s) ['label', 'port']",
        "accepted: name, address, labels, insecure",
    )


def test_unknown_coordinator_key(tmp_path: Path, pki_dir: Path) -> None:
    _refused(
        tmp_path,
        pki_dir,
        '[coordinator]\ncertificate = "c.pem"\n',
        "[coordinator]",
        "unknown key(s) ['certificate']",
        "accepted: name, ca, cert, key, pki_dir",
    )


def test_coordinator_must_be_a_table(tmp_path: Path, pki_dir: Path) -> None:
    _refused(tmp_path, pki_dir, 'coordinator = "c"\n', "[coordinator] must be a table")


def test_coordinator_values_must_be_strings(tmp_path: Path, pki_dir: Path) -> None:
    _refused(tmp_path, pki_dir, "[coordinator]\nca = 5\n", "'ca' must be a string")


def test_bad_coordinator_name(tmp_path: Path, pki_dir: Path) -> None:
    _refused(tmp_path, pki_dir, '[coordinator]\nname = "Coord_1"\n', "name 'Coord_1' is not accepted", "1-63")


def test_agent_must_be_an_array_of_tables(tmp_path: Path, pki_dir: Path) -> None:
    _refused(tmp_path, pki_dir, '[agent]\nname = "web-1"\n', "'agent' must be an array of tables ([[agent]])")
    _refused(tmp_path, pki_dir, 'agent = ["web-1"]\n', "agent #1 must be a table")


def test_duplicate_names(tmp_path: Path, pki_dir: Path) -> None:
    text = _agent("web-1", "10.0.0.5:7443") + _agent("db-1", "10.0.0.6:7443") + _agent("web-1", "10.0.0.7:7443")
    _refused(
        tmp_path,
        pki_dir,
        text,
        "agent #3 repeats the name 'web-1'",
        "first used by agent #1",
        "names must be unique",
    )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("10.0.0.5:7443", "10.0.0.5:7443"),
        ("[::1]:7443", "[::1]:7443"),
        ("10.0.0.5:7443", " 10.0.0.5:07443"),  # the same endpoint once normalised
    ],
)
def test_duplicate_addresses(tmp_path: Path, pki_dir: Path, first: str, second: str) -> None:
    text = _agent("web-1", first) + _agent("web-2", second)
    message = _refused(tmp_path, pki_dir, text, "agents 'web-1' and 'web-2' share the address")
    assert message.endswith(first.strip())


def test_same_host_different_ports_is_fine(tmp_path: Path, pki_dir: Path) -> None:
    text = _agent("web-1", "10.0.0.5:7443") + _agent("web-2", "10.0.0.5:7444")
    assert len(_load(tmp_path, pki_dir, text).agents) == 2


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("10.0.0.5", "has no port"),
        ("::1:7443", "put an IPv6 address in brackets"),
        ("[::1]", "no port after the bracketed address"),
        (":7443", "has no host"),
        ("web-1:https", "is not a number"),
    ],
)
def test_bad_address_forms(tmp_path: Path, pki_dir: Path, address: str, fragment: str) -> None:
    message = _refused(tmp_path, pki_dir, _agent(address=address), "agent #1 (web-1)", fragment)
    assert "accepted: HOST:PORT" in message


@pytest.mark.parametrize("port", [0, 65536, 70000])
def test_port_out_of_range(tmp_path: Path, pki_dir: Path, port: int) -> None:
    _refused(tmp_path, pki_dir, _agent(address=f"10.0.0.5:{port}"), "agent #1 (web-1)", f"port {port} is out of range")


def test_port_edges_accepted(tmp_path: Path, pki_dir: Path) -> None:
    text = _agent("a", "10.0.0.5:1") + _agent("b", "10.0.0.5:65535")
    assert [a.address for a in _load(tmp_path, pki_dir, text).agents] == ["10.0.0.5:1", "10.0.0.5:65535"]


def test_unicode_digit_port_is_an_inventory_error(tmp_path: Path, pki_dir: Path) -> None:
    _refused(tmp_path, pki_dir, _agent(address="10.0.0.5:²"), "agent #1 (web-1)")


@pytest.mark.parametrize(
    "name",
    ["Web-1", "web_1", "-web", "web-", "a" * 64, "", "web.1", "wéb"],
    ids=["upper", "underscore", "lead-dash", "trail-dash", "too-long", "empty", "dot", "non-ascii"],
)
def test_bad_agent_name(tmp_path: Path, pki_dir: Path, name: str) -> None:
    _refused(
        tmp_path,
        pki_dir,
        _agent(name=name),
        "agent #1",
        f"name {name!r} is not accepted",
        "1-63 characters of a-z, 0-9 and '-'",
    )


def test_reserved_name_local(tmp_path: Path, pki_dir: Path) -> None:
    _refused(tmp_path, pki_dir, _agent(name="local"), "name 'local' is not accepted", "'local' is reserved")


def test_missing_name_and_address(tmp_path: Path, pki_dir: Path) -> None:
    _refused(tmp_path, pki_dir, '[[agent]]\naddress = "10.0.0.5:7443"\n', "agent #1", "'name' is missing")
    _refused(tmp_path, pki_dir, '[[agent]]\nname = "web-1"\n', "agent #1 (web-1)", "'address' is missing")


def test_name_and_address_must_be_strings(tmp_path: Path, pki_dir: Path) -> None:
    _refused(tmp_path, pki_dir, '[[agent]]\nname = 1\naddress = "10.0.0.5:7443"\n', "'name' must be a string")
    _refused(tmp_path, pki_dir, '[[agent]]\nname = "web-1"\naddress = 7443\n', "'address' must be a string")


def test_error_names_the_entry_by_position(tmp_path: Path, pki_dir: Path) -> None:
    text = _agent("web-1", "10.0.0.5:7443") + _agent("web-2", "10.0.0.6")
    _refused(tmp_path, pki_dir, text, "agent #2 (web-2)", "has no port")


def test_labels_must_be_a_table(tmp_path: Path, pki_dir: Path) -> None:
    _refused(
        tmp_path, pki_dir, _agent(extra='labels = ["env=prod"]'), "labels must be a table of strings", 'env = "prod"'
    )


@pytest.mark.parametrize(
    "key",
    ["1env", "-env", ".env", "en v", "env/zone", "k" * 64, "name", ""],
    ids=["digit", "dash", "dot", "space", "slash", "too-long", "reserved", "empty"],
)
def test_bad_label_key(tmp_path: Path, pki_dir: Path, key: str) -> None:
    _refused(
        tmp_path,
        pki_dir,
        _agent(extra=f'labels = {{ "{key}" = "x" }}'),
        "agent #1 (web-1)",
        f"label key {key!r} is not accepted",
        "'name' is reserved",
    )


@pytest.mark.parametrize(
    "value",
    ["1", "true", "1.5", '["a"]', '{ a = "b" }', f'"{"v" * 254}"', "2024-01-01"],
    ids=["int", "bool", "float", "array", "table", "too-long", "date"],
)
def test_bad_label_value(tmp_path: Path, pki_dir: Path, value: str) -> None:
    _refused(
        tmp_path,
        pki_dir,
        _agent(extra=f"labels = {{ env = {value} }}"),
        "agent #1 (web-1)",
        "label env must be a string of at most 253 characters",
    )


def test_insecure_must_be_a_boolean(tmp_path: Path, pki_dir: Path) -> None:
    _refused(
        tmp_path, pki_dir, _agent(address="127.0.0.1:7443", extra='insecure = "yes"'), "insecure must be true or false"
    )


@pytest.mark.parametrize("address", ["10.0.0.5:7443", "agent.example:7443", "[2001:db8::1]:7443", "0.0.0.0:7443"])
def test_insecure_refused_off_loopback(tmp_path: Path, pki_dir: Path, address: str) -> None:
    _refused(
        tmp_path,
        pki_dir,
        _agent(address=address, extra="insecure = true"),
        "agent #1 (web-1)",
        f"insecure (plaintext) is refused for {address}",
        "accepted for loopback addresses only",
    )


def test_insecure_false_is_fine_anywhere(tmp_path: Path, pki_dir: Path) -> None:
    inventory = _load(tmp_path, pki_dir, _agent(address="10.0.0.5:7443", extra="insecure = false"))
    assert inventory.agents[0].insecure is False


def test_too_many_agents(tmp_path: Path, pki_dir: Path) -> None:
    raw = {"agent": [{"name": f"a{i}", "address": f"10.0.{i // 250}.{i % 250}:7443"} for i in range(MAX_AGENTS + 1)]}
    path = tmp_path / "inventory.toml"
    with pytest.raises(InventoryError, match=f"{MAX_AGENTS + 1} agents; at most {MAX_AGENTS} are accepted"):
        parse_inventory(raw, path=path, pki_dir=pki_dir)
    # The limit itself is accepted.
    inventory = parse_inventory({"agent": raw["agent"][:MAX_AGENTS]}, path=path, pki_dir=pki_dir)
    assert len(inventory.agents) == MAX_AGENTS


# --- size ---------------------------------------------------------------------------------------------


def test_too_large_file(tmp_path: Path, pki_dir: Path) -> None:
    path = tmp_path / "inventory.toml"
    with path.open("wb") as f:
        f.truncate(MAX_INVENTORY_BYTES + 1)  # sparse: the size check must come before reading
    with pytest.raises(InventoryError, match=r"inventory .* is larger than 4 MiB"):
        load_inventory(path, pki_dir=pki_dir)


def test_file_of_exactly_the_limit_is_read(tmp_path: Path, pki_dir: Path) -> None:
    head = _agent().encode()
    filler = b"# " + b"x" * (MAX_INVENTORY_BYTES - len(head) - 3) + b"\n"
    path = tmp_path / "inventory.toml"
    path.write_bytes(head + filler)
    assert path.stat().st_size == MAX_INVENTORY_BYTES
    assert load_inventory(path, pki_dir=pki_dir).agents[0].name == "web-1"


# --- where the file is --------------------------------------------------------------------------------


def test_explicit_path_missing_is_an_error(tmp_path: Path, pki_dir: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(InventoryError) as caught:
        load_inventory(missing, pki_dir=pki_dir)
    assert (
        str(caught.value)
        == f"inventory {missing} does not exist; pass an existing TOML file to --inventory or $TLSFLEET_INVENTORY"
    )


def test_default_path_missing_means_local_only(pki_dir: Path, _isolated_home: Path) -> None:
    assert not (_isolated_home / ".config").exists()
    inventory = load_inventory(None, pki_dir=pki_dir)
    assert inventory == Inventory(path=None, agents=(), credentials=default_credentials(pki_dir))


def test_env_path_missing_is_an_error(tmp_path: Path, pki_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A typo in $TLSFLEET_INVENTORY must not silently hide the whole fleet.
    monkeypatch.setenv(ENV_INVENTORY, str(tmp_path / "absent.toml"))
    with pytest.raises(InventoryError, match=r"absent\.toml does not exist"):
        load_inventory(None, pki_dir=pki_dir)


def test_env_names_the_default_inventory(tmp_path: Path, pki_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, _agent())
    monkeypatch.setenv(ENV_INVENTORY, str(path))
    assert default_inventory_path() == path
    inventory = load_inventory(None, pki_dir=pki_dir)
    assert inventory.path == path
    assert [a.name for a in inventory.agents] == ["web-1"]


def test_home_default_inventory_is_read(pki_dir: Path, _isolated_home: Path) -> None:
    path = _write(_isolated_home / ".config" / "tlsfleet", _agent("db-1"))
    assert default_inventory_path() == path
    inventory = load_inventory(None, pki_dir=pki_dir)
    assert inventory.path == path
    assert [a.name for a in inventory.agents] == ["db-1"]


def test_env_and_explicit_paths_expand_tilde(
    pki_dir: Path, _isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(_isolated_home, _agent(), name="fleet.toml")
    monkeypatch.setenv(ENV_INVENTORY, "~/fleet.toml")
    assert default_inventory_path() == path
    assert load_inventory(Path("~/fleet.toml"), pki_dir=pki_dir).path == path


def test_empty_env_falls_back_to_home(pki_dir: Path, _isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_INVENTORY, "")
    assert default_inventory_path() == _isolated_home / ".config" / "tlsfleet" / "inventory.toml"


def test_unreadable_file(tmp_path: Path, pki_dir: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root: file permissions do not stop reads")
    path = _write(tmp_path, _agent())
    path.chmod(0)
    try:
        with pytest.raises(InventoryError, match="cannot be read"):
            load_inventory(path, pki_dir=pki_dir)
    finally:
        path.chmod(0o600)
