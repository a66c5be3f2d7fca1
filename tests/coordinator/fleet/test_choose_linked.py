"""Dial-in and dialled agents form one fleet: selectors match both, and a stream beats an address."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest

from tlsfleet.coordinator.fleet.choose import FleetError, select_vantages
from tlsfleet.coordinator.outcomes import VantageInfo, VantageKind


@dataclass
class DialIn:
    info: VantageInfo

    async def close(self) -> None:
        return None


def dial_in(name: str, **labels: str) -> DialIn:
    return DialIn(VantageInfo(name, "10.9.0.1:40000", tuple(sorted(labels.items())), VantageKind.DIAL_IN))


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.toml"
    path.write_text(
        '[[agent]]\nname = "web-1"\naddress = "127.0.0.1:7001"\nlabels = { env = "prod" }\ninsecure = true\n\n'
        '[[agent]]\nname = "k8s-1"\naddress = "127.0.0.1:7002"\nlabels = { env = "prod" }\ninsecure = true\n'
    )
    return path


def chosen(inventory: Path, selector: str | None, linked: list[tuple[DialIn, bool]]) -> list[tuple[str, str]]:
    async def choose() -> list[tuple[str, str]]:
        fleet = select_vantages(inventory_path=inventory, selector_text=selector, include_local=False, linked=linked)
        try:
            return [(v.info.name, str(v.info.kind)) for v in fleet.vantages]
        finally:
            await asyncio.gather(*(v.close() for v in fleet.vantages))

    return asyncio.run(choose())


def test_selectors_match_dial_in_agents_by_their_registered_labels(inventory: Path) -> None:
    linked = [(dial_in("k8s-7", env="prod"), True), (dial_in("k8s-8", env="dev"), True)]
    assert chosen(inventory, "env=prod", linked) == [("web-1", "grpc"), ("k8s-1", "grpc"), ("k8s-7", "dial-in")]


def test_an_agent_holding_a_stream_is_asked_over_it_not_dialled(inventory: Path) -> None:
    assert chosen(inventory, "k8s-*", [(dial_in("k8s-1", env="prod"), True)]) == [("k8s-1", "dial-in")]


def test_an_agent_without_a_stream_is_dialled_when_the_inventory_has_its_address(inventory: Path) -> None:
    linked = [(dial_in("k8s-1", env="prod"), False), (dial_in("k8s-9"), False)]
    # k8s-9 is known only as a dial-in agent: it stays, to be reported offline rather than dropped.
    assert chosen(inventory, "k8s-*", linked) == [("k8s-1", "grpc"), ("k8s-9", "dial-in")]


def test_nothing_matching_is_still_an_error(inventory: Path) -> None:
    with pytest.raises(FleetError, match="no vantage matches 'db-\\*'"):
        chosen(inventory, "db-*", [(dial_in("k8s-7"), True)])


def test_no_vantage_at_all_says_where_it_looked_without_a_selector(tmp_path: Path) -> None:
    """A report without `agents`, run by a service before any agent dialled in and with an empty inventory."""
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    with pytest.raises(FleetError) as raised:
        select_vantages(inventory_path=empty, selector_text=None, include_local=False)
    message = str(raised.value)
    assert message.startswith(
        f"no vantage to probe from in inventory {empty}, nor among the agents that dial in (0 known)"
    )
    assert "None" not in message


def test_nothing_to_probe_from_says_what_left_this_machine_out(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    with pytest.raises(FleetError, match=r"--no-local leaves out this machine$"):
        select_vantages(inventory_path=empty, selector_text=None, include_local=False)
    report_says = "the report leaves out this machine (include_local = true adds it)"
    with pytest.raises(FleetError, match=r"\(include_local = true adds it\)$"):
        select_vantages(inventory_path=empty, selector_text=None, include_local=False, without_local=report_says)


def test_a_report_with_nothing_to_probe_from_names_its_own_setting(tmp_path: Path) -> None:
    from tlsfleet.coordinator.fleet.probe_slots import ProbeSlots
    from tlsfleet.coordinator.service.config import parse_config
    from tlsfleet.coordinator.service.runner import run_report

    (tmp_path / "empty.toml").write_text("")
    config = parse_config(
        {
            "coordinator": {"inventory": "empty.toml"},
            "report": [{"name": "edge", "targets": ["svc0.example.test:443"], "interval": "1h"}],
        },
        tmp_path / "coordinator.toml",
    )
    with pytest.raises(FleetError, match=r"\(include_local = true adds it\)$"):
        asyncio.run(run_report(config.reports[0], inventory=config.inventory, slots=ProbeSlots(4)))
