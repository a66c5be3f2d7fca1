"""Report writers: Markdown, self-contained HTML and JSON from a run built of real lab certificates."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.outcomes import address, observe, outcome, request, silent
from tlsfleet.agent.model import Failure, Verdict
from tlsfleet.coordinator.diagnosis.model import Cause, Evidence, Finding, Severity
from tlsfleet.coordinator.json_output import finding_json
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.matrix import Matrix
from tlsfleet.coordinator.outcomes import ProbeOutcome, VantageState
from tlsfleet.coordinator.service import report_model
from tlsfleet.coordinator.service.report_model import AgentSnapshot, Change, ChangeKind, ReportRun, TargetRun
from tlsfleet.coordinator.service.reports import (
    FORMATS,
    render_html,
    render_json,
    render_markdown,
    report_paths,
    write_reports,
    writer,
)
from tlsfleet.coordinator.service.reports.html import _escaped as html_escaped
from tlsfleet.coordinator.service.reports.json_report import expiry_timeline
from tlsfleet.coordinator.service.reports.markdown import ESCAPED_KEPT, escape

API = "api.example.test:443"
LOGIN = "login.example.test:443"
HOSTILE_CN = '<script>alert("pwned")</script> & Co | *bold* `tick`'
CHAIN_CHANGE = "chain served: 2 -> 1 certificates"
CRITICAL_SUMMARY = "edge-3 is served the leaf certificate of api.example.test alone, without its intermediate."
STARTED = datetime(2025, 3, 14, 9, 30, 0, tzinfo=UTC)


def sample_run() -> tuple[ReportRun, list[Change]]:
    """Two targets seen from four agents (one silent), a critical and a warning finding, three changes."""
    now = datetime.now(UTC).replace(microsecond=0)
    started = now - timedelta(seconds=40)
    pki = LabPKI("Report")
    api_leaf = pki.issue_leaf("api.example.test")
    full = (api_leaf.der, pki.intermediate.der)
    api_req = request("api.example.test")
    labels = (("env", "prod"), ("region", "eu"))
    api_observation = observe(
        outcome("edge-1", [address("192.0.2.10", full)], req=api_req, labels=labels),
        outcome("edge-2", [address("192.0.2.10", full), address("192.0.2.11", full)], req=api_req, labels=labels),
        outcome(
            "edge-3",
            [address("192.0.2.12", (api_leaf.der,), native=Verdict.LEAF_ONLY_UNVERIFIABLE)],
            req=api_req,
            labels=(("env", "prod"), ("region", "us")),
        ),
        silent("edge-4"),
        req=api_req,
    )
    critical = Finding(
        cause=Cause.INCOMPLETE_CHAIN,
        severity=Severity.CRITICAL,
        summary=CRITICAL_SUMMARY,
        agents=("edge-3",),
        addresses=("192.0.2.12",),
        evidence=(Evidence("chain length", (("edge-1", "2"), ("edge-3", "1"))),),
        fix="Configure the server on 192.0.2.12 to send the intermediate after its leaf (the full chain file).",
        reproduce=(
            "openssl s_client -connect 192.0.2.12:443 -servername api.example.test -showcerts </dev/null",
            "echo 'a `quoted` word'",
        ),
    )
    silent_finding = Finding(
        cause=Cause.VANTAGE_UNAVAILABLE,
        severity=Severity.INFO,
        summary="edge-4 did not answer (timeout): nothing is known from there.",
        agents=("edge-4",),
    )

    hostile = pki.issue_leaf("login.example.test", common_name=HOSTILE_CN, not_after=now + timedelta(days=5))
    other = pki.issue_leaf("login.example.test", not_after=now + timedelta(days=80))
    login_req = request("login.example.test")
    login_observation = observe(
        outcome("edge-1", [address("192.0.2.20", (hostile.der, pki.intermediate.der))], req=login_req),
        outcome("edge-2", [address("192.0.2.20", (hostile.der, pki.intermediate.der))], req=login_req),
        outcome("edge-3", [address("192.0.2.21", (other.der, pki.intermediate.der))], req=login_req),
        outcome("edge-4", [address("192.0.2.22", connect_failure=Failure.REFUSED)], req=login_req),
        req=login_req,
    )
    warning = Finding(
        cause=Cause.EXPIRING_SOON,
        severity=Severity.WARNING,
        summary=f"The leaf certificate {HOSTILE_CN} served for login.example.test:443 expires in 5 days.",
        agents=("edge-1", "edge-2"),
        addresses=("192.0.2.20",),
        fix="Renew the certificate.",
    )
    answering = tuple(
        AgentSnapshot(
            name=f"edge-{i}",
            address=f"edge-{i}.test:7443",
            labels=(("env", "prod"), ("region", "us" if i == 3 else "eu")),
            state=VantageState.OK,
            version="0.1.0",
            clock_offset_ms=3.0,
            clock_error_ms=1.0,
        )
        for i in (1, 2, 3)
    )
    timed_out = AgentSnapshot(
        name="edge-4", address="edge-4.test:7443", labels=(), state=VantageState.TIMEOUT, error="no answer in 5 s"
    )
    agents = (*answering, timed_out)
    run = ReportRun(
        report="prod-edge",
        started_at=started,
        finished_at=started + timedelta(seconds=12.5),
        targets=(
            TargetRun(API, api_observation, (critical, silent_finding), duration_ms=5100.0),
            TargetRun(LOGIN, login_observation, (warning,), duration_ms=4200.0),
        ),
        agents=agents,
        run_id=42,
    )
    previous = started - timedelta(minutes=15)
    changes = [
        Change(
            ChangeKind.CERTIFICATE,
            CHAIN_CHANGE,
            target=API,
            agent="edge-3",
            before="2 certificates",
            after="1 certificate",
            since=previous,
        ),
        Change(
            ChangeKind.FINDING_NEW,
            "New critical finding: incomplete chain served to edge-3.",
            target=API,
            since=previous,
            severity="critical",
            cause="incomplete_chain",
        ),
        Change(
            ChangeKind.TRUST_STORE,
            "edge-2's system store gained the root Example <Root> CA.",
            agent="edge-2",
            before="140 roots",
            after="141 roots",
            since=started,
        ),
    ]
    return run, changes


@pytest.fixture(scope="module")
def sample() -> tuple[ReportRun, list[Change]]:
    return sample_run()


# --- Markdown ---------------------------------------------------------------------------------------------


def test_markdown_has_title_summary_matrix_findings_and_changes(sample: tuple[ReportRun, list[Change]]) -> None:
    run, changes = sample
    text = render_markdown(run, changes)
    assert text.startswith("# tlsfleet report prod-edge, run 42\n")
    assert "took 12.5 s" in text
    assert "- Targets: 2" in text
    assert "- Vantages: 3 answered, 1 silent (edge-4 (timeout))" in text
    assert "- Findings: 1 critical, 1 warning, 1 info" in text
    assert "- Changes since the previous run: 3" in text
    assert text.index("## api.example.test:443") < text.index("## login.example.test:443")
    api = text[text.index("## api.example.test:443") : text.index("## login.example.test:443")]
    # The matrix: a header row naming the columns, one row per agent and address, and edge-3's
    # one-certificate chain in bold as the odd one out.
    assert "| agent | labels | address | TLS | leaf SANs | sha256 | chain | issuer |" in api
    edge3 = next(line for line in api.splitlines() if line.startswith("| edge-3 |"))
    assert "| **1** |" in edge3
    assert "| 2 |" in next(line for line in api.splitlines() if line.startswith("| edge-1 |"))
    assert "Cells in **bold** differ from most rows." in api
    # Findings: most severe first, with fix and reproduce commands in a fence longer than their backticks.
    assert api.index("#### CRITICAL: `incomplete_chain`") < api.index("#### INFO: `vantage_unavailable`")
    assert escape(CRITICAL_SUMMARY) in api
    assert "- Fix: Configure the server on 192.0.2.12" in api
    assert "```sh\nopenssl s_client -connect 192.0.2.12:443" in api
    # Changes since the previous run, with the time the new state was first seen.
    change_line = next(line for line in api.splitlines() if CHAIN_CHANGE.replace(">", "\\>") in line)
    since = utc(run.started_at - timedelta(minutes=15))
    assert since in change_line and "edge-3" in change_line and "2 certificates" in change_line
    # Agent-wide changes get their own section.
    assert "## Fleet changes since the previous run" in text
    assert "gained the root Example \\<Root\\> CA" in text


def test_markdown_escapes_hostile_certificate_subjects(sample: tuple[ReportRun, list[Change]]) -> None:
    run, changes = sample
    text = render_markdown(run, changes)
    assert "<script>" not in text
    assert '\\<script\\>alert("pwned")\\</script\\> \\& Co \\| \\*bold\\* \\`tick\\`' in text
    # Every table row keeps its column count: a `|` in a subject cannot add a cell.
    login = text[text.index("## login.example.test:443") :]
    table = [line for line in login.split("### Comparison")[1].split("###")[0].splitlines() if line.startswith("|")]
    widths = {len(re.findall(r"(?<!\\)\|", line)) for line in table}
    assert len(widths) == 1, table


def test_markdown_escape_and_code_fences() -> None:
    assert escape("a|b\nc<d>*e*_f_") == "a\\|b c\\<d\\>\\*e\\*\\_f\\_"
    run = ReportRun("r", STARTED, STARTED, targets=(), agents=())
    text = render_markdown(run, [])
    assert "unsaved run" in text and "- Targets: 0" in text and "- Findings: 0 critical, 0 warning, 0 info" in text


def test_report_escapes_work_once_per_distinct_text_and_keep_a_bounded_number() -> None:
    # A 200-target, 10-agent report escapes the same agent names and verdicts thousands of times.
    for escaper, text, shown in (
        (escape, "bench-1 <ok>", "bench-1 \\<ok\\>"),
        (html_escaped, "a<b>&", "a&lt;b&gt;&amp;"),
    ):
        escaper.cache_clear()
        assert [escaper(text) for _ in range(3)] == [shown] * 3
        info = escaper.cache_info()
        assert (info.misses, info.hits) == (1, 2)
        assert info.maxsize == ESCAPED_KEPT


def test_markdown_lists_certificate_expiry_soonest_first(sample: tuple[ReportRun, list[Change]]) -> None:
    run, changes = sample
    text = render_markdown(run, changes)
    login = text[text.index("## login.example.test:443") :]
    rows = [line for line in login.split("### Certificate expiry")[1].splitlines() if line.startswith("| leaf")]
    assert len(rows) == 2
    assert "| **critical** |" in rows[0] and "| ok |" in rows[1]


# --- HTML ---------------------------------------------------------------------------------------------------

_VOID = {"meta", "br", "hr", "img", "input", "link", "wbr", "col", "source", "area", "base", "embed", "track"}


class _Checker(HTMLParser):
    """Records tags, attributes and text, and fails on tags closed out of order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.errors: list[str] = []
        self.style = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'} at {self.getpos()}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "style":
            self.style += data
        else:
            self.text.append(data)


def _parse(page: str) -> _Checker:
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert not checker.errors, checker.errors[:5]
    assert not checker.stack, f"unclosed: {checker.stack}"
    return checker


def test_html_is_well_formed_and_self_contained(sample: tuple[ReportRun, list[Change]]) -> None:
    run, changes = sample
    page = render_html(run, changes)
    assert page.startswith("<!DOCTYPE html>")
    checker = _parse(page)
    names = [tag for tag, _ in checker.tags]
    assert names.count("html") == names.count("head") == names.count("body") == 1
    assert "script" not in names and "link" not in names and "img" not in names and "iframe" not in names
    for tag, attrs in checker.tags:
        assert "src" not in attrs, tag
        href = attrs.get("href")
        assert href is None or href.startswith("#"), href
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
    assert "url(" not in checker.style and "@import" not in checker.style and "http" not in checker.style
    # "http" may appear only as text (a reproduce command, an agent's error), never in markup.
    markup = re.sub(r">[^<]*<", "><", page)
    assert "http" not in markup
    # Every in-page link leads somewhere.
    ids = {attrs["id"] for _tag, attrs in checker.tags if attrs.get("id")}
    for _tag, attrs in checker.tags:
        if attrs.get("href"):
            assert attrs["href"][1:] in ids


def test_html_escapes_hostile_certificate_subjects(sample: tuple[ReportRun, list[Change]]) -> None:
    run, changes = sample
    page = render_html(run, changes)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt; &amp; Co" in page
    checker = _parse(page)
    text = "".join(checker.text)
    assert HOSTILE_CN in text  # shown to the reader as the text it is
    titles = [attrs.get("title") for _tag, attrs in checker.tags if attrs.get("title")]
    # The full subject (RFC 4514, which escapes < > " itself) arrives intact through its attribute.
    assert any(t.startswith('CN=\\<script\\>alert(\\"pwned\\")') for t in titles if t), titles


def test_html_shows_summary_matrix_findings_changes_and_expiry(sample: tuple[ReportRun, list[Change]]) -> None:
    run, changes = sample
    page = render_html(run, changes)
    checker = _parse(page)
    text = " ".join(" ".join(checker.text).split())
    assert "prod-edge" in text and "run 42" in text
    assert "3 / 4 vantages answered" in text and "silent: edge-4 (timeout)" in text
    assert CRITICAL_SUMMARY in text and CHAIN_CHANGE in text
    assert "gained the root Example <Root> CA" in text
    classes = [attrs.get("class") or "" for _tag, attrs in checker.tags]
    assert classes.count("badge critical") >= 2  # the finding and the overview row
    assert "finding critical" in classes and "finding warning" in classes and "finding info" in classes
    # Differing cells carry a class and a visible marker: edge-3's chain of one on the api target.
    api = page[page.index('id="target-0"') : page.index('id="target-1"')]
    assert re.search(r'<td class="c-chain diff"[^>]*><span class="mark">≠</span>1</td>', api)
    edge4 = api[api.index('<td class="c-agent">edge-4</td>') :].split("</tr>")[0]
    assert edge4.count(" diff") == 1 and "agent timeout" in edge4  # only its verdict; empty cells stay plain
    # The expiry timeline: one row per distinct served certificate, soonest first, coloured by threshold.
    login = page[page.index('id="target-1"') :]
    timeline = login[login.index('class="expiry"') :]
    statuses = re.findall(r'<div class="bar (\w+)" style="width:([\d.]+)%">', timeline)
    assert [s for s, _ in statuses] == ["critical", "ok", "ok"]  # 5-day leaf, 80-day leaf, intermediate
    widths = [float(w) for _, w in statuses]
    assert 0 < widths[0] < widths[1] < widths[2] == 100.0


def test_html_marks_abandoned_runs_and_handles_an_empty_run() -> None:
    run = ReportRun("nightly", STARTED, STARTED + timedelta(minutes=3), targets=(), agents=(), abandoned=True)
    page = render_html(run, [])
    _parse(page)
    assert "Abandoned: the run stopped before every target was probed." in page
    assert "3.0 min" in page and "unsaved run" in page


def test_expiry_timeline_counts_days_from_the_run_start() -> None:
    pki = LabPKI("Expiry")
    now = datetime.now(UTC).replace(microsecond=0)
    expired = pki.issue_leaf(
        "old.example.test", not_before=now - timedelta(days=100), not_after=now - timedelta(days=2)
    )
    req = request("old.example.test")
    served = (expired.der, pki.intermediate.der, pki.root.der)
    target = TargetRun("old.example.test:443", observe(outcome("a", [address("192.0.2.1", served)], req=req)), (), 1.0)
    entries = expiry_timeline(target, now, warning_days=30, critical_days=7)
    assert [(e.role, e.status) for e in entries] == [("leaf", "expired"), ("intermediate", "ok"), ("root", "ok")]
    assert entries[0].days_left == pytest.approx(-2, abs=0.01)
    assert entries[0].name == "old.example.test" and entries[0].agents == ("a",)
    with pytest.raises(ValueError, match="critical <= warning"):
        expiry_timeline(target, now, warning_days=5, critical_days=7)


# --- JSON ---------------------------------------------------------------------------------------------------


def test_json_shape(sample: tuple[ReportRun, list[Change]]) -> None:
    run, changes = sample
    data = json.loads(json.dumps(render_json(run, changes)))
    assert data["schema"] == 1 and data["report"] == "prod-edge" and data["run_id"] == 42
    assert data["started_at"].endswith("Z") and data["duration_s"] == 12.5 and data["abandoned"] is False
    assert data["summary"] == {
        "targets": 2,
        "agents_answered": ["edge-1", "edge-2", "edge-3"],
        "agents_silent": [{"agent": "edge-4", "state": "timeout", "error": "no answer in 5 s"}],
        "findings": {"critical": 1, "warning": 1, "info": 1},
        "worst": "critical",
        "changes": 3,
    }
    assert [a["agent"] for a in data["agents"]] == ["edge-1", "edge-2", "edge-3", "edge-4"]
    api, login = data["targets"]
    assert api["target"] == API and api["answered"] == 3 and api["silent"] == 1
    assert api["findings"] == [finding_json(f) for f in run.targets[0].findings]
    assert [v["agent"] for v in api["vantages"]] == ["edge-1", "edge-2", "edge-3", "edge-4"]
    assert api["vantages"][3]["state"] == "timeout" and api["vantages"][3]["result"] is None
    assert len(api["vantages"][2]["result"]["addresses"][0]["certificates"]) == 1
    assert [e["status"] for e in login["expiry"]] == ["critical", "ok", "ok"]
    assert login["expiry"][0]["subject"].startswith('CN=\\<script\\>alert(\\"pwned\\")')
    chain_change = data["changes"][0]
    assert chain_change == {
        "kind": "certificate",
        "summary": CHAIN_CHANGE,
        "target": API,
        "agent": "edge-3",
        "before": "2 certificates",
        "after": "1 certificate",
        "since": (run.started_at - timedelta(minutes=15)).isoformat().replace("+00:00", "Z"),
        "severity": "",
        "cause": "",
    }
    assert data["changes"][1]["severity"] == "critical" and data["changes"][2]["target"] == ""


# --- Writing ------------------------------------------------------------------------------------------------


def test_write_reports_names_files_and_refreshes_latest(sample: tuple[ReportRun, list[Change]], tmp_path: Path) -> None:
    run, changes = sample
    written = write_reports(run, changes, tmp_path, FORMATS)
    stamp = run.started_at.strftime("%Y%m%dT%H%M%SZ")
    assert written == [tmp_path / "prod-edge" / f"42-{stamp}.{ext}" for ext in ("html", "md", "json")]
    for path in written:
        latest = path.with_name("latest" + path.suffix)
        assert latest.read_bytes() == path.read_bytes()
        assert latest.samefile(path)  # linked, not written a second time
        assert path.stat().st_mode & 0o777 == 0o644
    assert json.loads(written[2].read_text())["run_id"] == 42
    assert written[1].read_text() == render_markdown(run, changes)
    # The next run gets its own files; latest now holds it.
    later = ReportRun(
        run.report, run.started_at + timedelta(minutes=15), run.finished_at + timedelta(minutes=15), (), (), run_id=43
    )
    (html_path,) = write_reports(later, [], tmp_path, ["html"])
    assert html_path.name.startswith("43-")
    assert (tmp_path / "prod-edge" / "latest.html").read_text() == html_path.read_text()
    assert (tmp_path / "prod-edge" / "latest.md").read_text() == written[1].read_text()
    names = sorted(p.name for p in (tmp_path / "prod-edge").iterdir())
    assert not [n for n in names if n.startswith(".")], names  # no temporary file left behind
    assert len(names) == 7


def test_latest_outlives_its_run_file_and_is_copied_where_links_fail(
    sample: tuple[ReportRun, list[Change]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, changes = sample
    (linked,) = write_reports(run, changes, tmp_path / "linked", ["json"])
    expected = linked.read_bytes()
    linked.unlink()  # as pruning removes an old run's file
    assert (linked.parent / "latest.json").read_bytes() == expected

    def no_links(source: object, target: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(writer.os, "link", no_links)
    (copied,) = write_reports(run, changes, tmp_path / "copied", ["json"])
    latest = copied.parent / "latest.json"
    assert latest.read_bytes() == copied.read_bytes() and not latest.samefile(copied)
    assert latest.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in copied.parent.iterdir()) == sorted([copied.name, "latest.json"])


def test_each_target_s_matrix_is_built_once_for_every_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run, changes = sample_run()  # its own run: the module's may have built its matrices already
    built: list[int] = []
    real = report_model.build_matrix

    def counting(outcomes: Sequence[ProbeOutcome]) -> Matrix:
        built.append(id(outcomes))
        return real(outcomes)

    monkeypatch.setattr(report_model, "build_matrix", counting)
    write_reports(run, changes, tmp_path, FORMATS)
    assert sorted(built) == sorted(id(t.observation.outcomes) for t in run.targets)
    assert "Comparison matrix" in (tmp_path / run.report / "latest.html").read_text()


def test_write_reports_rejects_unknown_formats_and_unsafe_names(tmp_path: Path) -> None:
    run = ReportRun("prod-edge", STARTED, STARTED, targets=(), agents=())
    with pytest.raises(ValueError, match=r"'pdf' is not known; accepted: html, markdown, json"):
        write_reports(run, [], tmp_path, ["html", "pdf"])
    with pytest.raises(ValueError, match="accepted: html, markdown, json"):
        write_reports(run, [], tmp_path, [])
    assert not any(tmp_path.iterdir())  # nothing written when a format is wrong
    for bad in ("../escape", "a/b", ".hidden", ""):
        with pytest.raises(ValueError, match="cannot name a directory"):
            report_paths(ReportRun(bad, STARTED, STARTED, (), ()), tmp_path, "json")
    with pytest.raises(ValueError, match="critical <= warning"):
        write_reports(run, [], tmp_path, ["json"], expiry_warning_days=3, expiry_critical_days=7)
    assert report_paths(run, tmp_path, "markdown")[0].name == "unsaved-20250314T093000Z.md"


def utc(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def test_streamed_json_is_the_same_document() -> None:
    from tlsfleet.coordinator.service.reports.json_report import iter_json

    run, changes = sample_run()
    assert json.loads("".join(iter_json(run, changes))) == render_json(run, changes)


@pytest.mark.parametrize("hostile", ["\x7f", "\x9b", "\u202e", "\u2066", "\u061c", "caf\u00e9 \u202egnp.exe"])
def test_streamed_json_escapes_controls_and_direction_marks_and_leaves_the_rest(hostile: str) -> None:
    from tlsfleet.coordinator.service.reports.json_report import iter_json

    run, changes = sample_run()
    text = "".join(iter_json(replace(run, note=f"moved {hostile} here"), changes))
    assert json.loads(text)["note"] == f"moved {hostile} here"
    escaped = [c for c in hostile if c in "\x7f\x9b\u202e\u2066\u061c"]
    assert not any(c in text for c in escaped)
    assert all(f"\\u{ord(c):04x}" in text for c in escaped)
    assert ("caf\u00e9" in text) == ("caf\u00e9" in hostile)  # other non-ASCII text stays as it is
    plain = "".join(iter_json(run, changes))
    assert plain.isascii() and "\\u" not in plain
