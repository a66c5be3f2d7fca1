"""What the rows of a matrix share, which columns are left, and how a value stands: from real certificates."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.coordinator.test_matrix import _ok_address, _outcome, _result
from tlsfleet.agent.model import Failure, Handshake, NativeVerdict, StoreVerdict, Verdict
from tlsfleet.coordinator.lab.pki import LabPKI
from tlsfleet.coordinator.matrix import Health, build_matrix
from tlsfleet.coordinator.matrix_agreement import (
    CLOCKS_AGREE,
    MAX_BRIEF_CHARS,
    Standing,
    agreement,
    brief_cell,
    health,
)
from tlsfleet.coordinator.outcomes import ClockEstimate, VantageState

HOST = "api.lab.test"


@pytest.fixture(scope="module")
def chain() -> tuple[bytes, ...]:
    pki = LabPKI("Agreement")
    return (pki.issue_leaf(HOST, "127.0.0.1").der, pki.intermediate.der)


def _untrusted(chain: tuple[bytes, ...]):  # -> AddressResult
    return replace(
        _ok_address("127.0.0.1", chain),
        handshake=Handshake(failure=Failure.CERT_VERIFY, tls_version="TLSv1.3"),
        native=NativeVerdict(Verdict.UNKNOWN_ISSUER, verify_code=20),
        stores=(
            StoreVerdict("system", Verdict.UNKNOWN_ISSUER, Verdict.UNKNOWN_ISSUER),
            StoreVerdict("certifi", Verdict.UNKNOWN_ISSUER, Verdict.UNKNOWN_ISSUER),
        ),
    )


def test_what_every_row_shares_is_said_once_and_only_differing_columns_are_left(chain: tuple[bytes, ...]) -> None:
    outcomes = [
        _outcome("web-1", _result(_ok_address("127.0.0.1", chain)), labels=(("env", "prod"),)),
        _outcome("web-2", _result(_ok_address("127.0.0.1", chain)), labels=(("env", "prod"),)),
        _outcome("batch-1", _result(_untrusted(chain)), labels=(("env", "batch"),)),
    ]
    view = agreement(build_matrix(outcomes))
    (shared,) = view.shared
    assert shared.label == "all 3 vantages"
    assert shared.rows == (0, 1, 2)
    assert shared.facts[:3] == ("address 127.0.0.1", "TLSv1.3", f"leaf {HOST}, 127.0.0.1")
    assert "chain 2" in shared.facts and "issuer Agreement Intermediate CA" in shared.facts
    assert CLOCKS_AGREE in shared.facts
    assert view.columns == ("agent", "labels", "native", "stores")
    # Three rows, two agree: the third is the odd one, the others are not marked.
    assert view.standing(2, "native") is Standing.ODD
    assert view.standing(0, "native") is Standing.AGREES
    assert view.any_odd and not view.any_split


def test_a_healthy_minority_is_odd_but_reads_healthy(chain: tuple[bytes, ...]) -> None:
    outcomes = [
        _outcome("web-1", _result(_ok_address("127.0.0.1", chain))),
        _outcome("batch-1", _result(_untrusted(chain))),
        _outcome("batch-2", _result(_untrusted(chain))),
    ]
    matrix = build_matrix(outcomes)
    view = agreement(matrix)
    assert view.standing(0, "native") is Standing.ODD
    assert health(matrix.rows[0], "native") is Health.GOOD
    assert health(matrix.rows[1], "native") is Health.BAD
    assert health(matrix.rows[1], "stores") is Health.BAD
    assert health(matrix.rows[0], "tls") is Health.NONE


def test_two_rows_that_differ_are_a_split_not_an_odd_one(chain: tuple[bytes, ...]) -> None:
    outcomes = [
        _outcome("trusting", _result(_ok_address("127.0.0.1", chain))),
        _outcome("plain", _result(_untrusted(chain))),
    ]
    view = agreement(build_matrix(outcomes))
    assert view.shared[0].label == "both vantages"
    assert {view.standing(i, "native") for i in (0, 1)} == {Standing.SPLIT}
    assert view.any_split and not view.any_odd


def test_rows_that_saw_nothing_leave_the_shared_facts_to_the_others(chain: tuple[bytes, ...]) -> None:
    outcomes = [
        _outcome("web-1", _result(_ok_address("127.0.0.1", chain))),
        _outcome("web-2", _result(_ok_address("127.0.0.1", chain))),
        _outcome("db-1", None, state=VantageState.OFFLINE, error="connection refused", clock=None),
    ]
    matrix = build_matrix(outcomes)
    view = agreement(matrix)
    certificate = next(s for s in view.shared if "TLSv1.3" in s.facts)
    assert certificate.label == "2 of 3 vantages"
    assert certificate.rows == (0, 1)
    assert "native" in view.columns  # "ok" beside "agent offline: connection refused"
    assert health(matrix.rows[2], "native") is Health.BAD
    assert "tls" not in view.columns


def test_a_skewed_clock_keeps_its_column(chain: tuple[bytes, ...]) -> None:
    outcomes = [
        _outcome("web-1", _result(_ok_address("127.0.0.1", chain))),
        _outcome("web-2", _result(_ok_address("127.0.0.1", chain)), clock=ClockEstimate(-172_800_000.0, 3.0)),
        _outcome("web-3", _result(_ok_address("127.0.0.1", chain))),
    ]
    view = agreement(build_matrix(outcomes))
    assert "clock" in view.columns
    assert view.standing(1, "clock") is Standing.ODD
    assert all(CLOCKS_AGREE not in s.facts for s in view.shared)


def test_a_lone_row_keeps_its_columns(chain: tuple[bytes, ...]) -> None:
    view = agreement(build_matrix([_outcome("local", _result(_ok_address("127.0.0.1", chain)))]))
    assert view.shared == ()
    assert {"agent", "tls", "native", "stores", "clock"} <= set(view.columns)
    assert "labels" not in view.columns


def test_several_addresses_per_vantage_are_counted_as_addresses(chain: tuple[bytes, ...]) -> None:
    outcomes = [
        _outcome(f"web-{i}", _result(_ok_address("127.0.0.1", chain), _ok_address("::1", chain))) for i in (1, 2)
    ]
    view = agreement(build_matrix(outcomes))
    assert view.shared[0].label == "both vantages, 4 addresses"
    assert view.columns == ("agent", "address")


@pytest.mark.parametrize(
    ("verdicts", "brief", "expected_health"),
    [
        ((Verdict.OK,) * 4, "ok: all 4", Health.GOOD),
        ((Verdict.OK,), "ok: s0", Health.GOOD),
        ((Verdict.OK,) * 4 + (Verdict.UNKNOWN_ISSUER,) * 2, "ok: 4 · unknown_issuer: s4, s5", Health.WARN),
        ((Verdict.UNKNOWN_ISSUER,) * 3 + (Verdict.OK,), "unknown_issuer: 3 · ok: s3", Health.WARN),
        ((Verdict.OK, Verdict.EXPIRED), "ok: 1 · expired: s1", Health.WARN),  # equal groups: ok is counted
        ((Verdict.EXPIRED,) * 2, "expired: all 2", Health.BAD),
    ],
)
def test_trust_stores_grouped_by_verdict_with_counts(
    chain: tuple[bytes, ...], verdicts: tuple[Verdict, ...], brief: str, expected_health: Health
) -> None:
    stores = tuple(StoreVerdict(f"s{i}", v, v) for i, v in enumerate(verdicts))
    (row,) = build_matrix([_outcome("web-1", _result(replace(_ok_address("127.0.0.1", chain), stores=stores)))]).rows
    assert brief_cell(row, "stores") == brief
    assert health(row, "stores") is expected_health
    # The full cell is kept for reports and --json-like readers.
    assert row.cell("stores").count("s0") == 1


def test_a_python_view_that_fails_beside_a_fine_native_verdict_is_a_warning(chain: tuple[bytes, ...]) -> None:
    from tlsfleet.agent.model import Client, ClientView

    address = replace(
        _ok_address("127.0.0.1", chain),
        views=(ClientView(Client.OPENSSL, Verdict.OK), ClientView(Client.PYTHON, Verdict.EXPIRED, verify_code=10)),
    )
    (row,) = build_matrix([_outcome("web-1", _result(address))]).rows
    assert row.ok is False
    assert health(row, "native") is Health.WARN


def test_a_long_cell_is_capped_for_the_terminal_and_kept_whole_in_the_row() -> None:
    error = "unavailable: failed to connect to all addresses; " * 10
    (row,) = build_matrix([_outcome("db-1", None, state=VantageState.OFFLINE, error=error, clock=None)]).rows
    shown = brief_cell(row, "native")
    assert len(shown) <= MAX_BRIEF_CHARS and shown.endswith(" …")
    assert row.cell("native") == f"agent offline: {error}"
