"""The agent's --hosts-file: its own answers for some names, the host's resolver for the rest."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tlsfleet.agent.model import Resolution
from tlsfleet.agent.probe.hosts_override import HostsFileError, load_hosts_file, with_overrides


async def _fallback(host: str, port: int, timeout: float, cap: int) -> Resolution:
    return Resolution(addresses=("192.0.2.99",), duration_ms=0.0)


def test_names_map_to_their_addresses_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(
        "# lab view\n127.0.0.2 api.lab.test www.lab.test\n"
        "127.0.0.3  API.lab.test.  # second backend\n\n::1 v6.lab.test\n"
    )
    table = load_hosts_file(path)
    assert table == {
        "api.lab.test": ("127.0.0.2", "127.0.0.3"),
        "www.lab.test": ("127.0.0.2",),
        "v6.lab.test": ("::1",),
    }


def test_resolver_answers_listed_names_and_defers_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("127.0.0.2 api.lab.test\n127.0.0.3 api.lab.test\n")
    resolve = with_overrides(load_hosts_file(path), _fallback)
    listed = asyncio.run(resolve("API.lab.test", 443, 1.0, 8))
    assert listed.addresses == ("127.0.0.2", "127.0.0.3")
    capped = asyncio.run(resolve("api.lab.test", 443, 1.0, 1))
    assert capped.addresses == ("127.0.0.2",) and capped.truncated_from == 2
    other = asyncio.run(resolve("elsewhere.test", 443, 1.0, 8))
    assert other.addresses == ("192.0.2.99",)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [("not-an-ip api.lab.test\n", "line 1: 'not-an-ip' is not an IP address"), ("127.0.0.2\n", "no name after")],
)
def test_bad_lines_are_named(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "hosts"
    path.write_text(content)
    with pytest.raises(HostsFileError, match=fragment):
        load_hosts_file(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(HostsFileError, match="cannot be read"):
        load_hosts_file(tmp_path / "absent")
