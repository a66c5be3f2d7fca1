"""The probe engine end to end: real servers on 127.0.0.x, real trust stores, real handshakes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from tlsfleet.agent.model import (
    Failure,
    ProbeOptions,
    ProbeRequest,
    ProbeResult,
    Resolution,
    StoreVerdict,
    Target,
    Verdict,
    per_store,
)
from tlsfleet.agent.probe.engine import ProbeEngine
from tlsfleet.agent.probe.request_limits import RequestError
from tlsfleet.agent.probe.resolve import resolve
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer

DAY_NS = 86_400 * 10**9


@pytest.fixture(scope="module")
def root_file(pki: LabPKI, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pem(tmp_path_factory.mktemp("engine-roots") / "lab-root.pem", pki.root.cert_pem)


@pytest.fixture
def engine(root_file: Path) -> ProbeEngine:
    """Native client and an extra store both trust the lab root; no SSL_* variables from this process."""
    return ProbeEngine(extra_stores={"lab": root_file}, environ={}, native_cafile=str(root_file))


@pytest.fixture
def servers() -> Iterator[list[TlsServer]]:
    started: list[TlsServer] = []
    yield started
    for server in started:
        server.stop()


def start(started: list[TlsServer], server: TlsServer) -> TlsServer:
    started.append(server)
    return server.start()


def probe(engine: ProbeEngine, target: Target, **options: object) -> ProbeResult:
    return asyncio.run(engine.probe(ProbeRequest(target, ProbeOptions(**options), request_id="t-1")))


def store(result: ProbeResult, name: str, index: int = 0) -> StoreVerdict:
    by_name = {s.store: s for s in result.addresses[index].stores}
    assert name in by_name, sorted(by_name)
    return by_name[name]


def test_probe_an_ip_target_judges_every_store(pki: LabPKI, engine: ProbeEngine, servers: list[TlsServer]) -> None:
    leaf = pki.issue_leaf("engine.test", "127.0.0.1")
    server = start(servers, TlsServer(ServedIdentity.of(leaf, pki.intermediate)))
    before = time.time_ns()
    result = probe(engine, Target("127.0.0.1", server.port))
    assert result.sni is None  # no SNI for an IP literal
    assert result.expected_name == "127.0.0.1"
    assert result.resolution.addresses == ("127.0.0.1",)
    assert result.request_id == "t-1"
    assert before <= result.agent_received_ns <= result.agent_replied_ns <= time.time_ns()
    (address,) = result.addresses
    assert address.handshake.failure is Failure.NONE
    assert address.native.verdict is Verdict.OK and address.native.hostname_checked
    assert address.chain == (leaf.der, pki.intermediate.der)
    names = [s.name for s in result.trust_stores]
    # One verdict per distinct root set (system_dir holds the system bundle's roots): every store is named.
    assert "extra:lab" in names and sorted(s.store for s in per_store(address.stores)) == sorted(names)
    lab = store(result, "extra:lab")
    assert lab.at_agent_time is Verdict.OK and lab.at_reference_time is Verdict.OK
    assert len(lab.verified_path) == 3
    # The host's own stores do not hold the lab root.
    assert store(result, "system").at_agent_time is Verdict.UNKNOWN_ISSUER


def test_reference_time_shows_what_the_agent_clock_hides(
    pki: LabPKI, engine: ProbeEngine, servers: list[TlsServer]
) -> None:
    leaf = pki.issue_leaf("127.0.0.1")  # valid for 90 days
    server = start(servers, TlsServer(ServedIdentity.of(leaf, pki.intermediate)))
    reference = time.time_ns() + 100 * DAY_NS
    result = probe(engine, Target("127.0.0.1", server.port), reference_time_ns=reference)
    assert result.reference_time_ns == reference
    lab = store(result, "extra:lab")
    assert lab.at_agent_time is Verdict.OK
    assert lab.at_reference_time is Verdict.EXPIRED


def test_name_target_sends_sni_and_checks_it(pki: LabPKI, engine: ProbeEngine, servers: list[TlsServer]) -> None:
    good, other = pki.issue_leaf("named.test"), pki.issue_leaf("elsewhere.test")
    server = start(
        servers,
        TlsServer(
            ServedIdentity.of(other, pki.intermediate),
            by_sni={"named.test": ServedIdentity.of(good, pki.intermediate)},
        ),
    )
    result = probe(engine, Target("named.test", server.port), pin_address="127.0.0.1")
    assert result.sni == "named.test" and result.expected_name == "named.test"
    assert result.resolution.addresses == ("127.0.0.1",)
    assert result.addresses[0].chain[0] == good.der
    assert result.addresses[0].native.verdict is Verdict.OK


def test_a_name_asked_with_a_trailing_dot_is_sent_and_checked_with_it(
    pki: LabPKI, engine: ProbeEngine, tmp_path: Path
) -> None:
    """As openssl s_client and Python do: SNI "named.test." and a hostname mismatch (62) against a leaf for
    named.test, in the native verdict and in every store verdict (as `openssl verify -verify_hostname`)."""
    import ssl
    import threading

    leaf = pki.issue_leaf("named.test")
    cert, key = tmp_path / "leaf.pem", tmp_path / "leaf.key"
    cert.write_bytes(leaf.cert_pem + pki.intermediate.cert_pem)
    key.write_bytes(leaf.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    seen: list[str | None] = []
    context.sni_callback = lambda _sock, name, _ctx: seen.append(name)  # type: ignore[assignment,misc,func-returns-value]
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        # The probe refuses the name after the server's certificate: the server sees an alert, and is done.
        with (
            contextlib.suppress(OSError),
            listener.accept()[0] as conn,
            contextlib.suppress(ssl.SSLError, OSError),
            context.wrap_socket(conn, server_side=True),
        ):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        result = probe(engine, Target("named.test.", listener.getsockname()[1]), pin_address="127.0.0.1")
    finally:
        thread.join(10)
        listener.close()
    assert seen == ["named.test."]
    assert result.sni == "named.test." and result.expected_name == "named.test."
    (address,) = result.addresses
    assert address.native.verdict is Verdict.HOSTNAME_MISMATCH and address.native.verify_code == 62
    assert store(result, "extra:lab").at_agent_time is Verdict.HOSTNAME_MISMATCH


def test_without_sni_the_native_check_skips_the_name_but_the_stores_do_not(
    pki: LabPKI, engine: ProbeEngine, servers: list[TlsServer]
) -> None:
    default, named = pki.issue_leaf("default.test"), pki.issue_leaf("named.test")
    server = start(
        servers,
        TlsServer(
            ServedIdentity.of(default, pki.intermediate),
            by_sni={"named.test": ServedIdentity.of(named, pki.intermediate)},
        ),
    )
    result = probe(engine, Target("named.test", server.port), pin_address="127.0.0.1", send_sni=False)
    assert result.sni is None and result.expected_name == "named.test"
    (address,) = result.addresses
    assert address.chain[0] == default.der
    assert address.native.verdict is Verdict.OK
    assert address.native.hostname_checked is False
    assert store(result, "extra:lab").at_agent_time is Verdict.HOSTNAME_MISMATCH


def test_sni_override_sends_and_expects_the_override(
    pki: LabPKI, engine: ProbeEngine, servers: list[TlsServer]
) -> None:
    default, named = pki.issue_leaf("default.test"), pki.issue_leaf("override.test")
    server = start(
        servers,
        TlsServer(
            ServedIdentity.of(default, pki.intermediate),
            by_sni={"override.test": ServedIdentity.of(named, pki.intermediate)},
        ),
    )
    result = probe(engine, Target("127.0.0.1", server.port), sni="override.test")
    assert result.sni == "override.test" and result.expected_name == "override.test"
    assert result.addresses[0].chain[0] == named.der
    assert result.addresses[0].native.verdict is Verdict.OK
    assert store(result, "extra:lab").at_agent_time is Verdict.OK


def test_leaf_only_native_and_offline_verdicts(pki: LabPKI, engine: ProbeEngine, servers: list[TlsServer]) -> None:
    leaf = pki.issue_leaf("127.0.0.1")
    server = start(servers, TlsServer(ServedIdentity.of(leaf)))
    result = probe(engine, Target("127.0.0.1", server.port))
    (address,) = result.addresses
    assert address.handshake.failure is Failure.CERT_VERIFY
    assert address.native.verify_code == 20  # OpenSSL's first error
    assert address.chain == (leaf.der,)
    assert store(result, "extra:lab").at_agent_time is Verdict.LEAF_ONLY_UNVERIFIABLE


def _pair_on_one_port(
    started: list[TlsServer], hosts: tuple[str, str], identities: tuple[ServedIdentity, ServedIdentity]
) -> int:
    """Two servers on the same port at two loopback addresses (a name with two backends)."""
    for _ in range(20):
        first = start(started, TlsServer(identities[0], host=hosts[0]))
        try:
            start(started, TlsServer(identities[1], host=hosts[1], port=first.port))
        except OSError:
            continue  # the port is taken at the second address; try another
        return first.port
    pytest.skip(f"no common free port on {hosts[0]} and {hosts[1]}")


def test_every_address_of_a_name_is_probed(pki: LabPKI, root_file: Path, servers: list[TlsServer]) -> None:
    blue, green = pki.issue_leaf("multi.test"), pki.issue_leaf("multi.test")
    port = _pair_on_one_port(
        servers,
        ("127.0.0.2", "127.0.0.3"),
        (ServedIdentity.of(blue, pki.intermediate), ServedIdentity.of(green, pki.intermediate)),
    )

    # localhost has one address on this host, so a fixed table stands in for the resolver here.
    async def table(host: str, port: int, timeout: float, cap: int) -> Resolution:
        addresses = {"multi.test": ("127.0.0.2", "127.0.0.3")}[host]
        return Resolution(addresses[:cap], 0.1, truncated_from=len(addresses) if len(addresses) > cap else 0)

    engine = ProbeEngine(extra_stores={"lab": root_file}, environ={}, native_cafile=str(root_file), resolver=table)
    result = probe(engine, Target("multi.test", port))
    assert [a.address for a in result.addresses] == ["127.0.0.2", "127.0.0.3"]
    assert [a.chain[0] for a in result.addresses] == [blue.der, green.der]
    assert all(a.native.verdict is Verdict.OK for a in result.addresses)
    assert all(store(result, "extra:lab", i).at_agent_time is Verdict.OK for i in (0, 1))
    capped = probe(engine, Target("multi.test", port), max_addresses=1)
    assert [a.address for a in capped.addresses] == ["127.0.0.2"]
    assert capped.resolution.truncated_from == 2
    # Pinning reaches each backend on its own.
    for pin, leaf in (("127.0.0.2", blue), ("127.0.0.3", green)):
        pinned = probe(engine, Target("multi.test", port), pin_address=pin)
        assert pinned.resolution.addresses == (pin,)
        assert pinned.addresses[0].chain[0] == leaf.der


def test_localhost_with_both_address_families(pki: LabPKI, engine: ProbeEngine, servers: list[TlsServer]) -> None:
    addresses = asyncio.run(resolve("localhost", 443, 3.0, 8)).addresses
    if set(addresses) != {"127.0.0.1", "::1"}:
        pytest.skip(f"localhost resolves to {list(addresses)} here, not to both 127.0.0.1 and ::1")
    leaf = pki.issue_leaf("localhost")
    identity = ServedIdentity.of(leaf, pki.intermediate)
    port = _pair_on_one_port(servers, ("127.0.0.1", "::1"), (identity, identity))
    result = probe(engine, Target("localhost", port))
    assert sorted(a.address for a in result.addresses) == ["127.0.0.1", "::1"]
    assert all(a.native.verdict is Verdict.OK for a in result.addresses)


def test_a_failing_address_becomes_internal_not_an_exception(
    pki: LabPKI, root_file: Path, servers: list[TlsServer], tmp_path: Path
) -> None:
    leaf = pki.issue_leaf("127.0.0.1")
    server = start(servers, TlsServer(ServedIdentity.of(leaf, pki.intermediate)))
    # A native bundle that vanished after the agent was configured: building the context fails.
    engine = ProbeEngine(environ={}, native_cafile=str(tmp_path / "gone.pem"))
    result = probe(engine, Target("127.0.0.1", server.port))
    (address,) = result.addresses
    assert address.handshake.failure is Failure.INTERNAL
    assert "FileNotFoundError" in address.handshake.error


def test_resolution_failure_gives_a_result_without_addresses(engine: ProbeEngine, root_file: Path) -> None:
    async def failing(host: str, port: int, timeout: float, cap: int) -> Resolution:
        # The real resolver's answer for a name too long for DNS: no query leaves the host.
        return await resolve("a." * 130 + "test", port, timeout, cap)

    engine = ProbeEngine(environ={}, native_cafile=str(root_file), resolver=failing)
    result = probe(engine, Target("unresolvable.test", 443))
    assert result.resolution.failure is Failure.DNS_ERROR
    assert result.addresses == ()


def test_bad_requests_are_refused_before_any_io(engine: ProbeEngine) -> None:
    with pytest.raises(RequestError, match="max_addresses"):
        probe(engine, Target("127.0.0.1", 443), max_addresses=0)
    with pytest.raises(RequestError, match="not an IP address"):
        probe(engine, Target("example.test", 443), pin_address="example.test")
    with pytest.raises(RequestError, match="cannot probe for the name"):
        probe(engine, Target("127.0.0.1", 443), sni="bad*name")


@pytest.mark.slow  # a real subprocess or timer, most of a second: the full suite runs it
def test_handshakes_in_flight_are_bounded(root_file: Path, servers: list[TlsServer]) -> None:
    stalls = [start(servers, TlsServer(None, mode="stall")) for _ in range(4)]
    engine = ProbeEngine(environ={}, native_cafile=str(root_file), max_concurrency=2)

    async def all_at_once() -> list[ProbeResult]:
        requests = [
            ProbeRequest(Target("127.0.0.1", s.port), ProbeOptions(handshake_timeout=0.3, connect_timeout=1.0))
            for s in stalls
        ]
        return await asyncio.gather(*(engine.probe(r) for r in requests))

    started = time.monotonic()
    results = asyncio.run(all_at_once())
    elapsed = time.monotonic() - started
    assert all(r.addresses[0].handshake.failure is Failure.HANDSHAKE_TIMEOUT for r in results)
    # Two at a time: four 0.3 s stalls cannot end sooner than two rounds.
    assert elapsed >= 0.55, elapsed


def test_refresh_stores_reads_changed_bundles(pki: LabPKI, tmp_path: Path) -> None:
    bundle = write_pem(tmp_path / "bundle.pem", pki.root.cert_pem)
    engine = ProbeEngine(extra_stores={"bundle": bundle}, environ={})
    before = {s.name: s for s in engine.trust_stores()}["extra:bundle"]
    assert before.root_count == 1
    write_pem(bundle, pki.root.cert_pem + LabPKI("Second").root.cert_pem)
    assert {s.name: s for s in engine.trust_stores()}["extra:bundle"] == before  # cached until refreshed
    engine.refresh_stores()
    after = {s.name: s for s in engine.trust_stores()}["extra:bundle"]
    assert after.root_count == 2 and after.fingerprint != before.fingerprint


def test_listed_roots_follow_the_stores(pki: LabPKI, tmp_path: Path) -> None:
    """Describe's root lists are made once per reading of the stores, and made again when they change."""
    bundle = write_pem(tmp_path / "bundle.pem", pki.root.cert_pem)
    engine = ProbeEngine(extra_stores={"bundle": bundle}, environ={})

    def listed() -> tuple[str, ...]:
        [store] = [s for s in engine.trust_stores(include_roots=True) if s.name == "extra:bundle"]
        return tuple(r.subject for r in store.roots)

    assert listed() == ("CN=Acme Root CA",)
    assert engine.trust_stores(include_roots=True) is engine.trust_stores(include_roots=True)
    write_pem(bundle, pki.root.cert_pem + LabPKI("Second").root.cert_pem)
    engine.refresh_stores()
    assert listed() == ("CN=Acme Root CA", "CN=Second Root CA")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow  # a real subprocess or timer, most of a second: the full suite runs it
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to count descriptors")
def test_no_descriptor_leaks_over_200_probes(pki: LabPKI, engine: ProbeEngine, servers: list[TlsServer]) -> None:
    leaf = pki.issue_leaf("leak.test", "127.0.0.1")
    identity = ServedIdentity.of(leaf, pki.intermediate)
    modes = {
        mode: start(servers, TlsServer(identity if mode == "tls" else None, mode=mode))
        for mode in ("tls", "stall", "garbage", "close")
    }
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused_port = closed.getsockname()[1]
    targets = (
        [(Target("127.0.0.1", modes["tls"].port), {})] * 50
        + [(Target("127.0.0.1", modes["tls"].port), {"sni": "wrong.test"})] * 50  # verify failure: one connection
        + [(Target("127.0.0.1", refused_port), {})] * 25
        + [(Target("127.0.0.1", modes["garbage"].port), {})] * 25
        + [(Target("127.0.0.1", modes["close"].port), {})] * 25
        + [(Target("127.0.0.1", modes["stall"].port), {"handshake_timeout": 0.2})] * 25
    )

    async def run_all() -> list[ProbeResult]:
        return await asyncio.gather(*(engine.probe(ProbeRequest(t, ProbeOptions(**o))) for t, o in targets))

    async def measured() -> tuple[int, list[ProbeResult], int]:
        await run_all()  # warm up: contexts, stores
        await _servers_closed(modes.values())
        before = _open_fds()
        results = await run_all()
        await _servers_closed(modes.values())
        return before, results, _open_fds()

    # Counted inside the running loop with the collector off: a socket left open stays registered with
    # the loop, and no garbage collection can close it behind the test's back.
    # Python closes a dropped StreamWriter itself, with a ResourceWarning: that counts as a leak too.
    gc.disable()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            before, results, after = asyncio.run(measured())
    finally:
        gc.enable()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
    assert len(results) == 200
    outcomes = [(r.addresses[0].connect_failure, r.addresses[0].handshake.failure) for r in results]
    assert outcomes.count((Failure.NONE, Failure.NONE)) == 50
    assert outcomes.count((Failure.NONE, Failure.CERT_VERIFY)) == 50
    assert outcomes.count((Failure.REFUSED, Failure.NONE)) == 25
    assert outcomes.count((Failure.NONE, Failure.NOT_TLS)) == 25
    assert outcomes.count((Failure.NONE, Failure.CLOSED)) == 25
    assert outcomes.count((Failure.NONE, Failure.HANDSHAKE_TIMEOUT)) == 25
    assert after == before, f"{after - before} descriptors leaked over 200 probes"


async def _servers_closed(servers: Iterable[TlsServer]) -> None:
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if all(s.open_connections == 0 for s in servers):
            await asyncio.sleep(0.05)  # let the loop run the callbacks that close client sockets
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the lab servers still hold connections the client closed")
