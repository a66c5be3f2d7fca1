"""`tlsfleet probe --agents` with a name that is no vantage's is an error naming the close ones."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tlsfleet.coordinator.fleet.choose import select_vantages
from tlsfleet.coordinator.fleet.selector import SelectorError


def _names(inventory: Path, selector: str, *, local: bool, must_exist: bool) -> list[str]:
    async def choose() -> list[str]:
        # Channels belong to an event loop: the vantages are built and closed inside one.
        chosen = select_vantages(
            inventory_path=inventory, selector_text=selector, include_local=local, names_must_exist=must_exist
        )
        await asyncio.gather(*(v.close() for v in chosen.vantages))
        return [v.info.name for v in chosen.vantages]

    return asyncio.run(choose())


def test_a_typo_in_a_name_is_refused_with_the_close_names(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.toml"
    inventory.write_text('[[agent]]\nname = "edge-1"\naddress = "127.0.0.1:7441"\ninsecure = true\n')
    with pytest.raises(
        SelectorError, match=r"selector term 'edge-l' matches no vantage in inventory .*close names: edge-1"
    ):
        _names(inventory, "edge-l", local=False, must_exist=True)
    assert _names(inventory, "edge-*,local", local=True, must_exist=True) == ["local", "edge-1"]
    # Without the check (a schedule whose agents may dial in later), the name simply matches nothing yet.
    assert _names(inventory, "edge-1,edge-9", local=False, must_exist=False) == ["edge-1"]


@pytest.mark.parametrize(("local", "engine_loaded"), [(False, False), (True, True)])
def test_the_probe_engine_loads_only_where_this_machine_probes(
    tmp_path: Path, local: bool, engine_loaded: bool
) -> None:
    """A fleet of agents alone (a scheduled report) does not pay for the local probe engine's start-up."""
    import subprocess
    import sys

    inventory = tmp_path / "inventory.toml"
    inventory.write_text('[[agent]]\nname = "edge-1"\naddress = "127.0.0.1:7441"\ninsecure = true\n')
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from tests.coordinator.fleet.test_choose_names import _names\n"
        f"print(_names(Path({str(inventory)!r}), None, local={local}, must_exist=False))\n"
        "print('tlsfleet.agent.probe.engine' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    names, loaded = done.stdout.splitlines()
    assert names == str(["local", "edge-1"] if local else ["edge-1"])
    assert loaded == str(engine_loaded), done.stderr
