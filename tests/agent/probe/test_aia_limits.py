"""The AIA fetch is held to the probe's limits: no redirect to another host or port, the destination checked by
the probe policy, one deadline for the whole fetch taken from the probe's, the size cap while reading, and a
bound on fetches at once. Real TLS servers and a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tlsfleet.agent.model import AddressResult, ProbeOptions, ProbeRequest, Target, Verdict
from tlsfleet.agent.probe import aia
from tlsfleet.agent.probe.engine import ProbeEngine
from tlsfleet.agent.probe.policy import ProbePolicy, load_policy
from tlsfleet.coordinator.lab.aia_server import AiaServer
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer

NAME = "localhost"


@pytest.fixture
def pki() -> LabPKI:
    return LabPKI("Aia Limits")


@pytest.fixture
def root(pki: LabPKI, tmp_path: Path) -> Path:
    return write_pem(tmp_path / "root.pem", pki.root_pem())


@pytest.fixture
def http() -> Iterator[AiaServer]:
    with AiaServer() as server:
        yield server


def engine(root: Path, policy: ProbePolicy | None = None) -> ProbeEngine:
    return ProbeEngine(
        fetch_aia=True, native_cafile=str(root), environ={"SSL_CERT_FILE": str(root)}, policy=policy or ProbePolicy()
    )


def probe_leaf_only(
    pki: LabPKI, url: str, probing: ProbeEngine, options: ProbeOptions | None = None
) -> tuple[AddressResult, float]:
    leaf = pki.issue_leaf(NAME, aia_ca_issuers_url=url)
    with TlsServer(ServedIdentity.of(leaf), host="127.0.0.1") as tls:
        request = ProbeRequest(
            Target(NAME, tls.port), options or ProbeOptions(connect_timeout=2, handshake_timeout=3), request_id="t"
        )
        started = time.monotonic()
        result = asyncio.run(probing.probe(request))
        elapsed = time.monotonic() - started
    [address] = [a for a in result.addresses if a.chain]
    assert address.native.verdict in aia.MISSING_ISSUER
    return address, elapsed


def test_a_redirect_to_another_port_is_refused(pki: LabPKI, root: Path, http: AiaServer) -> None:
    with AiaServer({"/int.der": pki.intermediate.der}) as elsewhere:
        other = elsewhere.url("/int.der")
        url = http.redirect("/int.der", other)
        address, _ = probe_leaf_only(pki, url, engine(root))
        assert elsewhere.requests_served == 0, "the redirect was not followed"
    assert address.aia is not None and not address.aia.fetched
    assert address.aia.error == f"{url} redirects to {other}: another host or port; not followed"


def test_a_redirect_to_another_host_on_the_same_port_is_refused(pki: LabPKI, root: Path, http: AiaServer) -> None:
    url = http.redirect("/int.der", f"http://127.0.0.9:{http.port}/int.der")
    address, _ = probe_leaf_only(pki, url, engine(root))
    assert address.aia is not None and "another host or port; not followed" in address.aia.error


def test_a_redirect_to_https_is_refused(pki: LabPKI, root: Path, http: AiaServer) -> None:
    url = http.redirect("/int.der", f"https://127.0.0.1:{http.port}/int.der")
    address, _ = probe_leaf_only(pki, url, engine(root))
    assert address.aia is not None and "https scheme, only http is fetched; not followed" in address.aia.error


def test_a_redirect_on_the_same_server_is_followed_once(pki: LabPKI, root: Path, http: AiaServer) -> None:
    http.add("/new/int.der", pki.intermediate.der)
    url = http.redirect("/int.der", "/new/int.der", status=301)
    address, _ = probe_leaf_only(pki, url, engine(root))
    assert address.aia is not None and address.aia.fetched and address.aia.completes_chain
    assert address.aia.verdict is Verdict.OK

    http.redirect("/hop2", "/new/int.der")
    twice = http.redirect("/hop1", "/hop2")
    address, _ = probe_leaf_only(pki, twice, engine(root))
    assert address.aia is not None and not address.aia.fetched
    assert "redirects more than once" in address.aia.error


def test_the_destination_is_checked_by_the_probe_policy(pki: LabPKI, root: Path, http: AiaServer) -> None:
    url = http.add("/int.der", pki.intermediate.der)
    policy = load_policy(deny=[f"127.0.0.1 port:{http.port}"])
    address, _ = probe_leaf_only(pki, url, engine(root, policy))
    assert http.requests_served == 0
    assert address.aia is not None and not address.aia.fetched
    assert address.aia.error == f"{url} not fetched: 127.0.0.1 denied by policy: deny 127.0.0.1/32 port:{http.port}"


def test_a_built_in_denial_covers_the_fetch_too(pki: LabPKI, root: Path) -> None:
    address, elapsed = probe_leaf_only(pki, "http://169.254.169.254/latest/meta-data/", engine(root))
    assert address.aia is not None
    assert "denied by policy: built-in deny 169.254.0.0/16 (link-local)" in address.aia.error
    assert elapsed < 2.0, "nothing was dialled"


@pytest.mark.slow
def test_a_byte_per_second_ends_at_the_fetch_deadline(pki: LabPKI, root: Path, http: AiaServer) -> None:
    url = http.trickle("/int.der", pki.intermediate.der, byte_interval_s=1.0)
    address, elapsed = probe_leaf_only(pki, url, engine(root))
    assert address.aia is not None and not address.aia.fetched
    assert f"the fetch's deadline of {aia.FETCH_TIMEOUT_S:.1f} s" in address.aia.error
    assert "while reading the body" in address.aia.error and "bytes received" in address.aia.error
    assert elapsed < aia.FETCH_TIMEOUT_S + 2.0, f"the probe took {elapsed:.1f} s"


@pytest.mark.slow
def test_the_fetch_gets_only_what_is_left_of_the_probes_deadline(pki: LabPKI, root: Path, http: AiaServer) -> None:
    url = http.trickle("/int.der", pki.intermediate.der, byte_interval_s=1.0)
    # A probe budget of 1.5 s in all (as fit_to_deadline leaves a short caller deadline): the fetch gets the rest.
    tight = ProbeOptions(resolve_timeout=0.25, connect_timeout=0.25, handshake_timeout=1.0)
    address, elapsed = probe_leaf_only(pki, url, engine(root), tight)
    assert address.aia is not None and "the fetch's deadline of 1." in address.aia.error, address.aia.error
    assert elapsed < 2.0, f"the probe took {elapsed:.1f} s"


def test_the_size_cap_holds_whatever_the_server_announces(pki: LabPKI, root: Path, http: AiaServer) -> None:
    url = http.add("/big.der", b"\x30" * (aia.MAX_ISSUER_BYTES + 1))
    address, _ = probe_leaf_only(pki, url, engine(root))
    assert address.aia is not None and not address.aia.fetched
    assert address.aia.error == f"{url} serves more than {aia.MAX_ISSUER_BYTES // 1024} KiB; not a certificate"


def test_errors_in_words(pki: LabPKI, root: Path, http: AiaServer) -> None:
    missing, _ = probe_leaf_only(pki, http.url("/missing.der"), engine(root))
    assert missing.aia is not None and missing.aia.error == f"HTTP 404 from {http.url('/missing.der')}"
    with AiaServer() as gone:
        closed_url = gone.url("/int.der")
    refused, _ = probe_leaf_only(pki, closed_url, engine(root))
    assert refused.aia is not None and refused.aia.error.startswith(f"cannot fetch {closed_url}: 127.0.0.1: ")


@pytest.mark.slow
def test_at_most_a_few_fetches_run_at_once(pki: LabPKI, root: Path, http: AiaServer) -> None:
    url = http.trickle("/int.der", pki.intermediate.der, byte_interval_s=1.0)
    chain = (pki.issue_leaf(NAME, aia_ca_issuers_url=url).der,)
    store = engine(root)._loaded_stores()[0]

    async def many() -> list[object]:
        from datetime import UTC, datetime

        from tlsfleet.agent.probe.resolve import resolve

        def fetch(seconds_left: float | None) -> asyncio.Task[object]:
            return asyncio.ensure_future(
                aia.fetch_and_judge(
                    chain,
                    store,
                    NAME,
                    datetime.now(UTC),
                    resolver=resolve,
                    policy=ProbePolicy(),
                    seconds_left=seconds_left,
                )
            )

        # The first ones hold every slot for the whole cap; the later ones give up well before a slot frees
        # (with equal deadlines, which side of the release a waiter lands on would be a race).
        holders = [fetch(None) for _ in range(aia.MAX_CONCURRENT_FETCHES)]
        await asyncio.sleep(0.2)
        waiters = [fetch(1.0) for _ in range(aia.MAX_CONCURRENT_FETCHES)]
        return list(await asyncio.gather(*holders, *waiters))

    results = asyncio.run(many())
    assert http.requests_served == aia.MAX_CONCURRENT_FETCHES, "the others never got a slot"
    waited = [r for r in results if "waiting for a fetch slot" in getattr(r, "error", "")]
    assert len(waited) == aia.MAX_CONCURRENT_FETCHES
