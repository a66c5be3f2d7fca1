"""What the rows of a comparison matrix agree on, which columns are left to show, and how each shown value
stands against the other rows.

Pure: a Matrix in, facts and judgements out. How they are laid out on a terminal is the renderer's business.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from .matrix import CLOCK_HIGHLIGHT_MS, COLUMNS, Health, Matrix, MatrixRow

# Never compared: they name the row. The address is a fact of its own (dual stack, several backends).
IDENTITY = ("agent", "labels", "address")
# How a fact every row shares is told: "TLSv1.3", "chain 2", "verdict ok".
_FACT_PREFIX = {
    "labels": "labels ",
    "address": "address ",
    "tls": "",
    "leaf": "leaf ",
    "fingerprint": "sha256 ",
    "chain": "chain ",
    "issuer": "issuer ",
    "native": "verdict ",
    "stores": "trust stores ",
}
MAX_BRIEF_CHARS = 160
CLOCKS_AGREE = f"clocks within {CLOCK_HIGHLIGHT_MS / 1000:g} s"


class Standing(StrEnum):
    AGREES = "agrees"  # the value most rows have, or no other row to compare with
    ODD = "odd"  # differs from the value most rows have; a clock off beyond the bound
    SPLIT = "split"  # differs, but no value is held by most rows (two rows, a tie): nobody is the odd one


@dataclass(frozen=True)
class Shared:
    """Facts every row in `rows` agrees on; the rows left out have no value there (they saw no certificate)."""

    label: str  # "all 3 vantages", "2 of 3 vantages"
    rows: tuple[int, ...]
    facts: tuple[str, ...]  # "TLSv1.3", "chain 2", "issuer Acme Intermediate CA"


@dataclass(frozen=True)
class Agreement:
    shared: tuple[Shared, ...]  # the largest group of rows first
    columns: tuple[str, ...]  # column keys left to show per row, in COLUMNS order, the agent first
    differing: frozenset[tuple[int, str]]
    split: frozenset[str]

    def standing(self, row: int, key: str) -> Standing:
        if (row, key) not in self.differing or key in IDENTITY:
            return Standing.AGREES
        return Standing.SPLIT if key in self.split else Standing.ODD

    @property
    def any_odd(self) -> bool:
        return any(key in self.columns and key not in self.split for _row, key in self.differing)

    @property
    def any_split(self) -> bool:
        return any(key in self.columns and key in self.split for _row, key in self.differing)


def agreement(matrix: Matrix) -> Agreement:
    """Columns whose every present value is the same become shared facts; the rest stay columns. A lone row
    keeps all its columns: there is nothing to agree with."""
    rows = matrix.rows
    keys = [key for key, _title in COLUMNS]
    if len(rows) < 2:
        alone = tuple(key for key in keys if key == "agent" or any(row.cell(key) for row in rows))
        return Agreement((), alone, matrix.differing, matrix.split)
    facts: dict[tuple[int, ...], list[str]] = {}
    columns: list[str] = ["agent"]
    for key in keys[1:]:
        if key == "clock":
            if any(index_key[1] == "clock" for index_key in matrix.differing):
                columns.append(key)
            else:
                known = tuple(i for i, row in enumerate(rows) if row.cell("clock") != "?")
                if known:
                    facts.setdefault(known, []).append(CLOCKS_AGREE)
            continue
        present = [(i, row.cell(key)) for i, row in enumerate(rows) if row.cell(key)]
        values = {value for _i, value in present}
        if len(values) > 1:
            columns.append(key)
        elif values:
            facts.setdefault(tuple(i for i, _v in present), []).append(_fact(key, rows[present[0][0]]))
    shared = [Shared(_label(rows, covered), covered, tuple(told)) for covered, told in facts.items()]
    shared.sort(key=lambda s: -len(s.rows))
    return Agreement(tuple(shared), tuple(columns), matrix.differing, matrix.split)


def brief_cell(row: MatrixRow, key: str) -> str:
    """The cell as a terminal shows it: trust stores grouped by verdict with counts, and no cell longer than
    MAX_BRIEF_CHARS (an agent's error can run to a paragraph; --json keeps it whole)."""
    value = row.stores_brief if key == "stores" and row.stores_brief else row.cell(key)
    return value if len(value) <= MAX_BRIEF_CHARS else value[: MAX_BRIEF_CHARS - 2].rstrip() + " …"


def health(row: MatrixRow, key: str) -> Health:
    """What a verdict cell says about its own host; other cells are not verdicts."""
    if key == "native":
        return row.native_health
    if key == "stores":
        return row.stores_health
    return Health.NONE


def _fact(key: str, row: MatrixRow) -> str:
    value = brief_cell(row, key)
    if value == "-":  # the handshake ended before a version was agreed or a chain arrived
        return {"tls": "no TLS session", "stores": "no trust-store verdict"}.get(key, f"{_FACT_PREFIX[key]}-")
    return _FACT_PREFIX[key] + value


def _label(rows: Sequence[MatrixRow], covered: tuple[int, ...]) -> str:
    agents = {row.cell("agent") for row in rows}
    every = "both vantages" if len(agents) == 2 else f"all {len(agents)} vantages"
    if len(rows) > len(agents):  # some vantage has several addresses: count rows, as the table shows them
        return (
            f"{every}, {len(rows)} addresses"
            if len(covered) == len(rows)
            else f"{len(covered)} of {len(rows)} addresses"
        )
    return every if len(covered) == len(rows) else f"{len(covered)} of {len(rows)} vantages"
