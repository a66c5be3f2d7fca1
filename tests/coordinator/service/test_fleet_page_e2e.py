"""The fleet page of a real `tlsfleet coordinator serve`: its local vantage probes a lab TLS server, the
certificate rotates between two runs, and the overview, report, run and target pages say so over HTTP and
in headless Chromium, with nothing fetched from any other host."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path, PosixPath
from urllib.parse import quote

import pytest

from tests.browser import chromium, needs_chromium
from tlsfleet.coordinator.lab.agent_process import tlsfleet_command
from tlsfleet.coordinator.lab.pki import LabPKI, write_pem
from tlsfleet.coordinator.lab.tls_server import ServedIdentity, TlsServer

pytestmark = pytest.mark.e2e  # the coordinator service and the CLI as real processes

WAIT_S = 60


@dataclass
class Fleet:
    base: str  # http://127.0.0.1:PORT
    target: str
    workdir: Path


class _Text(HTMLParser):
    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.tags: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: Sequence[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.parts).split())


def fetch(url: str, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _metrics_address(log: Path, service: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert service.poll() is None, log.read_text()[-3000:]
        for line in log.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "coordinator_started":
                return str(event["metrics"])
        time.sleep(0.2)
    raise AssertionError(f"the service did not start within {WAIT_S} s:\n{log.read_text()[-3000:]}")


def _wait_for(url: str, text: str) -> str:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        status, page = fetch(url)
        if status == 200 and text in _Text(page).text:
            return page
        time.sleep(0.3)
    raise AssertionError(f"{url} did not show {text!r} within {WAIT_S} s")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Run 1 by the service itself (its interval is an hour: it runs once at start), run 2 by
    `tlsfleet report run` into the same history after the server's certificate was rotated."""
    workdir = tmp_path_factory.mktemp("fleet-page")
    pki = LabPKI("Fleet Page")
    bundle = write_pem(workdir / "root.pem", pki.root_pem())
    env = {**os.environ, "SSL_CERT_FILE": str(bundle)}  # the local vantage trusts the lab CA
    expires = datetime.now(UTC) + timedelta(days=10)
    first = pki.issue_leaf("localhost", not_after=expires)
    (workdir / "inventory.toml").write_text("")
    with TlsServer(ServedIdentity.of(first, pki.intermediate), host="127.0.0.1") as free:
        port = free.port
    config = workdir / "coordinator.toml"
    config.write_text(
        '[coordinator]\ninventory = "inventory.toml"\nreports_dir = "reports"\nmetrics_listen = "127.0.0.1:0"\n\n'
        '[storage]\npath = "history.sqlite"\n\n'
        f'[[report]]\nname = "edge"\ntargets = ["localhost:{port}"]\ninterval = "1h"\ninclude_local = true\n'
        'probe_timeout = "5s"\n'
    )
    log = workdir / "service.log"
    service: subprocess.Popen[bytes] | None = None
    try:
        with TlsServer(ServedIdentity.of(first, pki.intermediate), host="127.0.0.1", port=port):
            with log.open("ab") as out:
                service = subprocess.Popen(
                    [*tlsfleet_command(), "coordinator", "serve", "--config", str(config)],
                    stdout=subprocess.DEVNULL,
                    stderr=out,
                    env=env,
                )
            base = "http://" + _metrics_address(log, service)
            _wait_for(base + "/", "run 1")
        rotated = pki.issue_leaf("localhost", not_after=expires + timedelta(days=10))
        with TlsServer(ServedIdentity.of(rotated, pki.intermediate), host="127.0.0.1", port=port):
            done = subprocess.run(
                [*tlsfleet_command(), "report", "run", "edge", "--config", str(config)],
                capture_output=True,
                text=True,
                timeout=120,
                env=env,
            )
            assert done.returncode in (0, 1), done.stderr
        yield Fleet(base, f"localhost:{port}", workdir)
    finally:
        if service is not None:
            service.send_signal(signal.SIGTERM)
            try:
                service.wait(30)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait()


def test_overview_shows_the_latest_run_and_its_vantages(fleet: Fleet) -> None:
    status, page = fetch(fleet.base + "/")
    text = _Text(page).text
    assert status == 200, text
    assert "Reports (1)" in text and "edge warning" in text and "run 2" in text and "1 of 1" in text
    assert "local answered" in text and "edge, run 2" in text
    assert "Dial-out agents" not in text  # this service runs no agent link
    assert fetch(fleet.base + "/", "HEAD") == (200, "")


def test_report_run_and_target_pages(fleet: Fleet) -> None:
    status, page = fetch(fleet.base + "/reports/edge")
    text = _Text(page).text
    assert status == 200
    assert "Recent runs of edge" in text and "run 1" in text and "run 2" in text
    assert fleet.target in text and "Changes since the previous run" in text

    status, page = fetch(fleet.base + "/runs/1")
    text = _Text(page).text
    assert status == 200 and "edge run 1" in text and "10 d" in text

    target_url = f"{fleet.base}/targets/edge/{quote(fleet.target, safe='')}"
    assert f'href="{target_url.removeprefix(fleet.base)}"' in page  # linked from the run page
    status, page = fetch(target_url)
    text = _Text(page).text
    assert status == 200 and "2 runs of the last 2 probed this target" in text
    assert "10 d warning" in text and "20 d warning" in text  # both leaves, soonest notAfter first
    assert text.index("10 d warning") < text.index("20 d warning")
    assert "certificate" in text and "run 2" in text  # the rotation, as the change of run 2


def test_unknown_pages_and_other_methods(fleet: Fleet) -> None:
    status, page = fetch(fleet.base + "/reports/nope")
    assert status == 404 and "No report named 'nope' is configured. Reports configured: Report edge" in _Text(page).text
    status, page = fetch(fleet.base + "/runs/77")
    assert status == 404 and "run 2 of edge" in _Text(page).text
    status, page = fetch(fleet.base + "/targets/edge/" + quote("<script>x</script>", safe=""))
    assert status == 404 and "<script>" not in page and fleet.target in _Text(page).text
    assert fetch(fleet.base + "/", "POST")[0] == 405
    assert fetch(fleet.base + "/metrics")[0] == 200


class _Url(PosixPath):
    """A page for `tests.browser.chromium` that is a URL: it opens `url` and runs in this directory."""

    url = ""

    def as_uri(self) -> str:
        return self.url


@needs_chromium
@pytest.mark.browser
def test_the_overview_in_a_browser_fetches_nothing_else(fleet: Fleet, tmp_path: Path) -> None:
    page = _Url(tmp_path / "page")
    page.url = fleet.base + "/"
    net_log = tmp_path / "net-log.json"
    # Every name still resolves nowhere; only the service's own address is reachable (the later flag wins).
    only_here = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
    dom = chromium(page, only_here, "--dump-dom", f"--log-net-log={net_log}").decode()
    parsed = _Text(dom)
    assert "Fleet overview" in parsed.text and "edge warning" in parsed.text and "local answered" in parsed.text
    assert "script" not in parsed.tags and "img" not in parsed.tags and "link" not in parsed.tags
    # Chromium's own background requests (updates, time) start from no page; the page's carry its origin.
    from_page = set()
    for event in json.loads(net_log.read_text())["events"]:
        params = event.get("params") or {}
        if "url" in params and (
            params.get("initiator") == fleet.base or "site=http://127.0.0.1" in params.get("site_for_cookies", "")
        ):
            from_page.add(params["url"])
    assert fleet.base + "/" in from_page
    elsewhere = {url for url in from_page if not url.startswith(fleet.base + "/")}
    assert not elsewhere, f"the page fetched from elsewhere: {sorted(elsewhere)}"
