"""The corpus, served by real `openssl s_server` processes (tlslite-ng ones where this host's OpenSSL will not
serve an endpoint, or not misbehave as it must) and probed by a real agent, every client offering the endpoint's
ALPN and SNI: for every endpoint in its certificate profiles, the agent's `openssl` view must be what
`openssl s_client -verify_return_error` on this host concludes (handshake outcome and verify code; the failure
state its OpenSSL reason code names, and the alert the server sent), its `python` view what Python's
`ssl.create_default_context()` concludes, each store verdict what `openssl verify` concludes with that store
alone, a client certificate request names the CAs the server was given, and the diagnosis warns exactly when
`openssl s_client` or Python's default context fails there."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tlsfleet.agent.model import (
    AddressResult,
    Client,
    ClientView,
    Failure,
    Party,
    ProbeRequest,
    ProbeResult,
    StoreVerdict,
    Verdict,
)
from tlsfleet.agent.probe.tls_messages import alert_name
from tlsfleet.agent.trust.libcrypto import security_level
from tlsfleet.agent.trust.verify import verdict_from_openssl_code
from tlsfleet.coordinator.diagnosis.engine import diagnose
from tlsfleet.coordinator.diagnosis.model import Cause, Severity
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
from tlsfleet.coordinator.lab.ground_truth import ClientTruth, VerifyTruth, openssl_verify, python_client, s_client
from tlsfleet.coordinator.observation import Observation
from tlsfleet.coordinator.outcomes import ProbeOutcome, VantageState
from tlsfleet.coordinator.probing import build_request

pytestmark = pytest.mark.e2e

CASES = [(p.name, e.name) for p in PROFILES for e in ENDPOINTS if p.name in e.profiles]


@dataclass(frozen=True)
class Observed:
    running: RunningEndpoint
    truth: ClientTruth
    python: str  # what Python's default context concludes ("ok", "verify:CODE", "handshake_failure")
    outcome: ProbeOutcome | None
    request: ProbeRequest
    error: str

    store_truths: tuple[tuple[StoreVerdict, VerifyTruth], ...] = ()  # each store verdict, and openssl verify's

    @property
    def result(self) -> ProbeResult | None:
        return self.outcome.result if self.outcome is not None else None


def _store_truths(outcome: ProbeOutcome | None, workdir: Path) -> tuple[tuple[StoreVerdict, VerifyTruth], ...]:
    """`openssl verify` of the served chain against each store the agent judged that openssl can read."""
    result = outcome.result if outcome is not None else None
    if result is None or len(result.addresses) != 1 or not result.addresses[0].chain:
        return ()
    address = result.addresses[0]
    leaf, untrusted = workdir / "served-leaf.pem", workdir / "served-untrusted.pem"
    leaf.write_text(_pem(address.chain[0]))
    untrusted.write_text("".join(_pem(der) for der in address.chain[1:]))
    stores = {s.name: s for s in result.trust_stores}
    truths = []
    for verdict in address.stores:
        store = stores[verdict.store]
        if store.kind not in ("file", "dir"):
            continue  # a Java keystore: openssl cannot read it
        truth = openssl_verify(
            leaf,
            untrusted,
            cafile=store.path if store.kind == "file" else None,
            capath=store.path if store.kind == "dir" else None,
            name=result.expected_name,
            auth_level=security_level(),
        )
        truths.append((verdict, truth))
    return tuple(truths)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str], Observed | str]]:
    """Every endpoint served at once, probed by one agent and by `openssl s_client`; unavailable ones
    map to the reason."""
    work = tmp_path_factory.mktemp("corpus")
    pkis = {p.name: CorpusPKI(p, work / p.name) for p in PROFILES}
    bundle = work / "corpus-roots.pem"
    bundle.write_bytes(b"".join(c.pem for pki in pkis.values() for c in (pki.root, *pki.extra_trusted)))
    env = {**os.environ, "SSL_CERT_FILE": str(bundle), "HOME": str(work)}
    # The host's runtime bundles would be declared in use and lack the corpus roots: leave them out.
    for variable in ("SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "JAVA_HOME"):
        env.pop(variable, None)
    observed: dict[tuple[str, str], Observed | str] = {}
    with ExitStack() as stack:
        agent = start_agent("corpus", work / "agent", env=env)
        stack.callback(agent.stop)
        running: list[RunningEndpoint] = []
        servers = {
            (p, name): serve_endpoint(next(e for e in ENDPOINTS if e.name == name), pkis[p], work / p / name)
            for p, name in CASES
        }
        # Started a few at once: each server takes its own moment to come up.
        with ThreadPoolExecutor(4) as pool:
            started = {case: pool.submit(_start, server) for case, server in servers.items()}
        failed: BaseException | None = None
        for case, future in started.items():
            try:
                entered = future.result()
            except BaseException as error:  # the others still stop when the stack unwinds
                failed = failed or error
                continue
            if isinstance(entered, EndpointUnavailable):
                observed[case] = str(entered)
            else:
                stack.push(servers[case].__exit__)
                running.append(entered)
        if failed is not None:
            raise failed
        with ThreadPoolExecutor(8) as pool:
            truths = list(pool.map(lambda r: _s_client(r, env), running))
            pythons = list(pool.map(lambda r: _python(r, str(bundle)), running))
        results = asyncio.run(_probe_all(agent.address, running))
        with ThreadPoolExecutor(8) as pool:
            verified = list(pool.map(lambda r, o: _store_truths(o[0], r.workdir), running, results))
        for r, truth, python, (outcome, request, error), stores in zip(
            running, truths, pythons, results, verified, strict=True
        ):
            observed[(r.profile.name, r.endpoint.name)] = Observed(r, truth, python, outcome, request, error, stores)
        yield observed


def _start(server: AbstractContextManager[RunningEndpoint]) -> RunningEndpoint | EndpointUnavailable:
    try:
        return server.__enter__()
    except EndpointUnavailable as why:
        return why


# Only a server that asks for a client certificate alerts after a TLS 1.3 handshake: s_client lingers there.
_NO_ALERT_LINGER_S = 0.05


def _s_client(running: RunningEndpoint, env: dict[str, str]) -> ClientTruth:
    linger = {} if running.served.client_ca is not None else {"linger": _NO_ALERT_LINGER_S}
    alpn = running.endpoint.client_alpn
    extra = ("-alpn", ",".join(alpn)) if alpn else ()
    # No -servername: s_client sends no SNI to an address (and checks no name).
    servername = running.endpoint.hostname if running.endpoint.send_sni else None
    return s_client(running.endpoint.listen, running.port, servername=servername, env=env, extra=extra, **linger)


def _python(running: RunningEndpoint, cafile: str) -> str:
    linger = {} if running.served.client_ca is not None else {"linger": _NO_ALERT_LINGER_S}
    return python_client(
        running.endpoint.listen,
        running.port,
        servername=running.endpoint.hostname if running.endpoint.send_sni else None,
        cafile=cafile,
        alpn=running.endpoint.client_alpn,
        **linger,
    )


async def _probe_all(
    address: str, running: list[RunningEndpoint]
) -> list[tuple[ProbeOutcome | None, ProbeRequest, str]]:
    vantage = GrpcVantage(AgentEntry(name="corpus", address=address, insecure=True), None)
    gate = asyncio.Semaphore(16)

    async def one(r: RunningEndpoint) -> tuple[ProbeOutcome | None, ProbeRequest, str]:
        request = build_request(
            r.target,
            now_ns=time.time_ns(),
            timeout=20.0,
            address=r.endpoint.listen,
            alpn=r.endpoint.client_alpn,
            no_sni=not r.endpoint.send_sni,
        )
        async with gate:
            outcome = await vantage.probe(request, 20.0)
        if outcome.state is not VantageState.OK or outcome.result is None:
            return None, request, f"{outcome.state}: {outcome.error}"
        return outcome, request, ""

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
def test_the_alert_the_server_sent_is_the_one_s_client_names(
    corpus: dict[tuple[str, str], Observed | str], profile: str, endpoint: str
) -> None:
    seen = observed_case(corpus, profile, endpoint)
    assert seen.result is not None
    hs = seen.result.addresses[0].handshake
    if seen.truth.alert is None:
        assert not hs.alert, (hs, seen.truth.output)
        return
    assert hs.alert == alert_name(seen.truth.alert), (hs, seen.truth.output)
    assert hs.refused_by is Party.SERVER
    assert hs.failure in (Failure.TLS_ALERT, Failure.CLIENT_CERT_REQUIRED), hs


# OpenSSL's reason codes (library SSL) for what s_client refused, and the failure the agent must report.
_ALERT_REASONS = range(1000, 1256)  # SSL_AD_REASON_OFFSET + the alert's description
_FAILURE_BY_REASON = {
    102: Failure.WEAK_KEY_EXCHANGE,  # BAD_DH_VALUE
    394: Failure.WEAK_KEY_EXCHANGE,  # DH_KEY_TOO_SMALL
    152: Failure.CERT_TOO_LARGE,  # EXCESSIVE_MESSAGE_SIZE
    267: Failure.NOT_TLS,  # WRONG_VERSION_NUMBER
    294: Failure.CLOSED,  # UNEXPECTED_EOF_WHILE_READING
    110: Failure.PROTOCOL_ERROR,  # BAD_EXTENSION
    # LEGACY_SIGALG_DISALLOWED_OR_UNSUPPORTED: a TLS 1.0/1.1 server's MD5+SHA-1 signature, below the security
    # level; the diagnosis reads it with the version the server chose.
    333: Failure.PROTOCOL_ERROR,
    258: Failure.NO_COMMON_VERSION,  # UNSUPPORTED_PROTOCOL
    191: Failure.NO_COMMON_VERSION,  # NO_PROTOCOLS_AVAILABLE
    181: Failure.NO_COMMON_CIPHER,  # NO_CIPHERS_AVAILABLE
}


@pytest.mark.parametrize(("profile", "endpoint"), CASES)
def test_a_failed_handshake_is_in_the_state_s_clients_reason_code_names(
    corpus: dict[tuple[str, str], Observed | str], profile: str, endpoint: str
) -> None:
    seen = observed_case(corpus, profile, endpoint)
    assert seen.result is not None
    view = openssl_view(seen.result.addresses[0])
    if seen.truth.outcome != "handshake_failure":
        return  # completed, or refused over the chain: the other tests hold those
    reason = seen.truth.reason
    assert reason is not None, seen.truth.output
    if reason in _ALERT_REASONS:
        expected = {Failure.TLS_ALERT, Failure.CLIENT_CERT_REQUIRED}
    else:
        assert reason in _FAILURE_BY_REASON, f"s_client's reason {reason} has no failure here: {seen.truth.output}"
        expected = {_FAILURE_BY_REASON[reason]}
    assert view.failure in expected, (view, seen.truth.output)


_ASKS_FOR_CLIENT_CERTS = [(p, e.name) for p in PROFILES for e in ENDPOINTS if e.name.startswith("client-cert-")]


@pytest.mark.parametrize(("profile", "endpoint"), [(p.name, e) for p, e in _ASKS_FOR_CLIENT_CERTS])
def test_a_client_certificate_request_names_the_cas_the_server_accepts(
    corpus: dict[tuple[str, str], Observed | str], profile: str, endpoint: str
) -> None:
    seen = observed_case(corpus, profile, endpoint)
    assert seen.result is not None and seen.running.served.client_ca is not None
    hs = seen.result.addresses[0].handshake
    accepted = seen.running.served.client_ca.cert.subject.rfc4514_string()
    assert hs.client_cert_requested and hs.acceptable_ca_names == (accepted,), hs
    if seen.running.served.client_cert_optional:
        assert hs.failure is Failure.NONE, hs
    else:
        # What the failure says, in every TLS version: the names the server asked for.
        assert hs.failure is Failure.CLIENT_CERT_REQUIRED and accepted in hs.error, hs


@pytest.mark.parametrize(("profile", "endpoint"), CASES)
def test_every_store_verdict_is_what_openssl_verify_concludes(
    corpus: dict[tuple[str, str], Observed | str], profile: str, endpoint: str
) -> None:
    seen = observed_case(corpus, profile, endpoint)
    assert seen.result is not None
    address = seen.result.addresses[0]
    if not address.chain:
        pytest.skip("no chain was served (the handshake ended first), so there is nothing to verify")
    checked = 0
    for verdict, truth in seen.store_truths:
        assert truth.code >= 0, truth.output
        assert (verdict.store, verdict.verify_code) == (verdict.store, truth.code), (truth.output, verdict)
        # The verdict names the code; a lone leaf whose issuer is unknown (20) is told apart as such.
        expected = {verdict_from_openssl_code(truth.code)}
        if truth.code == 20 and len(address.chain) == 1:
            expected.add(Verdict.LEAF_ONLY_UNVERIFIABLE)
        assert verdict.at_agent_time in expected, (truth.output, verdict)
        checked += 1
    assert checked, "no store the agent judged could be checked with openssl verify"


@pytest.mark.parametrize(("profile", "endpoint"), CASES)
def test_the_python_view_is_what_pythons_default_context_concludes(
    corpus: dict[tuple[str, str], Observed | str], profile: str, endpoint: str
) -> None:
    seen = observed_case(corpus, profile, endpoint)
    assert seen.result is not None
    address = seen.result.addresses[0]
    # The agent reports the python view only where it differs from the openssl view.
    python = next((v for v in address.views if v.client is Client.PYTHON), openssl_view(address))
    assert agent_outcome(python) == seen.python, (python, seen.python)


# Every client here accepts a name in the subject CN alone; browsers and Go do not (nor curl, beside an IP SAN), and
# the diagnosis warns.
_BROWSERS_REFUSE = frozenset({"cn-only", "cn-only-wildcard", "nc-cn-only-inside", "cn-beside-ip-san"})


@pytest.mark.parametrize(("profile", "endpoint"), CASES)
def test_a_finding_warns_exactly_when_a_client_fails(
    corpus: dict[tuple[str, str], Observed | str], profile: str, endpoint: str
) -> None:
    seen = observed_case(corpus, profile, endpoint)
    assert seen.outcome is not None
    observation = Observation(request=seen.request, outcomes=(seen.outcome,))
    loud = [f for f in diagnose(observation) if f.severity >= Severity.WARNING]
    failing = seen.truth.outcome != "ok" or seen.python != "ok" or endpoint in _BROWSERS_REFUSE
    said = [(f.severity.name, f.cause.value, f.summary) for f in loud]
    assert bool(loud) is failing, (seen.truth.outcome, seen.python, said)


@pytest.mark.parametrize(("profile", "endpoint"), CASES)
def test_a_name_s_client_refuses_is_explained_as_critical(
    corpus: dict[tuple[str, str], Observed | str], profile: str, endpoint: str
) -> None:
    seen = observed_case(corpus, profile, endpoint)
    assert seen.outcome is not None
    if seen.truth.verify_code not in (62, 64):
        return  # the name is not what s_client refused
    observation = Observation(request=seen.request, outcomes=(seen.outcome,))
    said = [f for f in diagnose(observation) if f.cause is Cause.HOSTNAME_MISMATCH]
    # The names rule's own words, not the engine's last word for a failure no rule explains.
    assert said and said[0].severity is Severity.CRITICAL, [(f.severity.name, f.summary) for f in said]
    assert "no rule explains it further" not in said[0].summary, said[0].summary


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
