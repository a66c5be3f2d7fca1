"""The comparison matrix: rows per vantage and address from real certificates, and which cells stand out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tlsfleet.agent.model import (
    AddressResult,
    Failure,
    Handshake,
    NativeVerdict,
    ProbeResult,
    Resolution,
    StoreVerdict,
    Target,
    Verdict,
)
from tlsfleet.agent.trust.certinfo import summarize
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.matrix import CLOCK_HIGHLIGHT_MS, COLUMNS, Matrix, MatrixRow, build_matrix
from tlsfleet.coordinator.outcomes import ClockEstimate, ProbeOutcome, VantageInfo, VantageState

HOST = "api.lab.test"
KEYS = tuple(key for key, _ in COLUMNS)
TYPICAL_CLOCK = ClockEstimate(3.0, 1.0)


# Its own PKI, not the shared one in conftest.py: the issuer cells asserted below read
# "Matrix Intermediate CA".
@pytest.fixture(scope="module")
def pki() -> LabPKI:
    return LabPKI("Matrix")


@pytest.fixture(scope="module")
def chain(pki: LabPKI) -> tuple[bytes, ...]:
    return (pki.issue_leaf(HOST, "127.0.0.1").der, pki.intermediate.der)


def _ok_address(address: str, chain: tuple[bytes, ...], **native: object) -> AddressResult:
    return AddressResult(
        address=address,
        connect_ms=0.4,
        handshake=Handshake(tls_version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256", duration_ms=3.0),
        chain=chain,
        native=NativeVerdict(**{"verdict": Verdict.OK, **native}),  # type: ignore[arg-type]
        stores=(StoreVerdict("system", Verdict.OK, Verdict.OK), StoreVerdict("certifi", Verdict.OK, Verdict.OK)),
    )


def _result(*addresses: AddressResult, resolution: Resolution | None = None) -> ProbeResult:
    return ProbeResult(
        target=Target(HOST, 443),
        sni=HOST,
        expected_name=HOST,
        resolution=resolution or Resolution(tuple(a.address for a in addresses), 1.0),
        addresses=addresses,
        trust_stores=(),
        agent_received_ns=1,
        agent_replied_ns=2,
    )


def _outcome(
    name: str,
    result: ProbeResult | None,
    *,
    state: VantageState = VantageState.OK,
    labels: tuple[tuple[str, str], ...] = (),
    clock: ClockEstimate | None = TYPICAL_CLOCK,
    error: str = "",
) -> ProbeOutcome:
    vantage = VantageInfo(name=name, address=f"10.0.0.{len(name)}:7443", labels=labels)
    return ProbeOutcome(vantage=vantage, state=state, result=result, clock=clock, error=error)


def _flagged(matrix: Matrix, row: int) -> set[str]:
    return {key for index, key in matrix.differing if index == row}


# --- rows ---------------------------------------------------------------------------------------------


def test_ok_vantage_with_two_addresses(chain: tuple[bytes, ...]) -> None:
    outcome = _outcome(
        "web-1",
        _result(_ok_address("127.0.0.1", chain), _ok_address("::1", chain)),
        labels=(("env", "prod"), ("region", "eu-west")),
    )
    matrix = build_matrix([outcome])
    assert len(matrix.rows) == 2
    leaf = summarize(chain[0])
    for row, address in zip(matrix.rows, ("127.0.0.1", "::1"), strict=True):
        assert row.ok is True
        assert len(row.cells) == len(COLUMNS)
        assert row.cell("agent") == "web-1"
        assert row.cell("labels") == "env=prod,region=eu-west"
        assert row.cell("address") == address
        assert row.cell("tls") == "TLSv1.3"
        assert row.cell("leaf") == f"{HOST}, 127.0.0.1"
        assert row.cell("fingerprint") == leaf.sha256[:12]
        assert row.cell("chain") == "2"
        assert row.cell("issuer") == "Matrix Intermediate CA"
        assert row.cell("native") == "ok"
        assert row.cell("stores") == "ok: system, certifi"
        assert row.cell("clock") == "+3 ms ±1"
    # Everything but the address is the same on both rows.
    assert {key for _, key in matrix.differing} <= {"address"}


def test_offline_vantage_is_one_row_saying_so() -> None:
    outcome = _outcome("db-1", None, state=VantageState.OFFLINE, error="connection refused", clock=None)
    (row,) = build_matrix([outcome]).rows
    assert row.ok is False
    assert row.cell("agent") == "db-1"
    assert row.cell("address") == outcome.vantage.address
    assert row.cell("native") == "agent offline: connection refused"
    assert row.cell("clock") == "?"
    for key in ("tls", "leaf", "fingerprint", "chain", "issuer", "stores"):
        assert row.cell(key) == ""


def test_timed_out_vantage_without_error_text() -> None:
    (row,) = build_matrix([_outcome("db-2", None, state=VantageState.TIMEOUT)]).rows
    assert row.cell("native") == "agent timeout"
    assert row.ok is False


def test_dns_failure_is_one_row_without_address() -> None:
    result = _result(resolution=Resolution((), 30.0, Failure.DNS_ERROR, "Name or service not known"))
    (row,) = build_matrix([_outcome("web-2", result)]).rows
    assert row.ok is False
    assert row.cell("address") == "-"
    assert row.cell("native") == "dns_error: Name or service not known"
    assert row.cell("agent") == "web-2"
    assert row.cell("clock") == "+3 ms ±1"


def test_resolution_without_failure_or_addresses() -> None:
    (row,) = build_matrix([_outcome("web-2", _result(resolution=Resolution((), 1.0)))]).rows
    assert row.cell("native") == "no address"


def test_connect_failure_row() -> None:
    address = AddressResult("127.0.0.1", connect_failure=Failure.REFUSED, connect_error="Connection refused")
    bare = AddressResult("127.0.0.2", connect_failure=Failure.CONNECT_TIMEOUT)
    rows = build_matrix([_outcome("web-3", _result(address, bare))]).rows
    assert [r.cell("address") for r in rows] == ["127.0.0.1", "127.0.0.2"]
    assert rows[0].cell("native") == "refused: Connection refused"
    assert rows[1].cell("native") == "connect_timeout"
    for row in rows:
        assert row.ok is False
        for key in ("tls", "leaf", "fingerprint", "chain", "issuer", "stores"):
            assert row.cell(key) == ""


def test_native_failure_cells(pki: LabPKI, chain: tuple[bytes, ...]) -> None:
    leaf_only = replace(
        _ok_address("127.0.0.1", chain[:1]),
        handshake=Handshake(failure=Failure.CERT_VERIFY, tls_version="TLSv1.3"),
        native=NativeVerdict(Verdict.UNKNOWN_ISSUER, verify_code=20, verify_message="unable to get local issuer"),
        stores=(StoreVerdict("system", Verdict.UNKNOWN_ISSUER, Verdict.UNKNOWN_ISSUER),),
    )
    alert = AddressResult(
        "127.0.0.2",
        connect_ms=0.3,
        handshake=Handshake(failure=Failure.TLS_ALERT, error="sslv3 alert", alert="handshake failure"),
    )
    timeout = AddressResult("127.0.0.3", connect_ms=0.3, handshake=Handshake(failure=Failure.HANDSHAKE_TIMEOUT))
    unchecked = _ok_address("127.0.0.4", chain, hostname_checked=False)
    rows = build_matrix([_outcome("web-4", _result(leaf_only, alert, timeout, unchecked))]).rows
    assert rows[0].cell("native") == "unknown_issuer (20)"
    assert rows[0].cell("chain") == "1"
    assert rows[0].cell("stores") == "unknown_issuer: system"
    assert rows[0].ok is False
    # The alert description is what a person searches for; the error text is the fallback.
    assert rows[1].cell("native") == "tls_alert: handshake failure"
    assert rows[1].cell("tls") == "-"
    assert rows[1].cell("chain") == ""
    assert rows[1].cell("stores") == "-"
    assert rows[1].ok is False
    assert rows[2].cell("native") == "handshake_timeout"
    assert rows[3].cell("native") == "ok, name unchecked"
    assert rows[3].ok is True


def test_store_verdict_at_reference_time_is_shown_when_it_differs(chain: tuple[bytes, ...]) -> None:
    address = replace(
        _ok_address("127.0.0.1", chain),
        stores=(StoreVerdict("system", Verdict.EXPIRED, Verdict.OK), StoreVerdict("java", Verdict.OK, Verdict.OK)),
    )
    (row,) = build_matrix([_outcome("skewed", _result(address))]).rows
    assert row.cell("stores") == "expired (ok at reference time): system; ok: java"


def test_unparseable_leaf(chain: tuple[bytes, ...]) -> None:
    address = _ok_address("127.0.0.1", (b"\x30\x03not a certificate", chain[1]))
    (row,) = build_matrix([_outcome("web-5", _result(address))]).rows
    assert row.cell("leaf") == "unparseable certificate"
    assert row.cell("chain") == "2"
    assert row.cell("fingerprint") == ""


def test_leaf_without_sans_and_issuer_without_cn(pki: LabPKI) -> None:
    cn_only = pki.issue_leaf(common_name=HOST, san=False)
    (row,) = build_matrix([_outcome("web-6", _result(_ok_address("127.0.0.1", (cn_only.der,))))]).rows
    assert row.cell("leaf") == f"{HOST} [no SANs]"
    assert row.cell("issuer") == "Matrix Intermediate CA"


def test_a_cn_outside_the_sans_is_shown_beside_them(pki: LabPKI) -> None:
    odd = pki.issue_leaf(HOST, common_name="legacy-name.example")
    (row,) = build_matrix([_outcome("web-7", _result(_ok_address("127.0.0.1", (odd.der,))))]).rows
    assert row.cell("leaf") == f"{HOST} (CN legacy-name.example)"


def test_issuer_cn_with_a_comma() -> None:
    pki = LabPKI("Acme, Inc")
    leaf = pki.issue_leaf(HOST)
    (row,) = build_matrix([_outcome("web-7", _result(_ok_address("127.0.0.1", (leaf.der,))))]).rows
    assert row.cell("issuer") == "Acme, Inc Intermediate CA"


# --- differing cells ----------------------------------------------------------------------------------


def test_only_cells_differing_from_the_majority_are_marked(pki: LabPKI, chain: tuple[bytes, ...]) -> None:
    stale = (pki.issue_leaf(HOST, "127.0.0.1").der, pki.intermediate.der)
    outcomes = [
        _outcome("web-1", _result(_ok_address("127.0.0.1", chain)), labels=(("env", "prod"),)),
        _outcome("web-2", _result(_ok_address("127.0.0.1", chain)), labels=(("env", "staging"),)),
        _outcome("web-3", _result(_ok_address("127.0.0.1", stale)), labels=(("env", "dev"),)),
        _outcome("web-4", _result(_ok_address("127.0.0.2", chain)), labels=(("env", "qa"),)),
    ]
    matrix = build_matrix(outcomes)
    # The stale backend serves a different leaf (same names, same issuer): only its fingerprint stands out.
    assert _flagged(matrix, 2) == {"fingerprint"}
    # Addresses may differ legitimately (dual stack, several backends): never flagged here.
    assert _flagged(matrix, 3) == set()
    assert _flagged(matrix, 0) == set()
    assert _flagged(matrix, 1) == set()


def _flagged_agents(matrix: Matrix) -> set[tuple[str, str]]:
    return {(matrix.rows[index].cell("agent"), key) for index, key in matrix.differing}


def test_a_tie_highlights_the_same_agents_whatever_the_order(pki: LabPKI, chain: tuple[bytes, ...]) -> None:
    other = (pki.issue_leaf(HOST, "127.0.0.1").der, pki.intermediate.der)
    outcomes = [
        _outcome("web-1", _result(_ok_address("127.0.0.1", chain))),
        _outcome("web-2", _result(_ok_address("127.0.0.1", other))),
    ]
    assert _flagged_agents(build_matrix(outcomes)) == _flagged_agents(build_matrix(outcomes[::-1]))


def test_every_agent_seeing_the_same_addresses_is_not_a_difference(chain: tuple[bytes, ...]) -> None:
    outcomes = [
        _outcome(f"web-{i}", _result(_ok_address("127.0.0.1", chain), _ok_address("::1", chain))) for i in range(3)
    ]
    assert build_matrix(outcomes).differing == frozenset()


def test_agent_and_labels_are_never_flagged(chain: tuple[bytes, ...]) -> None:
    outcomes = [
        _outcome(f"web-{i}", _result(_ok_address("127.0.0.1", chain)), labels=(("n", str(i)),)) for i in range(4)
    ]
    matrix = build_matrix(outcomes)
    assert len({row.cell("agent") for row in matrix.rows}) == 4
    assert len({row.cell("labels") for row in matrix.rows}) == 4
    assert matrix.differing == frozenset()


def test_failing_vantages_stand_out_against_a_healthy_majority(chain: tuple[bytes, ...]) -> None:
    healthy = [_outcome(f"web-{i}", _result(_ok_address("127.0.0.1", chain))) for i in range(3)]
    untrusted = replace(
        _ok_address("127.0.0.1", chain),
        handshake=Handshake(failure=Failure.CERT_VERIFY, tls_version="TLSv1.3"),
        native=NativeVerdict(Verdict.UNKNOWN_ISSUER, verify_code=20),
        stores=(StoreVerdict("system", Verdict.UNKNOWN_ISSUER, Verdict.UNKNOWN_ISSUER),),
    )
    offline = _outcome("db-1", None, state=VantageState.OFFLINE, error="refused", clock=None)
    matrix = build_matrix([*healthy, _outcome("odd-1", _result(untrusted)), offline])
    assert [r.ok for r in matrix.rows] == [True, True, True, False, False]
    # Same chain, different verdict: exactly the verdict columns differ.
    assert _flagged(matrix, 3) == {"native", "stores"}
    # The offline agent saw nothing: every compared cell it lacks is marked, its name and labels are not.
    assert _flagged(matrix, 4) == {"tls", "leaf", "fingerprint", "chain", "issuer", "native", "stores"}
    for i in range(3):
        assert _flagged(matrix, i) == set()


def test_every_flag_points_at_a_real_row_and_column(chain: tuple[bytes, ...]) -> None:
    outcomes = [
        _outcome("a", _result(_ok_address("127.0.0.1", chain))),
        _outcome("b", None, state=VantageState.ERROR, error="bad reply"),
        _outcome("c", _result(resolution=Resolution((), 1.0, Failure.DNS_TIMEOUT, "timed out"))),
    ]
    matrix = build_matrix(outcomes)
    for index, key in matrix.differing:
        assert 0 <= index < len(matrix.rows)
        assert key in KEYS
        assert key not in ("agent", "labels")


def test_empty_matrix() -> None:
    assert build_matrix([]) == Matrix(rows=(), differing=frozenset())


# --- clock --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset_ms", "error_ms", "flagged"),
    [
        (1_500.0, 100.0, True),
        (-1_500.0, 100.0, True),
        (1_500.0, 600.0, False),  # within the error bound of a slow exchange it could be on time
        (CLOCK_HIGHLIGHT_MS, 0.0, False),
        (CLOCK_HIGHLIGHT_MS + 1, 0.0, True),
        (999.0, 0.0, False),
        (172_800_000.0, 5.0, True),
    ],
)
def test_clock_beyond_one_second_is_flagged(
    chain: tuple[bytes, ...], offset_ms: float, error_ms: float, flagged: bool
) -> None:
    outcomes = [
        _outcome("web-1", _result(_ok_address("127.0.0.1", chain))),
        _outcome(
            "web-2",
            _result(_ok_address("127.0.0.1", chain), _ok_address("::1", chain)),
            clock=ClockEstimate(offset_ms, error_ms),
        ),
    ]
    matrix = build_matrix(outcomes)
    expected = {(1, "clock"), (2, "clock")} if flagged else set()
    assert {flag for flag in matrix.differing if flag[1] == "clock"} == expected


def test_small_clock_differences_are_not_compared_by_majority(chain: tuple[bytes, ...]) -> None:
    outcomes = [
        _outcome("web-1", _result(_ok_address("127.0.0.1", chain)), clock=ClockEstimate(2.0, 1.0)),
        _outcome("web-2", _result(_ok_address("127.0.0.1", chain)), clock=ClockEstimate(2.0, 1.0)),
        _outcome("web-3", _result(_ok_address("127.0.0.1", chain)), clock=ClockEstimate(-400.0, 3.0)),
    ]
    matrix = build_matrix(outcomes)
    assert matrix.rows[2].cell("clock") == "-400 ms ±3"
    assert matrix.differing == frozenset()


def test_clock_flag_on_offline_vantage_with_a_clock(chain: tuple[bytes, ...]) -> None:
    # An agent that answered Describe but whose probe failed still has a known, skewed clock.
    outcome = _outcome("db-1", None, state=VantageState.ERROR, error="x", clock=ClockEstimate(-90_000.0, 4.0))
    matrix = build_matrix([outcome])
    assert (0, "clock") in matrix.differing
    assert matrix.rows[0].cell("clock") == "-1.5 min"


@pytest.mark.parametrize(
    ("clock", "text"),
    [
        (None, "?"),
        (ClockEstimate(0.0, 0.0), "+0 ms ±0"),
        (ClockEstimate(-12.0, 2.4), "-12 ms ±2"),
        (ClockEstimate(1_000.0, 1.0), "+1.0 s"),
        (ClockEstimate(-2_500.0, 1.0), "-2.5 s"),
        (ClockEstimate(90_000.0, 1.0), "+1.5 min"),
        (ClockEstimate(172_800_000.0, 1.0), "+2.0 d"),
        (ClockEstimate(-172_800_000.0, 1.0), "-2.0 d"),
    ],
)
def test_clock_cell_units(chain: tuple[bytes, ...], clock: ClockEstimate | None, text: str) -> None:
    (row,) = build_matrix([_outcome("web-1", _result(_ok_address("127.0.0.1", chain)), clock=clock)]).rows
    assert row.cell("clock") == text


def test_row_cell_lookup_by_column_key() -> None:
    row = MatrixRow(cells=tuple(f"v-{key}" for key in KEYS), ok=True)
    for key in KEYS:
        assert row.cell(key) == f"v-{key}"
    with pytest.raises(KeyError):
        row.cell("nope")


def test_a_verdict_given_once_for_identical_stores_is_shown_for_each() -> None:
    from tlsfleet.agent.model import per_store

    grouped = (
        StoreVerdict("system", Verdict.UNKNOWN_ISSUER, Verdict.UNKNOWN_ISSUER, same_as=("system_dir", "certifi")),
        StoreVerdict("ssl_cert_file", Verdict.OK, Verdict.OK),
    )
    expanded = per_store(grouped)
    assert [(s.store, s.at_agent_time) for s in expanded] == [
        ("system", Verdict.UNKNOWN_ISSUER),
        ("system_dir", Verdict.UNKNOWN_ISSUER),
        ("certifi", Verdict.UNKNOWN_ISSUER),
        ("ssl_cert_file", Verdict.OK),
    ]
    assert all(not s.same_as for s in expanded)
    assert per_store(expanded) is expanded  # nothing grouped: the same tuple back


def test_a_python_view_that_differs_is_shown_beside_the_openssl_view() -> None:
    from tlsfleet.agent.model import Client, ClientView

    address = AddressResult(
        "192.0.2.7",
        handshake=Handshake(tls_version="TLSv1.2", cipher="AES128-GCM-SHA256"),
        native=NativeVerdict(Verdict.OK),
        views=(
            ClientView(Client.OPENSSL, Verdict.OK),
            ClientView(Client.PYTHON, Verdict.NO_CHAIN, failure=Failure.NO_COMMON_CIPHER),
        ),
    )
    from tlsfleet.coordinator.matrix import _native_cell

    assert _native_cell(address) == "ok; python: no_common_cipher"
    assert _native_cell(AddressResult("192.0.2.7", native=NativeVerdict(Verdict.OK))) == "ok"
