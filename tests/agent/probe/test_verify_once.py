"""The openssl view's handshake runs without OpenSSL verifying the chain inside it; the chain is judged
once, offline, with the classic context's own store and parameters. Every result must be the one the
classic CERT_REQUIRED handshake gives: the same outcome, verify code, message, version, cipher and what the
client had seen of the server's messages, with one connection per probe."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.agent.probe.openssl_lab import Lab, probe, write_client_cert
from tlsfleet.agent.model import (
    AddressResult,
    Client,
    Failure,
    Handshake,
    ProbeOptions,
    ProbeRequest,
    Target,
    Verdict,
)
from tlsfleet.agent.probe.engine import ProbeEngine
from tlsfleet.agent.probe.handshake import ContextCache, VerifyOnce
from tlsfleet.agent.probe.openssl_policy import python_default_policy
from tlsfleet.coordinator.lab.corpus import (
    ENDPOINTS,
    PROFILES,
    CorpusPKI,
    EndpointUnavailable,
    RunningEndpoint,
    serve_endpoint,
)
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer


def comparable(result: AddressResult) -> AddressResult:
    """A result without its timings, which two runs never share."""
    return replace(result, connect_ms=None, handshake=replace(result.handshake, duration_ms=0.0))


def classic(monkeypatch: pytest.MonkeyPatch) -> None:
    """The handshake as it was: CERT_REQUIRED, OpenSSL verifying inside it."""
    monkeypatch.setattr(ContextCache, "verify_once", lambda *args, **kwargs: None)


def test_the_twin_context_loads_no_store_and_checks_nothing(lab: Lab) -> None:
    cache = ContextCache(cafile=str(lab.root))
    ours = cache.get(verify=True, check_hostname=True)
    once = cache.verify_once(ours, "svc.test", verify=True, check_hostname=True)
    assert isinstance(once, VerifyOnce)
    assert once.context.cert_store_stats()["x509"] == 0, "the twin loads no trust store"
    assert (once.context.verify_mode, once.context.check_hostname) == (ssl.CERT_NONE, False)
    assert once.context.security_level == ours.security_level
    assert (once.check.host, once.check.security_level) == ("svc.test", ours.security_level)
    assert ours.cert_store_stats()["x509"] == 1 and ours.verify_mode == ssl.CERT_REQUIRED
    assert cache.with_store(ours).cert_store_stats()["x509"] == 1, "an explicit bundle is read once, at once"


def test_the_system_store_is_read_in_only_for_a_handshake_that_verifies_with_it(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(lab.root))
    monkeypatch.setenv("SSL_CERT_DIR", os.devnull)
    cache = ContextCache()
    ours = cache.get(verify=True, check_hostname=True, client=Client.PYTHON)  # as Python's default context
    default = ssl.create_default_context()
    assert ours.cert_store_stats()["x509"] == 0
    assert (ours.verify_mode, ours.check_hostname, ours.verify_flags, ours.options) == (
        default.verify_mode,
        default.check_hostname,
        default.verify_flags,
        default.options,
    )
    assert cache.with_store(ours) is ours and ours.cert_store_stats() == default.cert_store_stats()
    assert cache.with_store(ours).cert_store_stats()["x509"] == 1, "read once"


def test_not_with_a_client_certificate(lab: Lab, tmp_path: Path) -> None:
    """OpenSSL builds the chain a client sends from its trust store, so a twin without one would send less."""
    certificate = write_client_cert(tmp_path, lab.pki, "client")
    cache = ContextCache(cafile=str(lab.root))
    ours = cache.get(verify=True, check_hostname=True, client_cert=certificate)
    assert cache.verify_once(ours, "svc.test", verify=True, check_hostname=True, client_cert=certificate) is None


@pytest.mark.parametrize(
    "directive", [("VerifyCAFile", "/etc/other.pem"), ("ChainCAPath", "/etc/chain"), ("CipherString", "SUITEB128")]
)
def test_not_where_the_openssl_configuration_changes_what_a_context_verifies(
    lab: Lab, directive: tuple[str, str]
) -> None:
    """A verify store of the configuration's own, or Suite B flags: X509_verify_cert on the context's store
    would not be what the handshake runs."""
    policy = replace(python_default_policy(), directives=(directive,))
    cache = ContextCache(cafile=str(lab.root), policy=policy)
    ours = cache.get(verify=True, check_hostname=True)
    assert cache.verify_once(ours, "svc.test", verify=True, check_hostname=True) is None
    plain = ContextCache(cafile=str(lab.root), policy=replace(policy, directives=()))
    assert plain.verify_once(plain.get(verify=True, check_hostname=True), "svc.test", verify=True, check_hostname=True)


CASES = {
    "trusted": ("svc.test", {}),
    "another name": ("other.test", {}),
    "expired": (
        "svc.test",
        {"not_before": datetime.now(UTC) - timedelta(days=9), "not_after": datetime.now(UTC) - timedelta(days=1)},
    ),
    "not yet valid": (
        "svc.test",
        {"not_before": datetime.now(UTC) + timedelta(days=1), "not_after": datetime.now(UTC) + timedelta(days=9)},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("tls", ["-tls1_3", "-tls1_2"])
def test_the_result_is_the_classic_handshakes(
    lab: Lab, pki: LabPKI, monkeypatch: pytest.MonkeyPatch, case: str, tls: str
) -> None:
    name, dates = CASES[case]
    server = lab.s_server(pki.issue_leaf("svc.test", **dates), tls)
    cache = ContextCache(cafile=str(lab.root))
    deferred = probe(lab, server.port, name, cache=cache)
    assert any(key.deferred for key in cache._contexts), "the twin context ran the handshake"
    classic(monkeypatch)
    expected = probe(lab, server.port, name, cache=ContextCache(cafile=str(lab.root)))
    assert comparable(deferred) == comparable(expected)


@pytest.mark.parametrize(
    ("served", "verdict", "code"),
    [
        ("leaf only", Verdict.UNKNOWN_ISSUER, 20),
        ("untrusted root", Verdict.UNKNOWN_ISSUER, 20),
        ("self-signed leaf", Verdict.SELF_SIGNED, 18),
    ],
)
def test_refused_chains_read_as_the_classic_client_reports_them(
    lab: Lab, pki: LabPKI, monkeypatch: pytest.MonkeyPatch, served: str, verdict: Verdict, code: int
) -> None:
    other = LabPKI("Other")
    if served == "leaf only":
        server = lab.s_server(pki.issue_leaf("svc.test"), chain=())
    elif served == "untrusted root":
        server = lab.s_server(other.issue_leaf("svc.test"), chain=(other.intermediate,))
    else:
        server = lab.s_server(other.self_signed_leaf("svc.test"), chain=())
    deferred = probe(lab, server.port, "svc.test", cache=ContextCache(cafile=str(lab.root)))
    classic(monkeypatch)
    expected = probe(lab, server.port, "svc.test", cache=ContextCache(cafile=str(lab.root)))
    assert comparable(deferred) == comparable(expected)
    assert (deferred.native.verdict, deferred.native.verify_code) == (verdict, code)


def test_an_ip_literal_is_checked_as_an_address(lab: Lab, pki: LabPKI, monkeypatch: pytest.MonkeyPatch) -> None:
    server = lab.s_server(pki.issue_leaf("svc.test", "127.0.0.2"))
    deferred = probe(lab, server.port, "127.0.0.1", cache=ContextCache(cafile=str(lab.root)))
    assert (deferred.native.verify_code, deferred.handshake.failure) == (64, Failure.CERT_VERIFY)
    assert deferred.handshake.error.endswith("IP address mismatch, certificate is not valid for '127.0.0.1'. (code 64)")
    classic(monkeypatch)
    expected = probe(lab, server.port, "127.0.0.1", cache=ContextCache(cafile=str(lab.root)))
    assert comparable(deferred) == comparable(expected)


def test_a_client_that_refuses_the_chain_never_sees_the_later_certificate_request(
    lab: Lab, pki: LabPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TLS 1.2 sends CertificateRequest after Certificate: the classic client stops before reading it."""
    server = lab.s_server(pki.issue_leaf("svc.test"), "-tls1_2", "-verify", "1")
    deferred = probe(lab, server.port, "other.test", cache=ContextCache(cafile=str(lab.root)))
    assert deferred.handshake.failure is Failure.CERT_VERIFY
    assert deferred.handshake.client_cert_requested is False
    classic(monkeypatch)
    expected = probe(lab, server.port, "other.test", cache=ContextCache(cafile=str(lab.root)))
    assert comparable(deferred) == comparable(expected)


def test_one_connection_for_an_accepted_and_for_a_refused_chain(pki: LabPKI, lab: Lab) -> None:
    leaf = pki.issue_leaf("count.test")
    server = TlsServer(ServedIdentity.of(leaf, pki.intermediate)).start()
    try:
        cache = ContextCache(cafile=str(lab.root))
        for name, failure in (("count.test", Failure.NONE), ("other.test", Failure.CERT_VERIFY)):
            before = server.accepted
            result = probe(lab, server.port, name, cache=cache)
            assert result.handshake.failure is failure
            assert server.accepted - before == 1
            assert [v.client for v in result.views] == [Client.OPENSSL]
    finally:
        server.stop()


def test_an_accepted_chain_is_judged_once_per_hour(pki: LabPKI, lab: Lab) -> None:
    leaf = pki.issue_leaf("count.test")
    server = TlsServer(ServedIdentity.of(leaf, pki.intermediate)).start()
    try:
        cache = ContextCache(cafile=str(lab.root))
        first = probe(lab, server.port, "count.test", cache=cache)
        assert isinstance(first.handshake, Handshake) and first.handshake.failure is Failure.NONE
        assert len(cache._verifier._accepted) == 1
        probe(lab, server.port, "count.test", cache=cache)
        assert len(cache._verifier._accepted) == 1, "the second probe met the cached acceptance"
        cache.clear()
        assert len(cache._verifier._accepted) == 0, "a cleared cache reads the stores anew"
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("store", ["cafile", "default verify paths"])
def test_every_corpus_endpoint_gives_the_classic_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str
) -> None:
    """The corpus (about 50 endpoints in two certificate profiles: missing and wrong intermediates, weak keys
    and digests, names, dates, constraints, versions and ciphers), probed with the twin and classically."""
    pkis = {p.name: CorpusPKI(p, tmp_path / p.name) for p in PROFILES}
    bundle = tmp_path / "roots.pem"
    bundle.write_bytes(b"".join(pki.root.pem for pki in pkis.values()))
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setenv("SSL_CERT_DIR", str(empty))
    native = str(bundle) if store == "cafile" else None
    with ExitStack() as stack:
        running: list[RunningEndpoint] = []
        for profile in PROFILES:
            for endpoint in ENDPOINTS:
                if profile.name not in endpoint.profiles:
                    continue
                with contextlib.suppress(EndpointUnavailable):
                    running.append(
                        stack.enter_context(
                            serve_endpoint(endpoint, pkis[profile.name], tmp_path / profile.name / endpoint.name)
                        )
                    )
        assert len(running) > 40
        deferred = asyncio.run(_probe_corpus(ProbeEngine(native_cafile=native), running))
        with monkeypatch.context() as patched:
            classic(patched)
            expected = asyncio.run(_probe_corpus(ProbeEngine(native_cafile=native), running))
    for r, got, want in zip(running, deferred, expected, strict=True):
        assert comparable(got) == comparable(want), (r.profile.name, r.endpoint.name)


async def _probe_corpus(engine: ProbeEngine, running: list[RunningEndpoint]) -> list[AddressResult]:
    gate = asyncio.Semaphore(16)

    async def one(r: RunningEndpoint) -> AddressResult:
        options = ProbeOptions(pin_address="127.0.0.1", connect_timeout=5.0, handshake_timeout=10.0)
        async with gate:
            result = await engine.probe(ProbeRequest(Target(r.endpoint.hostname, r.port), options))
        [address] = result.addresses
        return address

    return list(await asyncio.gather(*(one(r) for r in running)))
