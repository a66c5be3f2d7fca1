"""The fleet page: its pure rendering (escaping, caps, empty history, 404 wording), its routes over a real
SQLite history, and its paths served beside /metrics on a real socket."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.coordinator.service.reports.test_reports import HOSTILE_CN, sample_run
from tests.coordinator.service.test_metrics import scrape
from tests.outcomes import address, observe, outcome, request
from tlsfleet.coordinator.diagnosis.model import Severity
from tlsfleet.coordinator.fleet.link_registry import LinkedAgentInfo, LinkState
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.outcomes import VantageState
from tlsfleet.coordinator.service.config import ReportConfig
from tlsfleet.coordinator.service.fleet_page import (
    MAX_AGENTS,
    AgentSighting,
    agent_sightings,
    render_not_found,
    render_overview,
    render_report_page,
    render_target_page,
    report_line,
    target_history,
)
from tlsfleet.coordinator.service.history.sqlite_store import SqliteHistory
from tlsfleet.coordinator.service.http_routes import FleetPages
from tlsfleet.coordinator.service.metrics import FleetMetrics, serve_metrics
from tlsfleet.coordinator.service.report_model import AgentSnapshot, ChangeKind, ReportRun, TargetRun

HOSTILE = '<script>alert("x")</script>'
NOW = datetime.now(UTC).replace(microsecond=0)  # the lab PKI issues from now on


class _Parsed(HTMLParser):
    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.parts: list[str] = []
        self.external: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: Sequence[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("href", "src") and value and not value.startswith(("/", "#")):
                self.external.append(value)

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.parts).split())


def snapshot(name: str, state: VantageState = VantageState.OK) -> AgentSnapshot:
    return AgentSnapshot(name=name, address=f"{name}:7443", labels=(("env", "prod"),), state=state, version="0.1.0")


def run_with(target: str, chain: tuple[bytes, ...], at: datetime, run_id: int | None = None) -> ReportRun:
    req = request("api.example.test")
    observation = observe(outcome("edge-1", [address("192.0.2.10", chain)], req=req), req=req)
    return ReportRun(
        report="edge",
        started_at=at,
        finished_at=at + timedelta(seconds=3),
        targets=(TargetRun(target=target, observation=observation, findings=(), duration_ms=10.0),),
        agents=(snapshot("edge-1"),),
        run_id=run_id,
    )


def test_hostile_target_and_agent_names_stay_text() -> None:
    linked = [LinkedAgentInfo(HOSTILE, "0.1.0", (("zone", HOSTILE),), "10.0.0.9:5555", LinkState.STALE, 42.0)]
    sightings = (AgentSighting(snapshot(HOSTILE, VantageState.TIMEOUT), "edge", 7, NOW),)
    page = render_overview([report_line("edge", None)], sightings, linked, now=NOW)
    parsed = _Parsed(page)
    assert HOSTILE not in page and "script" not in parsed.tags
    assert parsed.text.count(HOSTILE) == 4  # two agent names, an address and a label, as text
    assert "stale" in parsed.text and "timeout" in parsed.text

    at = NOW - timedelta(days=1)
    leaf = LabPKI("Page").issue_leaf("api.example.test", common_name=HOSTILE_CN)
    history = target_history("edge", HOSTILE, [run_with(HOSTILE, (leaf.der,), at, 1)])
    page = render_target_page(history, now=NOW)
    parsed = _Parsed(page)
    assert HOSTILE not in page and HOSTILE_CN not in page and "script" not in parsed.tags
    assert HOSTILE in parsed.text and HOSTILE_CN in parsed.text
    report = render_report_page("edge", None, (), (), [HOSTILE])
    assert f'href="/targets/edge/{quote(HOSTILE, safe="")}"' in report and HOSTILE not in report


def test_rows_are_capped_and_the_rest_counted() -> None:
    many = [ReportRun("edge", NOW, NOW, (), tuple(snapshot(f"agent-{i:03}") for i in range(MAX_AGENTS + 50)))]
    page = render_overview([], agent_sightings(many), [], now=NOW)
    parsed = _Parsed(page)
    assert "agent-199" in parsed.text and "agent-200" not in parsed.text
    assert "+50 more agents not shown" in parsed.text
    assert "No report is configured." in parsed.text and "No agent has dialled in yet." in parsed.text


def test_empty_history_says_no_runs_yet() -> None:
    overview = _Parsed(render_overview([report_line("edge", None)], (), None, now=NOW)).text
    assert "edge no runs yet" in overview and "No run has asked an agent yet." in overview
    assert "Dial-out agents" not in overview  # no agent link: no such section
    report = _Parsed(render_report_page("edge", None, (), (), ["api.example.test:443"])).text
    assert "no runs yet" in report and "api.example.test:443" in report
    target = _Parsed(render_target_page(target_history("edge", "api.example.test:443", []), now=NOW)).text
    assert "no runs yet" in target


def test_not_found_names_what_exists() -> None:
    page = _Parsed(render_not_found("No report named 'nope' is configured.", "Reports configured", [("edge", "/x")]))
    assert "No report named 'nope' is configured. Reports configured: edge" in page.text
    assert "Reports configured: none." in _Parsed(render_not_found("Gone.", "Reports configured", [])).text


def test_the_latest_sighting_of_an_agent_wins() -> None:
    old = ReportRun("a", NOW - timedelta(hours=1), NOW, (), (snapshot("edge-1"),), run_id=1)
    new = ReportRun("b", NOW, NOW, (), (snapshot("edge-1", VantageState.REFUSED),), run_id=2)
    [seen] = agent_sightings([new, old])
    assert (seen.report, seen.run_id, seen.snapshot.state) == ("b", 2, VantageState.REFUSED)


def test_target_history_follows_a_rotation() -> None:
    pki = LabPKI("Rotate")
    first = pki.issue_leaf("api.example.test", not_after=NOW + timedelta(days=20))
    second = pki.issue_leaf("api.example.test", not_after=NOW + timedelta(days=90))
    at = NOW - timedelta(hours=3)
    runs = [
        run_with("api:443", (first.der, pki.intermediate.der), at, 1),
        run_with("api:443", (first.der, pki.intermediate.der), at + timedelta(hours=1), 2),
        run_with("api:443", (second.der,), at + timedelta(hours=2), 3),
    ]
    history = target_history("edge", "api:443", runs)
    assert [leaf.not_after for leaf in history.leaves] == [
        first.cert.not_valid_after_utc,
        second.cert.not_valid_after_utc,
    ]
    assert (history.leaves[0].first_seen, history.leaves[0].last_seen) == (at, at + timedelta(hours=1))
    assert history.leaves[1].first_seen == history.leaves[1].last_seen == at + timedelta(hours=2)
    assert [(run_id, c.kind) for run_id, c in history.changes] == [(3, ChangeKind.CERTIFICATE)]
    text = _Parsed(render_target_page(history, now=NOW)).text
    assert "20 d warning" in text and "90 d ok" in text and "run 3" in text


# --- routes over a real history ---------------------------------------------------------------------


@pytest.fixture
def history(tmp_path: Path) -> Iterator[SqliteHistory]:
    with SqliteHistory(tmp_path / "history.sqlite") as store:
        yield store


def save_sample(history: SqliteHistory) -> tuple[ReportRun, int]:
    run, _changes = sample_run()
    return run, history.save_run(replace(run, run_id=None))


def pages_of(history: SqliteHistory, *targets: str) -> FleetPages:
    reports = [ReportConfig(name="prod-edge", targets=targets), ReportConfig(name="quiet", targets=("q.test:443",))]
    return FleetPages(reports, history, clock=lambda: NOW)


def get(pages: FleetPages, path: str) -> tuple[int, str]:
    status, body = asyncio.run(pages.answer(path))
    return status, _Parsed(body.decode()).text


def test_routes_answer_from_the_history(history: SqliteHistory) -> None:
    run, run_id = save_sample(history)
    pages = pages_of(history, *(t.target for t in run.targets))
    status, overview = get(pages, "/")
    assert status == 200
    assert "prod-edge critical" in overview and f"run {run_id}" in overview and "quiet no runs yet" in overview
    assert "edge-4 timeout" in overview  # the silent agent as the run found it
    status, report = get(pages, "/reports/prod-edge")
    assert status == 200 and "Recent runs of prod-edge" in report and "login.example.test:443" in report
    status, shown = get(pages, f"/runs/{run_id}")
    assert status == 200 and HOSTILE_CN in shown
    status, target = get(pages, "/targets/prod-edge/" + quote("login.example.test:443", safe=""))
    assert status == 200 and HOSTILE_CN in target and "5 d critical" in target
    assert get(pages, "/reports/quiet/")[0] == 200


def test_unknown_paths_are_404_pages_that_name_what_exists(history: SqliteHistory) -> None:
    _run, run_id = save_sample(history)
    pages = pages_of(history, "api.example.test:443")
    status, text = get(pages, "/reports/" + quote(HOSTILE, safe=""))
    assert status == 404 and "No report named" in text and "Reports configured: Report prod-edge Report quiet" in text
    status, text = get(pages, "/runs/999")
    assert status == 404 and "No run with id '999' is kept." in text and f"run {run_id} of prod-edge" in text
    assert get(pages, "/runs/9" * 30)[0] == 404
    status, text = get(pages, "/targets/prod-edge/elsewhere.test%3A443")
    assert status == 404 and "has no target 'elsewhere.test:443'" in text and "api.example.test:443" in text
    status, text = get(pages, "/nothing/here")
    assert status == 404 and "There is no page at /nothing/here." in text


def test_a_closed_history_is_a_503_page(history: SqliteHistory) -> None:
    pages = pages_of(history)
    history.close()
    status, text = get(pages, "/")
    assert status == 503 and "The history cannot be read" in text


def test_pages_are_served_beside_metrics(history: SqliteHistory) -> None:
    save_sample(history)
    pages = pages_of(history)

    async def serve() -> list[tuple[int, dict[str, str], bytes]]:
        server, port = await serve_metrics(FleetMetrics().registry, "127.0.0.1", 0, pages=pages.answer)
        try:
            calls = [("/", "GET"), ("/", "HEAD"), ("/", "POST"), ("/metrics", "GET"), ("/runs/x", "GET")]
            return [await asyncio.to_thread(scrape, port, path, method) for path, method in calls]
        finally:
            server.close()
            await server.wait_closed()

    page, head, post, metrics, missing = asyncio.run(serve())
    assert page[0] == 200 and page[1]["content-type"] == "text/html; charset=utf-8"
    assert "Fleet overview" in page[2].decode() and not _Parsed(page[2].decode()).external
    assert head[0] == 200 and head[2] == b"" and head[1]["content-length"] == str(len(page[2]))
    assert post[0] == 405 and post[1]["allow"] == "GET, HEAD"
    assert metrics[0] == 200 and metrics[1]["content-type"].startswith("text/plain")
    assert missing[0] == 404 and b"No run with id" in missing[2]


def test_report_lines_count_findings() -> None:
    run, _changes = sample_run()
    line = report_line("edge", run)
    assert (line.status, line.targets, line.answered, line.vantages) == ("critical", 2, 3, 4)
    assert dict(line.findings)[Severity.CRITICAL] == 1
