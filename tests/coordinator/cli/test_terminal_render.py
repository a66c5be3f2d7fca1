"""The matrix and findings as a terminal of a given width shows them: rich renders into a string with the
escape codes a colour terminal gets, from matrices of real certificates."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import replace

import pytest
from rich.console import Console

from tests.coordinator.test_matrix import _ok_address, _outcome, _result
from tlsfleet.agent.model import Failure, Handshake, NativeVerdict, StoreVerdict, Verdict
from tlsfleet.coordinator.cli.render import BLOCKS_BELOW, print_findings, print_matrix
from tlsfleet.coordinator.diagnosis.model import Cause, Evidence, Finding, Severity
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.matrix import build_matrix
from tlsfleet.coordinator.outcomes import ProbeOutcome
from tlsfleet.coordinator.probing import build_request

HOST = "api.lab.test"
REQUEST = build_request(f"{HOST}:443", now_ns=0)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
GREEN, RED = "32", "31"


@pytest.fixture(scope="module")
def chain() -> tuple[bytes, ...]:
    pki = LabPKI("Terminal")
    return (pki.issue_leaf(HOST, "127.0.0.1").der, pki.intermediate.der)


def _untrusted(chain: tuple[bytes, ...]):  # -> AddressResult
    return replace(
        _ok_address("127.0.0.1", chain),
        handshake=Handshake(failure=Failure.CERT_VERIFY, tls_version="TLSv1.3"),
        native=NativeVerdict(Verdict.UNKNOWN_ISSUER, verify_code=20),
        stores=tuple(StoreVerdict(n, Verdict.UNKNOWN_ISSUER, Verdict.UNKNOWN_ISSUER) for n in ("system", "certifi")),
    )


def _screen(width: int, outcomes: Sequence[ProbeOutcome], *, colour: bool = True) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=colour, color_system="standard" if colour else None)
    print_matrix(console, REQUEST, outcomes, build_matrix(outcomes))
    return out.getvalue()


def _sgr_before(line: str, word: str) -> str:
    """The escape-code parameters in force where `word` starts on `line`."""
    at = line.index(word)
    codes = ANSI.findall(line[:at])
    return codes[-1][2:-1] if codes else ""


def _three(chain: tuple[bytes, ...], healthy: int) -> list[ProbeOutcome]:
    names = ["web-1", "web-2", "batch-1"]
    return [
        _outcome(name, _result(_ok_address("127.0.0.1", chain) if i < healthy else _untrusted(chain)))
        for i, name in enumerate(names)
    ]


@pytest.mark.parametrize(
    ("target", "said"),
    [
        ("api.example.test:443", "(SNI api.example.test,"),
        ("127.0.0.1:443", "(no SNI: an IP address,"),
        ("[::1]:443", "(no SNI: an IP address,"),
    ],
)
def test_the_caption_says_sni_only_where_a_name_is_sent(chain: tuple[bytes, ...], target: str, said: str) -> None:
    outcomes = [_outcome("web-1", _result(_ok_address("127.0.0.1", chain)))]
    out = io.StringIO()
    request = build_request(target, now_ns=0)
    print_matrix(Console(file=out, width=120), request, outcomes, build_matrix(outcomes))
    assert said in out.getvalue().splitlines()[0]


def test_at_80_columns_rows_are_blocks_under_one_shared_line(chain: tuple[bytes, ...]) -> None:
    text = ANSI.sub("", _screen(80, _three(chain, healthy=2)))
    lines = [line.rstrip() for line in text.splitlines()]
    assert all(len(line) <= 80 for line in lines), text
    assert lines[1].startswith("all 3 vantages: address 127.0.0.1 · TLSv1.3"), text
    assert "┃" not in text and "│" not in text  # no table at this width
    assert [line for line in lines if line.startswith("  native verdict:")] == [
        "  native verdict: ok",
        "  native verdict: ok",
        "  native verdict: unknown_issuer (20)",
    ]
    assert "  trust stores:   unknown_issuer: all 2" in lines
    assert len(lines) < 16, text


@pytest.mark.parametrize("width", [BLOCKS_BELOW, 120, 200])
def test_from_100_columns_a_table_of_what_differs(chain: tuple[bytes, ...], width: int) -> None:
    text = ANSI.sub("", _screen(width, _three(chain, healthy=2)))
    lines = text.splitlines()
    header = next(line for line in lines if "native verdict" in line)
    assert header.split() == ["agent", "native", "verdict", "trust", "stores"]
    assert all(len(line) <= width for line in lines)
    assert len(lines) < 12, text


def test_a_healthy_minority_is_green_and_the_failing_majority_red(chain: tuple[bytes, ...]) -> None:
    for width in (80, 120):
        lines = _screen(width, _three(chain, healthy=1)).splitlines()
        named = next(i for i, line in enumerate(lines) if "web-1" in line)
        healthy = lines[named + 1] if width < BLOCKS_BELOW else lines[named]  # its block's first line, or its row
        failing = [line for line in lines if "unknown_issuer (20)" in line]
        assert GREEN in _sgr_before(healthy, "ok").split(";"), repr(healthy)
        assert RED not in _sgr_before(healthy, "ok").split(";"), repr(healthy)
        assert len(failing) == 2
        assert all(RED in _sgr_before(line, "unknown_issuer (20)").split(";") for line in failing)


def test_two_rows_are_marked_as_differing_without_naming_an_odd_one(chain: tuple[bytes, ...]) -> None:
    outcomes = [
        _outcome("trusting", _result(_ok_address("127.0.0.1", chain))),
        _outcome("plain", _result(_untrusted(chain))),
    ]
    text = _screen(120, outcomes, colour=False)
    assert "ok *" in text and "unknown_issuer (20) *" in text
    assert "* differs between the rows, with no majority" in text
    assert "differs from most rows" not in text
    coloured = _screen(120, outcomes)
    line = next(line for line in coloured.splitlines() if "trusting" in line)
    assert RED not in _sgr_before(line, "ok").split(";")


def test_a_long_san_list_is_capped(chain: tuple[bytes, ...]) -> None:
    pki = LabPKI("Terminal Many")
    many = (pki.issue_leaf(*(f"n{i}.lab.test" for i in range(40))).der, pki.intermediate.der)
    outcomes = [_outcome(f"web-{i}", _result(_ok_address("127.0.0.1", many))) for i in range(3)]
    text = ANSI.sub("", _screen(80, outcomes))
    assert "+35" in text and "n5.lab.test" not in text
    assert len(text.splitlines()) < 14


def test_reproduce_commands_are_printed_whole_on_one_line() -> None:
    command = (
        "openssl s_client -connect 127.0.0.1:443 -servername api.lab.test -showcerts </dev/null 2>/dev/null"
        " | awk '/BEGIN CERT/,/END CERT/' > chain.pem"
    )
    finding = Finding(
        Cause.PRIVATE_CA_NOT_TRUSTED, Severity.CRITICAL, "word " * 40, ("batch-1",), reproduce=(command, "true")
    )
    out = io.StringIO()
    print_findings(Console(file=out, width=80, force_terminal=True), [finding])
    lines = ANSI.sub("", out.getvalue()).splitlines()
    assert f"     $ {command}" in lines
    assert "     $ true" in lines


def test_notes_alone_read_as_no_findings_one_line_each() -> None:
    """A healthy fleet with a runtime store nobody uses: an info note, and the words say nothing fails; its
    evidence and fix only when asked (`--notes`), and in full beside a finding that matters."""
    note = Finding(
        cause=Cause.RUNTIME_STORE_DIFFERS,
        severity=Severity.INFO,
        summary="java lacks it",
        agents=("a",),
        evidence=(Evidence("store verdicts", (("a", "java unknown_issuer"),)),),
        fix="import the root",
        reproduce=("keytool -list",),
    )

    def shown(findings: list[Finding], **options: bool) -> list[str]:
        out = io.StringIO()
        print_findings(Console(file=out, width=200), findings, **options)
        return out.getvalue().splitlines()

    assert shown([note]) == [
        "No findings at warning or above; 1 note for the record (--notes shows their evidence and fixes):",
        "1.  INFO  runtime_store_differs: java lacks it",
    ]
    detailed = shown([note], note_details=True)
    assert detailed[0] == "No findings at warning or above; 1 note for the record:"
    assert "     fix: import the root" in detailed and "     $ keytool -list" in detailed
    mixed = shown([replace(note, severity=Severity.WARNING), note])
    assert mixed[0] == "Findings (2), most severe first:" and mixed.count("     fix: import the root") == 2


def _described(name: str):  # -> DescribeOutcome
    from tlsfleet.agent.model import AgentDescription, AgentIdentity, HostFacts, TrustStore
    from tlsfleet.coordinator.outcomes import ClockEstimate, DescribeOutcome, VantageInfo, VantageState

    facts = HostFacts(
        hostname=name,
        os="Debian GNU/Linux 12 (bookworm) (Linux 6.1.0-28-amd64 x86_64)",
        python_version="3.11.2",
        openssl_version="OpenSSL 3.0.15 3 Sep 2024",
        agent_version="0.1.0",
        runtimes=(
            ("python", "/usr/bin/python3 -> /usr/bin/python3.11 (system interpreter in /usr/bin): no certifi"),
            ("java", "/usr/bin/java -> /usr/lib/jvm/java-17-openjdk-amd64/bin/java (`java` on PATH)"),
        ),
    )
    stores = tuple(
        TrustStore(n, "file", f"/etc/ssl/{n}.pem", 144, "4f1c2723" * 8) for n in ("system", "ssl_cert_file", "java")
    )
    return DescribeOutcome(
        vantage=VantageInfo(name=name, address=f"{name}.internal:7443", labels=(("env", "prod"),)),
        state=VantageState.OK,
        description=AgentDescription(
            identity=AgentIdentity(name=name, version="0.1.0"),
            facts=facts,
            trust_stores=stores,
            agent_time_ns=0,
            probe_policy=("built-in deny 169.254.0.0/16 (link-local)", "allow everything else"),
        ),
        clock=ClockEstimate(offset_ms=3.0, error_ms=1.0),
    )


@pytest.mark.parametrize("width", [80, 120])
def test_the_agent_list_is_one_block_per_agent_where_its_table_would_not_fit(width: int) -> None:
    from tlsfleet.coordinator.cli.render import print_agents

    out = io.StringIO()
    print_agents(Console(file=out, width=width, color_system=None), [_described("web-1"), _described("web-2")])
    lines = out.getvalue().splitlines()
    assert "┃" not in out.getvalue() and all(len(line) <= width for line in lines)
    assert lines[1].startswith("web-1  ok  web-1.internal:7443  0.1.0  env=prod  +3 ms ±1")
    assert any(line.startswith("  trust stores: system, ssl_cert_file, java (144 roots") for line in lines)
    assert sum(line.startswith("  probe policy: built-in deny") for line in lines) == 2


def test_the_agent_list_is_a_table_where_it_fits() -> None:
    from tlsfleet.coordinator.cli.render import print_agents

    out = io.StringIO()
    print_agents(Console(file=out, width=400, color_system=None), [_described("web-1")])
    assert "┃ agent" in out.getvalue() and "trust stores" in out.getvalue().splitlines()[2]


def test_a_store_of_one_root_is_counted_in_the_singular() -> None:
    from dataclasses import replace

    from tlsfleet.agent.model import TrustStore
    from tlsfleet.coordinator.cli.render import print_agents

    described = _described("web-1")
    assert described.description is not None
    one = TrustStore("ssl_cert_file", "file", "/srv/root.pem", 1, "889973cb" * 8)
    out = io.StringIO()
    print_agents(
        Console(file=out, width=80, color_system=None),
        [replace(described, description=replace(described.description, trust_stores=(one,)))],
    )
    assert "  trust stores: ssl_cert_file (1 root, 889973cb)" in out.getvalue()


@pytest.mark.parametrize(("extra_env", "loads_rich"), [({}, False), ({"FORCE_COLOR": "1"}, True)])
def test_the_progress_line_loads_rich_only_where_it_may_show(extra_env: dict[str, str], loads_rich: bool) -> None:
    """A run whose stderr is a pipe (cron, CI, a log file) has no line to show, so it does not pay for rich."""
    import os
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from tlsfleet.coordinator.cli.progress import TargetProgress, showing\n"
        "with showing(TargetProgress(3)):\n"
        "    pass\n"
        "print('rich.live' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")} | extra_env
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True, env=env
    )
    assert done.stdout.split() == [str(loads_rich)], done.stderr
