"""`/probe`: one probe through the service's fleet answered as Prometheus metrics, the way blackbox_exporter's
/probe is. In process with this machine's vantage against lab TLS servers (the target checks, the limits,
the probe slots), then end to end: a real `tlsfleet coordinator serve` with dialled and dial-out agent
processes, /metrics, /probe and /healthz scraped over HTTP and parsed."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from tlsfleet import __version__
from tlsfleet.agent.probe.targets import TargetError, parse_target
from tlsfleet.agent.trust.certinfo import summarize
from tlsfleet.coordinator.fleet.probe_slots import ProbeSlots
from tlsfleet.coordinator.lab.agent_process import AgentProcess, start_agent, trust_env
from tlsfleet.coordinator.lab.pki import Issued, LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer
from tlsfleet.coordinator.probing import ProbeArgumentError, build_request
from tlsfleet.coordinator.service.config import ConfigError, ProbeEndpointConfig, ServiceConfig, parse_config
from tlsfleet.coordinator.service.history import open_history
from tlsfleet.coordinator.service.pipeline import Pipeline
from tlsfleet.coordinator.service.probe_endpoint import SCRAPE_MARGIN_S, ProbeEndpoint, ProbeRefused

from .dialout_fleet import LoggedProcess, make_pki, start_coordinator, start_dialout_agent
from .test_metrics_http import Served, request, serve

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]
TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"


def parsed(body: bytes) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def by_agent(samples: Samples, name: str) -> dict[str, float]:
    return {dict(k)["agent"]: v for k, v in samples.get(name, {}).items()}


@dataclass
class Lab:
    pki: LabPKI
    leaf: Issued
    server: TlsServer
    inventory: Path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    workdir = tmp_path_factory.mktemp("probe-endpoint")
    pki = LabPKI("Probe Endpoint")
    bundle = write_pem(workdir / "root.pem", pki.root_pem())
    leaf = pki.issue_leaf("localhost", not_after=datetime.now(UTC) + timedelta(days=20))
    inventory = workdir / "inventory.toml"
    inventory.write_text("")  # this machine ("local") alone
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SSL_CERT_FILE", str(bundle))  # the local vantage, in this process, trusts the lab CA
        with TlsServer(ServedIdentity.of(leaf, pki.intermediate), host="127.0.0.1") as server:
            yield Lab(pki, leaf, server, inventory)


class StallingServer:
    """Accepts TCP connections and never says a word: a port whose handshake never completes."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.accepted = threading.Event()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._held.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self._listener.close()
        for conn in self._held:
            conn.close()
        self._thread.join(5)


@contextmanager
def endpoint(
    lab: Lab, *, slots: ProbeSlots | None = None, max_concurrent: int = 4
) -> Iterator[tuple[Served, ProbeSlots]]:
    shared = slots or ProbeSlots(200)
    config = ProbeEndpointConfig(max_concurrent=max_concurrent, max_timeout_s=10.0)
    with serve(lambda: {"/probe": ProbeEndpoint(config, inventory=lab.inventory, slots=shared).answer}) as served:
        yield served, shared


def test_a_probe_answers_its_own_series_in_the_prometheus_format(lab: Lab) -> None:
    target = f"localhost:{lab.server.port}"
    with endpoint(lab) as (served, slots):
        status, headers, body = served.get(f"/probe?target={target}&agents=local", {TIMEOUT_HEADER: "10"})
    assert status == 200, body
    assert headers["content-type"] == CONTENT_TYPE_LATEST
    found = parsed(body)
    assert found["tlsfleet_probe_success"] == {(("agent", "local"), ("target", target)): 1.0}
    assert found["tlsfleet_agent_up"] == {(("agent", "local"),): 1.0}
    leaf = summarize(lab.leaf.der)
    [(expiry_labels, not_after)] = [
        (k, v) for k, v in found["tlsfleet_ssl_cert_not_after"].items() if dict(k)["fingerprint"] == leaf.sha256
    ]
    assert not_after == leaf.not_after.timestamp()
    assert dict(expiry_labels)["subject"] == "CN=localhost"
    assert by_agent(found, "tlsfleet_probe_ssl_earliest_cert_expiry") == {"local": leaf.not_after.timestamp()}
    assert set(by_agent(found, "tlsfleet_probe_tls_version_info")) == {"local"}
    # Twenty days left: the diagnosis says so, as for a report.
    assert any(dict(k)["cause"] == "expiring_soon" for k in found["tlsfleet_findings"])
    # That probe only: nothing of reports, no build or process info (those are /metrics').
    assert not any("report" in dict(k) for series in found.values() for k in series)
    assert "tlsfleet_build_info" not in found and "process_cpu_seconds_total" not in found
    assert slots.peak == 1 and slots.in_use == 0  # it went through the probe slots, and gave them back


def _expected_error(make: object) -> str:
    try:
        make()  # type: ignore[operator]
    except (TargetError, ProbeArgumentError) as error:
        return str(error)
    raise AssertionError("no error")


def test_bad_requests_are_400_with_the_same_one_line_message_as_the_cli(lab: Lab) -> None:
    target = f"localhost:{lab.server.port}"
    cases = {
        "/probe": "target is missing; accepted: /probe?target=HOST:PORT[&agents=SELECTOR]",
        "/probe?target=exa%20mple.com:443": _expected_error(lambda: parse_target("exa mple.com:443")),
        "/probe?target=example.com:99999": _expected_error(lambda: parse_target("example.com:99999")),
        f"/probe?target={target}&starttls=gopher": _expected_error(
            lambda: build_request(target, now_ns=0, starttls="gopher")
        ),
        f"/probe?target={target}&agents=edge-9": f"selector term 'edge-9' matches no vantage in inventory "
        f"{lab.inventory}; known: local",
        f"/probe?target={target}&agents=env%3D%3D": None,
        f"/probe?target={target}&module=tls": "unknown parameter(s) module; accepted: target, agents, starttls",
        f"/probe?target={target}&target=other:443": "target is given 2 times; give it once",
    }
    with endpoint(lab) as (served, slots):
        for path, message in cases.items():
            status, _, body = served.get(path)
            assert status == 400, (path, body)
            text = body.decode()
            assert text.endswith("\n") and text.count("\n") == 1, (path, text)
            if message is not None:
                assert text == message + "\n", path
        status, _, body = served.get(f"/probe?target={target}", {TIMEOUT_HEADER: "soon"})
        assert (status, body) == (400, b"x-prometheus-scrape-timeout-seconds 'soon' is not a number of seconds\n")
    assert slots.peak == 0  # nothing was probed


def test_the_deadline_is_the_scrape_timeout_less_a_margin_capped_by_the_config(lab: Lab) -> None:
    probe = ProbeEndpoint(ProbeEndpointConfig(max_timeout_s=10.0), inventory=lab.inventory, slots=ProbeSlots(1))
    assert probe.budget(None) == 10.0
    assert probe.budget("4") == 4 - SCRAPE_MARGIN_S
    assert probe.budget("60") == 10.0
    assert probe.budget("0.2") == 0.5  # never below half a second
    with pytest.raises(ProbeRefused, match="'0' is not accepted; a number above 0"):
        probe.budget("0")


@pytest.mark.slow  # a probe of a port that never answers waits out its deadline
def test_beyond_max_concurrent_requests_are_503_at_once(lab: Lab) -> None:
    stalling = StallingServer()
    try:
        with endpoint(lab, max_concurrent=1) as (served, _), ThreadPoolExecutor(1) as pool:
            first = pool.submit(
                served.get, f"/probe?target=127.0.0.1:{stalling.port}&agents=local", {TIMEOUT_HEADER: "3"}
            )
            assert stalling.accepted.wait(10), "the first probe never connected"
            started = time.monotonic()
            status, _, body = served.get(f"/probe?target=localhost:{lab.server.port}&agents=local")
            assert time.monotonic() - started < 1.0
            assert (status, body) == (
                503,
                b"busy: 1 /probe requests are running; at most 1 at once ([probe_endpoint] max_concurrent)\n",
            )
            status, _, body = first.result(30)
            assert status == 200
            found = parsed(body)
            # A port that never completes a handshake is a failed probe, not a missing one.
            assert by_agent(found, "tlsfleet_probe_success") == {"local": 0.0}
            assert "tlsfleet_probe_tls_version_info" not in found
            # Its slot is free again: the next request is served.
            assert served.get(f"/probe?target=localhost:{lab.server.port}&agents=local")[0] == 200
    finally:
        stalling.close()


@pytest.mark.slow  # waits out a deadline
def test_a_probe_waits_for_the_pipelines_probe_slots_within_its_deadline(lab: Lab) -> None:
    slots = ProbeSlots(1)
    with endpoint(lab, slots=slots) as (served, _):
        release = asyncio.Event()  # set on the endpoint's loop, which waits on it

        async def hold() -> None:
            async with slots.hold(1):
                await release.wait()

        holder = asyncio.run_coroutine_threadsafe(hold(), served.loop)
        try:
            while slots.in_use == 0:
                time.sleep(0.01)
            started = time.monotonic()
            status, _, body = served.get(
                f"/probe?target=localhost:{lab.server.port}&agents=local", {TIMEOUT_HEADER: "1.5"}
            )
            waited = time.monotonic() - started
        finally:
            served.loop.call_soon_threadsafe(release.set)
            holder.result(5)
        assert (status, body) == (
            503,
            (
                b"the probe did not finish within its deadline of 1 s: the service's probe slots "
                b"([coordinator] max_probes_in_flight, 1) stayed busy\n"
            ),
        )
        assert 0.9 < waited < 3.0  # the deadline (1.5 s less the margin), not the configured 10 s
        assert served.get(f"/probe?target=localhost:{lab.server.port}&agents=local")[0] == 200


def _config(text: str, tmp_path: Path) -> ServiceConfig:
    return parse_config(tomllib.loads(text), tmp_path / "coordinator.toml")


REPORT = '[[report]]\nname = "edge"\ntargets = ["example.com:443"]\ninterval = "1h"\n'


def test_the_config_turns_probe_on_with_its_limits_and_refuses_what_does_not_fit(tmp_path: Path) -> None:
    listen = '[coordinator]\nmetrics_listen = "127.0.0.1:0"\n'
    assert _config(listen + REPORT, tmp_path).probe_endpoint is None  # off unless asked for
    on = _config(listen + "[probe_endpoint]\n" + REPORT, tmp_path).probe_endpoint
    assert on == ProbeEndpointConfig(max_concurrent=4, max_timeout_s=10.0)
    tuned = _config(listen + '[probe_endpoint]\nmax_concurrent = 2\nmax_timeout = "30s"\n' + REPORT, tmp_path)
    assert tuned.probe_endpoint == ProbeEndpointConfig(max_concurrent=2, max_timeout_s=30.0)
    where = f"config {tmp_path / 'coordinator.toml'}"
    refused = {
        "[probe_endpoint]\n": f"{where}: [probe_endpoint] serves /probe at [coordinator] metrics_listen, which is "
        "not set",
        listen + "[probe_endpoint]\nmax_concurrent = 0\n": f"{where}: [probe_endpoint]: max_concurrent must be a "
        "whole number from 1 to 64",
        listen + '[probe_endpoint]\nmax_timeout = "0.5s"\n': f"{where}: [probe_endpoint]: max_timeout must be 1-120 s",
        listen + "[probe_endpoint]\nenabled = true\n": f"{where}: [probe_endpoint]: unknown key(s) ['enabled']; "
        "accepted: max_concurrent, max_timeout",
        listen + "probe_endpoint = true\n": None,
    }
    for text, message in refused.items():
        with pytest.raises(ConfigError) as raised:
            _config(text + REPORT, tmp_path)
        if message is not None:
            assert str(raised.value) == message


async def _pipeline_routes(config: ServiceConfig) -> tuple[int, bytes, int, bytes]:
    history = open_history(config.storage)
    pipeline = Pipeline(config, history)
    try:
        await pipeline.start_metrics()
        assert pipeline.metrics_address is not None
        port = int(pipeline.metrics_address.rpartition(":")[2])
        probe_status, _, probe_body = await request(port, "/probe?target=localhost:443")
        health_status, _, health_body = await request(port, "/healthz")
        return probe_status, probe_body, health_status, health_body
    finally:
        await pipeline.close()
        history.close()


def test_the_service_serves_healthz_and_keeps_probe_off_unless_configured(tmp_path: Path) -> None:
    (tmp_path / "inventory.toml").write_text("")
    text = (
        '[coordinator]\ninventory = "inventory.toml"\nmetrics_listen = "127.0.0.1:0"\n[storage]\n'
        'path = "history.sqlite"\n' + REPORT
    )
    probe_status, probe_body, health_status, health_body = asyncio.run(_pipeline_routes(_config(text, tmp_path)))
    assert probe_status == 404 and b"[probe_endpoint]" in probe_body
    assert (health_status, health_body) == (200, b"ok\n")
    # Turned on, the same request reaches the probe: this target's port has nothing listening.
    on = _config(text.replace("[storage]", "[probe_endpoint]\n[storage]"), tmp_path)
    probe_status, probe_body, _, _ = asyncio.run(_pipeline_routes(on))
    assert probe_status == 200
    assert by_agent(parsed(probe_body), "tlsfleet_probe_success") == {"local": 0.0}


# ---- end to end: a real service, dialled and dial-out agents ----

WAIT_S = 60


@dataclass
class Fleet:
    base: str  # http://HOST:PORT of the service's metrics address
    target: str
    leaf: Issued
    coordinator: LoggedProcess


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """hub-1 (trusts the lab CA) and hub-2 (trusts another) dialled from the inventory; edge-1 (trusts the lab
    CA) dials out to the service's agent link."""
    workdir = tmp_path_factory.mktemp("probe-e2e")
    pki_dir = make_pki(workdir / "pki", "edge-1")
    lab = LabPKI("Probe E2E")
    bundle = write_pem(workdir / "lab-root.pem", lab.root_pem())
    other = write_pem(workdir / "other-root.pem", LabPKI("Elsewhere").root_pem())
    leaf = lab.issue_leaf("localhost", not_after=datetime.now(UTC) + timedelta(days=60))
    server = TlsServer(ServedIdentity.of(leaf, lab.intermediate), host="127.0.0.1").start()
    agents: list[AgentProcess] = []
    started: list[LoggedProcess] = []
    try:
        agents.append(start_agent("hub-1", workdir, env=trust_env(workdir / "t1", bundle)))
        agents.append(start_agent("hub-2", workdir, env=trust_env(workdir / "t2", other)))
        (workdir / "inventory.toml").write_text(
            '[coordinator]\npki_dir = "pki"\n\n' + "\n".join(a.inventory_entry() for a in agents)
        )
        config = workdir / "coordinator.toml"
        config.write_text(
            '[coordinator]\ninventory = "inventory.toml"\nreports_dir = "reports"\nmetrics_listen = "127.0.0.1:0"\n\n'
            '[storage]\npath = "history.sqlite"\n\n'
            '[agent_link]\nlisten = "127.0.0.1:0"\nallow = ["edge-*"]\n\n'
            "[probe_endpoint]\nmax_concurrent = 2\n\n"
            f'[[report]]\nname = "edge"\ntargets = ["localhost:{server.port}"]\ninterval = "1h"\n'
            'probe_timeout = "5s"\nformats = ["json"]\n'
        )
        coordinator = start_coordinator(config, workdir / "coordinator.log")
        started.append(coordinator)
        link = f"127.0.0.1:{coordinator.wait_for('agent_link_listening', timeout=WAIT_S)['port']}"
        base = "http://" + str(coordinator.wait_for("coordinator_started", timeout=WAIT_S)["metrics"])
        edge = start_dialout_agent("edge-1", link, pki_dir, workdir, env=trust_env(workdir / "t3", bundle))
        started.append(edge)
        edge.wait_for("agent_link_connected", timeout=WAIT_S)
        coordinator.wait_for("report_run_done", timeout=WAIT_S)
        yield Fleet(base, f"localhost:{server.port}", leaf, coordinator)
    finally:
        for process in reversed(started):
            process.stop()
        for agent in agents:
            agent.stop()
        server.stop()


@pytest.mark.e2e
def test_metrics_of_a_real_service_after_its_report_run(fleet: Fleet) -> None:
    status, body = fetch(fleet.base + "/metrics")
    assert status == 200
    found = parsed(body)
    success = {(dict(k)["report"], dict(k)["agent"]): v for k, v in found["tlsfleet_probe_success"].items()}
    assert success[("edge", "hub-1")] == 1.0
    assert success[("edge", "hub-2")] == 0.0  # its trust store lacks the lab CA
    leaf = summarize(fleet.leaf.der)
    fingerprints = {dict(k)["fingerprint"] for k in found["tlsfleet_ssl_cert_not_after"]}
    assert leaf.sha256 in fingerprints
    [build] = found["tlsfleet_build_info"]
    assert dict(build)["version"] == __version__
    assert found["process_resident_memory_bytes"][()] > 0
    assert found["tlsfleet_report_run_abandoned"] == {(("report", "edge"),): 0.0}


@pytest.mark.e2e
def test_probe_through_the_service_asks_dialled_and_dial_out_agents(fleet: Fleet) -> None:
    status, body = fetch(f"{fleet.base}/probe?target={fleet.target}&agents=hub-1,hub-2,edge-1", {TIMEOUT_HEADER: "15"})
    assert status == 200, body
    found = parsed(body)
    assert by_agent(found, "tlsfleet_probe_success") == {"hub-1": 1.0, "hub-2": 0.0, "edge-1": 1.0}
    assert by_agent(found, "tlsfleet_agent_up") == {"hub-1": 1.0, "hub-2": 1.0, "edge-1": 1.0}
    verdicts = {dict(k)["agent"]: dict(k)["verdict"] for k in found["tlsfleet_verdict_ok"]}
    assert verdicts["hub-2"] != "ok" and verdicts["hub-1"] == verdicts["edge-1"] == "ok"
    causes = {(dict(k)["cause"], dict(k)["severity"]) for k in found["tlsfleet_findings"]}
    assert ("private_ca_not_trusted", "critical") in causes
    leaf = summarize(fleet.leaf.der)
    assert by_agent(found, "tlsfleet_probe_ssl_earliest_cert_expiry")["edge-1"] == leaf.not_after.timestamp()
    assert not any("report" in dict(k) for series in found.values() for k in series)

    # A selector the same as the CLI's: labels, wildcards; only what it picks is asked.
    status, body = fetch(f"{fleet.base}/probe?target={fleet.target}&agents=edge-*")
    assert status == 200
    assert set(by_agent(parsed(body), "tlsfleet_probe_success")) == {"edge-1"}


@pytest.mark.e2e
def test_probe_errors_and_healthz_of_a_real_service(fleet: Fleet) -> None:
    status, body = fetch(f"{fleet.base}/probe?target={fleet.target}&agents=edge-9")
    assert status == 400
    assert body.decode().startswith("selector term 'edge-9' matches no vantage in inventory ")
    assert "close names: edge-1" in body.decode()
    status, body = fetch(f"{fleet.base}/probe?target=localhost:0")
    assert status == 400 and body.count(b"\n") == 1
    assert fetch(fleet.base + "/healthz") == (200, b"ok\n")
    events = [e for e in fleet.coordinator.events() if e.get("event") == "probe_endpoint"]
    assert {e["status"] for e in events} >= {200, 400}
