"""A real agent process honours the OpenSSL policy it was started with: OPENSSL_CONF at security level 3
makes its openssl view refuse an RSA-2048 leaf, as `openssl s_client` does there, while its python view
(Python's own @SECLEVEL=2) accepts it; an agent without that policy accepts it in one view. The local
vantage of `tlsfleet probe` behaves the same."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tests.agent.probe.openssl_lab import Lab, needs_openssl, policy_file, rsa_leaf, s_client
from tlsfleet.agent import wire
from tlsfleet.agent.model import (
    AddressResult,
    Client,
    Failure,
    HostFacts,
    ProbeOptions,
    ProbeRequest,
    Target,
    Verdict,
)
from tlsfleet.coordinator.lab.agent_process import AgentProcess, start_agent, tlsfleet_command, trust_env
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.v1 import agent_pb2, agent_pb2_grpc

pytestmark = [pytest.mark.e2e, needs_openssl]


@dataclass
class Fleet:
    lab: Lab
    port: int
    strict: AgentProcess
    default: AgentProcess
    strict_conf: Path


@pytest.fixture
def fleet(pki: LabPKI, tmp_path: Path) -> Iterator[Fleet]:
    lab = Lab(tmp_path, pki)
    agents: list[AgentProcess] = []
    try:
        server = lab.s_server(rsa_leaf(pki, "rsa.test"))
        conf = policy_file(tmp_path, "seclevel3", "CipherString = DEFAULT:@SECLEVEL=3")
        strict_env = trust_env(tmp_path, lab.root)
        strict_env["OPENSSL_CONF"] = str(conf)
        default_env = {k: v for k, v in trust_env(tmp_path, lab.root).items() if k != "OPENSSL_CONF"}
        agents.append(start_agent("strict", tmp_path / "strict", env=strict_env))
        agents.append(start_agent("default", tmp_path / "default", env=default_env))
        yield Fleet(lab, server.port, agents[0], agents[1], conf)
    finally:
        for agent in agents:
            agent.stop()
        lab.stop()


def ask(agent: AgentProcess, port: int) -> tuple[AddressResult, HostFacts]:
    async def call() -> tuple[AddressResult, HostFacts]:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            request = ProbeRequest(Target("rsa.test", port), ProbeOptions(pin_address="127.0.0.1"))
            reply = await stub.Probe(wire.request_to_wire(request), timeout=20)
            described = await stub.Describe(agent_pb2.DescribeRequest(), timeout=20)
        result, _, _ = wire.result_from_wire(reply)
        return result.addresses[0], wire.description_from_wire(described).facts

    return asyncio.run(call())


def test_an_agent_started_at_seclevel_3_refuses_what_pythons_default_accepts(fleet: Fleet) -> None:
    strict_truth = s_client(fleet.port, "rsa.test", fleet.lab.root, config=fleet.strict_conf)
    assert not strict_truth.ok and strict_truth.verify_code == 66, strict_truth.output
    assert s_client(fleet.port, "rsa.test", fleet.lab.root).ok

    strict, strict_facts = ask(fleet.strict, fleet.port)
    assert strict.native.verdict is Verdict.INVALID and strict.native.verify_code == strict_truth.verify_code
    assert strict.handshake.failure is Failure.CERT_VERIFY
    openssl, python = strict.views
    assert (openssl.client, openssl.verify_code) == (Client.OPENSSL, 66)
    assert (python.client, python.failure, python.verdict) == (Client.PYTHON, Failure.NONE, Verdict.OK)
    policy = dict(strict_facts.openssl_policy)
    assert policy["SecurityLevel"] == "3" and policy["config_file"] == str(fleet.strict_conf)

    default, default_facts = ask(fleet.default, fleet.port)
    assert default.native.verdict is Verdict.OK and default.handshake.failure is Failure.NONE
    assert [v.client for v in default.views] == [Client.OPENSSL]
    assert dict(default_facts.openssl_policy)["SecurityLevel"] == "2"


def test_the_local_vantage_honours_the_policy_it_runs_under(fleet: Fleet, tmp_path: Path) -> None:
    inventory = tmp_path / "empty-inventory.toml"
    inventory.write_text("")
    env = trust_env(tmp_path, fleet.lab.root)
    env["OPENSSL_CONF"] = str(fleet.strict_conf)
    done = subprocess.run(
        [
            *tlsfleet_command(),
            "probe",
            f"127.0.0.1:{fleet.port}",
            "--sni",
            "rsa.test",
            "--inventory",
            str(inventory),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    [vantage] = json.loads(done.stdout)["vantages"]
    [address] = vantage["result"]["addresses"]
    assert address["native"]["verify_code"] == 66
    assert [(v["client"], v["verify_code"]) for v in address["views"]] == [("openssl", 66), ("python", 0)]


# (policy directives, s_server options, does the policy let an OpenSSL client through?)
POLICIES = {
    "min-tls13-vs-tls12-server": (("MinProtocol = TLSv1.3",), ("-tls1_2",), False),
    "min-tls13-vs-tls13-server": (("MinProtocol = TLSv1.3",), ("-tls1_3",), True),
    "max-tls12-vs-tls13-server": (("MaxProtocol = TLSv1.2",), ("-tls1_3",), False),
    "max-tls12-vs-either": (("MaxProtocol = TLSv1.2",), (), True),
    "seclevel0-vs-rsa1024-leaf": (("CipherString = DEFAULT:@SECLEVEL=0",), ("-cipher", "DEFAULT:@SECLEVEL=0"), True),
}


@pytest.mark.parametrize("case", sorted(POLICIES))
def test_a_real_agent_under_each_policy_agrees_with_s_client_under_it(case: str, pki: LabPKI, tmp_path: Path) -> None:
    directives, server_args, lets_through = POLICIES[case]
    lab = Lab(tmp_path, pki)
    agent: AgentProcess | None = None
    try:
        bits = 1024 if "rsa1024" in case else 2048
        server = lab.s_server(rsa_leaf(pki, "rsa.test", bits=bits), *server_args)
        conf = policy_file(tmp_path, case, *directives)
        truth = s_client(server.port, "rsa.test", lab.root, config=conf)
        assert truth.ok is lets_through, truth.output
        env = trust_env(tmp_path, lab.root)
        env["OPENSSL_CONF"] = str(conf)
        agent = start_agent("policy", tmp_path / "agent", env=env)
        address, _ = ask(agent, server.port)
    finally:
        if agent is not None:
            agent.stop()
        lab.stop()
    openssl = address.views[0]
    assert openssl.client is Client.OPENSSL
    completed = openssl.failure is Failure.NONE and openssl.verdict is Verdict.OK
    assert completed is lets_through, (address.handshake, openssl, truth.output)
    if not lets_through:
        assert address.handshake.failure is not Failure.NONE
    if "rsa1024" in case:
        # The default security level refuses that key (66); at level 0 the host's OpenSSL clients accept it,
        # while Python's own @SECLEVEL=2 still refuses: the python view says so.
        assert [v.client for v in address.views] == [Client.OPENSSL, Client.PYTHON]
        assert address.views[1].verify_code == 66


def test_the_diagnosis_of_a_host_minimum_above_the_servers_maximum_blames_the_host_policy(
    pki: LabPKI, tmp_path: Path
) -> None:
    """MinProtocol = TLSv1.3 on the host, a TLS 1.2 server: `openssl s_client` and curl there fail, Python's
    default context connects. The findings say so and name MinProtocol; none asks the server to accept what
    current clients offer, which it already does."""
    lab = Lab(tmp_path, pki)
    try:
        server = lab.s_server(rsa_leaf(pki, "rsa.test"), "-no_tls1_3")
        conf = policy_file(tmp_path, "min13", "MinProtocol = TLSv1.3")
        truth = s_client(server.port, "rsa.test", lab.root, config=conf)
        assert not truth.ok and truth.verify_code == 0, truth.output
        assert s_client(server.port, "rsa.test", lab.root).ok
        inventory = tmp_path / "empty-inventory.toml"
        inventory.write_text("")
        env = trust_env(tmp_path, lab.root)
        env["OPENSSL_CONF"] = str(conf)
        command = [*tlsfleet_command(), "probe", f"127.0.0.1:{server.port}", "--sni", "rsa.test"]
        done = subprocess.run(
            [*command, "--inventory", str(inventory), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
    finally:
        lab.stop()
    assert "Traceback" not in done.stderr, done.stderr
    report = json.loads(done.stdout)
    [vantage] = report["vantages"]
    [address] = vantage["result"]["addresses"]
    assert [(v["client"], v["failure"]) for v in address["views"]] == [("openssl", "tls_alert"), ("python", "none")]
    by_cause = {f["cause"]: f for f in report["findings"]}
    top = report["findings"][0]
    assert top["cause"] == "protocol_mismatch" and top["severity"] == "critical", top
    assert "MinProtocol" in top["fix"] and "Make the server accept" not in top["fix"], top["fix"]
    views = by_cause["client_views_differ"]
    assert "Lower MinProtocol to TLSv1.2" in views["fix"], views["fix"]
    assert "Python's default context refuses versions below" not in views["fix"]
