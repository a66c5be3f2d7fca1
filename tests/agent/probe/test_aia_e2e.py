"""A real agent with --fetch-aia, eight probes at once whose AIA URL sends a byte per second: every probe returns
within its deadline with the AIA error stated, and a Describe asked meanwhile answers promptly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tlsfleet.agent import wire
from tlsfleet.agent.model import ProbeOptions, ProbeRequest, ProbeResult, Target
from tlsfleet.agent.probe.aia import FETCH_TIMEOUT_S
from tlsfleet.coordinator.lab.agent_process import AgentProcess, start_agent, trust_env
from tlsfleet.coordinator.lab.aia_server import AiaServer
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer
from tlsfleet.v1 import agent_pb2, agent_pb2_grpc

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NAME = "aia.policy.test"
PROBES = 8  # more than the default worker pool of a two-core host (6 threads)
DEADLINE_S = 8.0


@pytest.fixture
def setup(pki: LabPKI, tmp_path: Path) -> Iterator[tuple[AgentProcess, TlsServer]]:
    root = write_pem(tmp_path / "root.pem", pki.root_pem())
    with AiaServer() as http:
        url = http.trickle("/int.der", pki.intermediate.der, byte_interval_s=1.0)
        leaf = pki.issue_leaf(NAME, aia_ca_issuers_url=url)
        with TlsServer(ServedIdentity.of(leaf), host="127.0.0.1") as tls:
            agent = start_agent("aia", tmp_path / "agent", env=trust_env(tmp_path, root), extra_args=["--fetch-aia"])
            try:
                yield agent, tls
            finally:
                agent.stop()


def test_slow_aia_urls_neither_overrun_the_probe_nor_starve_describe(setup: tuple[AgentProcess, TlsServer]) -> None:
    agent, tls = setup
    request = wire.request_to_wire(
        ProbeRequest(Target(NAME, tls.port), ProbeOptions(pin_address="127.0.0.1", connect_timeout=2))
    )

    async def run() -> tuple[list[tuple[ProbeResult, float]], float]:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            await stub.Describe(agent_pb2.DescribeRequest(), timeout=DEADLINE_S)  # host facts gathered once

            async def timed_probe() -> tuple[ProbeResult, float]:
                started = time.monotonic()
                reply = await stub.Probe(request, timeout=DEADLINE_S)
                return wire.result_from_wire(reply)[0], time.monotonic() - started

            probes = [asyncio.create_task(timed_probe()) for _ in range(PROBES)]
            await asyncio.sleep(1.0)  # every probe is fetching, or waiting for a fetch slot
            started = time.monotonic()
            await stub.Describe(agent_pb2.DescribeRequest(), timeout=DEADLINE_S)
            describe_s = time.monotonic() - started
            return list(await asyncio.gather(*probes)), describe_s

    results, describe_s = asyncio.run(run())
    assert describe_s < DEADLINE_S / 4, f"Describe took {describe_s:.2f} s while AIA fetches ran"
    for result, seconds in results:
        [address] = result.addresses
        assert address.aia is not None and not address.aia.fetched
        assert "not fetched: the fetch's deadline" in address.aia.error, address.aia.error
        assert seconds < FETCH_TIMEOUT_S + 3.0, f"a probe took {seconds:.1f} s"
