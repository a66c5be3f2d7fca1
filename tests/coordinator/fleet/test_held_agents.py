"""Dialled agents held between a service's requests (`HeldAgents`, what /probe uses): real agent processes,
one behind mutual TLS and one insecure, each reached through a loopback relay that counts the TCP connections
the coordinator side opens and how many are still open."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tlsfleet.coordinator.fleet.choose import select_vantages
from tlsfleet.coordinator.fleet.held_agents import HeldAgents
from tlsfleet.coordinator.fleet.inventory import InventoryError
from tlsfleet.coordinator.fleet.probe_slots import ProbeSlots
from tlsfleet.coordinator.lab.agent_process import AgentProcess, start_agent, trust_env
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer
from tlsfleet.coordinator.outcomes import VantageState
from tlsfleet.coordinator.probing import build_request, observe
from tlsfleet.coordinator.service.config import ProbeEndpointConfig
from tlsfleet.coordinator.service.metrics import HttpRequest
from tlsfleet.coordinator.service.probe_endpoint import ProbeEndpoint

from ..service.dialout_fleet import make_pki

pytestmark = pytest.mark.e2e

RETIRE_S = 2.0  # long enough that a request finishes well within it, even on a loaded machine


@dataclass
class Fleet:
    workdir: Path
    pki_dir: Path
    secure: AgentProcess  # web-1, mutual TLS
    plain: AgentProcess  # web-2, insecure
    target: str


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("held")
    pki_dir = make_pki(workdir / "pki", "web-1")
    lab = LabPKI("Held")
    bundle = write_pem(workdir / "root.pem", lab.root_pem())
    server = TlsServer(ServedIdentity.of(lab.issue_leaf("localhost"), lab.intermediate), host="127.0.0.1").start()
    started: list[AgentProcess] = []
    try:
        env = trust_env(workdir / "t1", bundle)
        started.append(start_agent("web-1", workdir, env=env, insecure=False, extra_args=["--pki-dir", str(pki_dir)]))
        started.append(start_agent("web-2", workdir, env=trust_env(workdir / "t2", bundle)))
        yield Fleet(workdir, pki_dir, started[0], started[1], f"localhost:{server.port}")
    finally:
        for agent in started:
            agent.stop()
        server.stop()


class Relay:
    """A loopback TCP relay to `upstream` that counts the connections made through it."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self._upstream = (host.strip("[]"), int(port))
        self.accepted = 0
        self.open = 0
        self.address = ""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self.address

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        self._writers |= {writer, up_writer}

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                sink.close()

        try:
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        finally:
            self.open -= 1
            self._writers -= {writer, up_writer}

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()


def write_inventory(path: Path, pki_dir: Path, agents: list[tuple[str, str, bool]]) -> None:
    text = f'[coordinator]\npki_dir = "{pki_dir}"\n'
    for name, address, insecure in agents:
        text += f'\n[[agent]]\nname = "{name}"\naddress = "{address}"\n' + ("insecure = true\n" if insecure else "")
    path.write_text(text)
    # Edits within one timestamp tick must still read as changed: a size change does, but a rewrite of the
    # same length may not on a coarse clock, so each write moves the modification time on.
    stamp = path.stat().st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


async def probe_all(held: HeldAgents, target: str) -> dict[str, VantageState]:
    fleet = select_vantages(inventory_path=None, selector_text=None, include_local=False, held=held)
    try:
        request = build_request(target, now_ns=0, timeout=10.0)
        observation = await observe(fleet.vantages, request, 10.0, slots=ProbeSlots(20))
    finally:
        await asyncio.gather(*(v.close() for v in fleet.vantages))
    return {o.vantage.name: o.state for o in observation.outcomes}


async def settle(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "the relay's connections did not settle"
        await asyncio.sleep(0.02)


def test_requests_share_one_connection_per_agent_and_edits_show_on_the_next_request(fleet: Fleet) -> None:
    async def scenario() -> None:
        one, two = Relay(fleet.secure.address), Relay(fleet.plain.address)
        inventory = fleet.workdir / "inventory.toml"
        await two.start()
        write_inventory(inventory, fleet.pki_dir, [("web-1", await one.start(), False)])
        held = HeldAgents(inventory, retire_after_s=RETIRE_S)
        try:
            for _ in range(3):
                assert await probe_all(held, fleet.target) == {"web-1": VantageState.OK}
            assert (one.accepted, one.open) == (1, 1)  # three requests, one mutual-TLS connection kept open

            # An agent added to the file is asked on the next request; the first keeps its connection.
            both = [("web-1", one.address, False), ("web-2", two.address, True)]
            write_inventory(inventory, fleet.pki_dir, both)
            assert await probe_all(held, fleet.target) == {"web-1": VantageState.OK, "web-2": VantageState.OK}
            assert (one.accepted, two.accepted) == (1, 1)

            # A rotated coordinator certificate (the same file written again): mutual-TLS agents are dialled
            # anew with it, the old connection closed once a request may no longer use it; insecure ones stay.
            certificate = fleet.pki_dir / "coordinators" / "coordinator.pem"
            certificate.write_bytes(certificate.read_bytes())
            assert await probe_all(held, fleet.target) == {"web-1": VantageState.OK, "web-2": VantageState.OK}
            assert (one.accepted, two.accepted) == (2, 1)
            await settle(lambda: one.open == 1)

            # An agent taken out of the file is no longer asked, and its connection closes after the delay.
            write_inventory(inventory, fleet.pki_dir, [("web-2", two.address, True)])
            assert await probe_all(held, fleet.target) == {"web-2": VantageState.OK}
            assert one.open == 1  # still there for requests in flight
            await settle(lambda: one.open == 0)

            # Closing the holder closes what it holds and what it was still keeping open for late requests.
            write_inventory(inventory, fleet.pki_dir, [("web-1", one.address, False)])
            assert await probe_all(held, fleet.target) == {"web-1": VantageState.OK}
            assert (one.open, two.open) == (1, 1)
        finally:
            await held.close()
        await settle(lambda: one.open == 0 and two.open == 0)
        await one.stop()
        await two.stop()

    asyncio.run(scenario())


def test_a_broken_edit_is_refused_on_every_request_until_fixed(fleet: Fleet) -> None:
    async def scenario() -> None:
        inventory = fleet.workdir / "broken.toml"
        write_inventory(inventory, fleet.pki_dir, [("web-2", fleet.plain.address, True)])
        held = HeldAgents(inventory, retire_after_s=RETIRE_S)
        try:
            assert await probe_all(held, fleet.target) == {"web-2": VantageState.OK}
            inventory.write_text(inventory.read_text() + "\n[[agent]\n")
            for _ in range(2):
                with pytest.raises(InventoryError, match=r"is not valid TOML"):
                    await probe_all(held, fleet.target)
            write_inventory(inventory, fleet.pki_dir, [("web-2", fleet.plain.address, True)])
            assert await probe_all(held, fleet.target) == {"web-2": VantageState.OK}
        finally:
            await held.close()

    asyncio.run(scenario())


def test_the_probe_endpoint_keeps_its_channels_between_scrapes_and_closes_them_with_the_service(fleet: Fleet) -> None:
    async def scenario() -> None:
        relay = Relay(fleet.secure.address)
        inventory = fleet.workdir / "endpoint.toml"
        write_inventory(inventory, fleet.pki_dir, [("web-1", await relay.start(), False)])
        endpoint = ProbeEndpoint(
            ProbeEndpointConfig(max_concurrent=2, max_timeout_s=10.0), inventory=inventory, slots=ProbeSlots(20)
        )
        query = {"target": [fleet.target], "agents": ["web-1"]}
        for _ in range(3):
            reply = await endpoint.answer(HttpRequest("GET", "/probe", query, {}))
            assert reply.status == 200, reply.body
            assert b'tlsfleet_probe_success{agent="web-1"' in reply.body
        assert (relay.accepted, relay.open) == (1, 1)
        await endpoint.close()
        await settle(lambda: relay.open == 0)
        await relay.stop()

    asyncio.run(scenario())
