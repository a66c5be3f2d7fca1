"""The corpus, served by real `openssl s_server` processes (tlslite-ng ones where this host's OpenSSL will not
serve an endpoint) and probed by a real agent: for every endpoint in both certificate profiles, the agent's
`openssl` view must be what `openssl s_client -verify_return_error` on this host concludes (handshake outcome
and verify code), and each store verdict what `openssl verify` concludes with that store alone."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tlsfleet.agent.model import AddressResult, Client, ClientView, Failure, ProbeResult, Verdict
from tlsfleet.agent.trust.libcrypto import security_level
from tlsfleet.agent.trust.verify import verdict_from_openssl_code
from tlsfleet.coordinator.fleet.grpc_vantage import GrpcVantage
from tlsfleet.coordinator.fleet.inventory import AgentEntry
from tlsfleet.coordinator.lab.agent_process import start_agent
from tlsfleet.coordinator.lab.corpus import (
    ENDPOINTS,
    PROFILES,
    CorpusPKI,
    EndpointUnavailable,
    RunningEndpoint,
    serve_endpoint,
)
from tlsfleet.coordinator.lab.ground_truth import ClientTruth, openssl_verify, s_client
from tlsfleet.coordinator.outcomes import VantageState
from tlsfleet.coordinator.probing import build_request

pytestmark = pytest.mark.e2e

CASES = [(p.name, e.name) for p in PROFILES for e in ENDPOINTS if p.name in e.profiles]


@dataclass(frozen=True)
class Observed:
    running: RunningEndpoint
    truth: ClientTruth
    result: ProbeResult | None
    error: str


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str], Observed | str]]:
    """Every endpoint served at once, probed by one agent and by `openssl s_client`; unavailable ones
    map to the reason."""
    work = tmp_path_factory.mktemp("corpus")
    pkis = {p.name: CorpusPKI(p, work / p.name) for p in PROFILES}
    bundle = work / "corpus-roots.pem"
    bundle.write_bytes(b"".join(pki.root.pem for pki in pkis.values()))
    env = {**os.environ, "SSL_CERT_FILE": str(bundle), "HOME": str(work)}
    env.pop("SSL_CERT_DIR", None)
    observed: dict[tuple[str, str], Observed | str] = {}
    with ExitStack() as stack:
        agent = start_agent("corpus", work / "agent", env=env)
        stack.callback(agent.stop)
        running: list[RunningEndpoint] = []
        for profile_name, endpoint_name in CASES:
            endpoint = next(e for e in ENDPOINTS if e.name == endpoint_name)
            try:
                running.append(
                    stack.enter_context(
                        serve_endpoint(endpoint, pkis[profile_name], work / profile_name / endpoint_name)
                    )
                )
            except EndpointUnavailable as why:
                observed[(profile_name, endpoint_name)] = str(why)
        with ThreadPoolExecutor(8) as pool:
            truths = list(
                pool.map(lambda r: s_client("127.0.0.1", r.port, servername=r.endpoint.hostname, env=env), running)
            )
        results = asyncio.run(_probe_all(agent.address, running))
        for r, truth, (result, error) in zip(running, truths, results, strict=True):
            observed[(r.profile.name, r.endpoint.name)] = Observed(r, truth, result, error)
        yield observed


async def _probe_all(address: str, running: list[RunningEndpoint]) -> list[tuple[ProbeResult | None, str]]:
    vantage = GrpcVantage(AgentEntry(name="corpus", address=address, insecure=True), None)
    gate = asyncio.Semaphore(16)

    async def one(r: RunningEndpoint) -> tuple[ProbeResult | None, str]:
        request = build_request(r.target, now_ns=time.time_ns(), timeout=20.0, address="127.0.0.1")
        async with gate:
            outcome = await vantage.probe(request, 20.0)
        if outcome.state is not VantageState.OK or outcome.result is None:
            return None, f"{outcome.state}: {outcome.error}"
        return outcome.result, ""

    try:
        return await asyncio.gather(*(one(r) for r in running))
    finally:
        await vantage.close()


def openssl_view(address: AddressResult) -> ClientView:
    """The agent's `openssl` view (the native verdict, for an agent that reports no views)."""
    for view in address.views:
        if view.client is Client.OPENSSL:
            return view
    h, n = address.handshake, address.native
    return ClientView(Client.OPENSSL, n.verdict, n.verify_code, h.failure, h.error, h.tls_version, h.cipher)


def agent_outcome(view: ClientView) -> str:
    if view.failure is Failure.NONE and view.verdict is Verdict.OK:
        return "ok"
    if view.failure is Failure.CERT_VERIFY or (view.failure is Failure.NONE and view.verify_code):
        return f"verify:{view.verify_code}"
    return "handshake_failure"


def observed_case(corpus: dict[tuple[str, str], Observed | str], profile: str, endpoint: str) -> Observed:
    seen = corpus[(profile, endpoint)]
    if isinstance(seen, str):
        pytest.skip(seen)
    assert seen.result is not None, seen.error
    assert len(seen.result.addresses) == 1
    return seen


@pytest.mark.parametrize(("profile", "endpoint"), CASES)
def test_the_openssl_view_is_what_s_client_concludes(
    corpus: dict[tuple[str, str], Observed | str], profile: str, endpoint: str
) -> None:
    seen = observed_case(corpus, profile, endpoint)
    assert seen.result is not None
    view = openssl_view(seen.result.addresses[0])
    assert agent_outcome(view) == seen.truth.outcome, (view, seen.truth.output)
    if seen.truth.connected:
        assert (view.tls_version, view.cipher) == (seen.truth.protocol, seen.truth.cipher)


@pytest.mark.parametrize(("profile", "endpoint"), CASES)
def test_every_store_verdict_is_what_openssl_verify_concludes(
    corpus: dict[tuple[str, str], Observed | str], profile: str, endpoint: str, tmp_path: Path
) -> None:
    seen = observed_case(corpus, profile, endpoint)
    assert seen.result is not None
    address = seen.result.addresses[0]
    if not address.chain:
        pytest.skip("no chain was served (the handshake ended first), so there is nothing to verify")
    leaf, untrusted = tmp_path / "leaf.pem", tmp_path / "untrusted.pem"
    leaf.write_text(_pem(address.chain[0]))
    untrusted.write_text("".join(_pem(der) for der in address.chain[1:]))
    stores = {s.name: s for s in seen.result.trust_stores}
    checked = 0
    for verdict in address.stores:
        store = stores[verdict.store]
        if store.kind not in ("file", "dir"):
            continue  # a Java keystore: openssl cannot read it
        truth = openssl_verify(
            leaf,
            untrusted,
            cafile=store.path if store.kind == "file" else None,
            capath=store.path if store.kind == "dir" else None,
            name=seen.result.expected_name,
            auth_level=security_level(),
        )
        assert truth.code >= 0, truth.output
        assert (verdict.store, verdict.verify_code) == (verdict.store, truth.code), (truth.output, verdict)
        # The verdict names the code; a lone leaf whose issuer is unknown (20) is told apart as such.
        expected = {verdict_from_openssl_code(truth.code)}
        if truth.code == 20 and len(address.chain) == 1:
            expected.add(Verdict.LEAF_ONLY_UNVERIFIABLE)
        assert verdict.at_agent_time in expected, (truth.output, verdict)
        checked += 1
    assert checked, "no store the agent judged could be checked with openssl verify"


def test_the_corpus_is_wide_enough(corpus: dict[tuple[str, str], Observed | str]) -> None:
    served = [k for k, v in corpus.items() if not isinstance(v, str)]
    families = {next(e.family for e in ENDPOINTS if e.name == name) for _, name in served}
    assert len(served) >= 80 and len({name for _, name in served}) >= 40
    assert families == {"certificate", "client-certificate", "protocol", "key-exchange", "cipher"}


def _pem(der: bytes) -> str:
    import base64
    import textwrap

    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"
