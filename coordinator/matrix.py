"""The comparison matrix: one row per vantage and address, and which cells differ from the rest.

Pure: probe outcomes in, rows of strings out. Rendering (rich, JSON) happens elsewhere.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509
from cryptography.x509.oid import NameOID

from ..agent.model import AddressResult, Client, ClientView, Failure, ProbeResult, StoreVerdict, Verdict, per_store
from ..agent.trust.certinfo import CertificateParseError, parse_der, summarize
from .outcomes import ClockEstimate, ProbeOutcome, VantageState

# Offsets beyond this (after the error bound) are worth a reader's attention in the table.
CLOCK_HIGHLIGHT_MS = 1000.0
# A leaf's SANs shown in its cell; the rest are counted ("+N more").
MAX_CELL_SANS = 5

COLUMNS: tuple[tuple[str, str], ...] = (
    ("agent", "agent"),
    ("labels", "labels"),
    ("address", "address"),
    ("tls", "TLS"),
    ("leaf", "leaf SANs"),
    ("fingerprint", "sha256"),
    ("chain", "chain"),
    ("issuer", "issuer"),
    ("native", "native verdict"),
    ("stores", "trust stores"),
    ("clock", "clock"),
)
# Columns whose values are expected to differ between rows: never highlighted. Addresses differ
# legitimately (dual stack, several backends); whether that matters is the diagnosis's call.
_NOT_COMPARED = frozenset({"agent", "labels", "address"})


class Health(StrEnum):
    """How a verdict cell reads for the host it comes from, whatever the other rows say."""

    NONE = "none"  # not a verdict (or nothing to judge)
    GOOD = "good"
    WARN = "warn"  # some client or store on the host fails, the native client does not; or not probed by policy
    BAD = "bad"


@dataclass(frozen=True)
class MatrixRow:
    cells: tuple[str, ...]  # in COLUMNS order
    ok: bool  # the vantage answered and this address verified natively
    native_health: Health = Health.NONE
    stores_health: Health = Health.NONE
    # The trust-store cell told briefly for a terminal: the largest verdict group counted, the others named.
    stores_brief: str = ""

    def cell(self, column: str) -> str:
        return self.cells[_INDEX[column]]


@dataclass(frozen=True)
class Matrix:
    rows: tuple[MatrixRow, ...]
    differing: frozenset[tuple[int, str]]  # (row index, column key)
    # Columns whose values differ with no value held by most rows (two rows, a tie): no row is the odd one.
    split: frozenset[str] = frozenset()


_INDEX = {key: index for index, (key, _title) in enumerate(COLUMNS)}

# What a terminal or a text viewer would act on rather than show: C0 and C1 controls (ESC starts the
# sequences that move the cursor, retitle the window, rewrite what was printed) and the bidirectional
# overrides that reorder a line. Newlines and tabs stay: an agent's error may span lines.
_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """`text` with every control character shown as its Python escape (ESC as \\x1b): an agent's or a
    certificate's strings reach terminals and reports, and may not drive them."""
    if not _INVISIBLE.search(text):
        return text
    return _INVISIBLE.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def build_matrix(outcomes: Sequence[ProbeOutcome]) -> Matrix:
    rows: list[MatrixRow] = []
    clock_flags: set[int] = set()
    for outcome in outcomes:
        for row, clock_off in _rows_for(outcome):
            if clock_off:
                clock_flags.add(len(rows))
            rows.append(row)
    differing = {(i, "clock") for i in clock_flags}
    split: set[str] = set()
    for key, _title in COLUMNS:
        if key in _NOT_COMPARED or key == "clock":
            continue
        values = [row.cell(key) for row in rows]
        counts = Counter(values)
        if len(counts) < 2:
            continue
        (top, top_count), (_second, second_count) = counts.most_common(2)
        if top_count == second_count:
            # No majority: every value differs from another, and marking one side would depend on row order.
            differing.update((i, key) for i in range(len(values)))
            split.add(key)
        else:
            differing.update((i, key) for i, value in enumerate(values) if value != top)
    return Matrix(rows=tuple(rows), differing=frozenset(differing), split=frozenset(split))


def _rows_for(outcome: ProbeOutcome) -> list[tuple[MatrixRow, bool]]:
    name = outcome.vantage.name
    labels = ",".join(f"{k}={v}" for k, v in outcome.vantage.labels)
    clock = _clock_cell(outcome.clock)
    clock_off = _clock_is_off(outcome.clock)
    if outcome.state is not VantageState.OK or outcome.result is None:
        note = f"agent {outcome.state}: {outcome.error}" if outcome.error else f"agent {outcome.state}"
        return [(_row(name, labels, outcome.vantage.address, note=note, clock=clock), clock_off)]
    result = outcome.result
    if not result.addresses:
        resolution = result.resolution
        note = f"{resolution.failure}: {resolution.error}" if resolution.failure is not Failure.NONE else "no address"
        return [(_row(name, labels, "-", note=note, clock=clock), clock_off)]
    return [(_address_row(name, labels, result, a, clock), clock_off) for a in result.addresses]


def _row(name: str, labels: str, address: str, *, note: str, clock: str) -> MatrixRow:
    cells = {key: "" for key, _ in COLUMNS}
    cells.update(agent=name, labels=labels, address=address, native=note, clock=clock)
    return MatrixRow(cells=_shown_cells(cells), ok=False, native_health=Health.BAD)


def _shown_cells(cells: dict[str, str]) -> tuple[str, ...]:
    return tuple(visible(cells[key]) for key, _ in COLUMNS)


def _address_row(name: str, labels: str, result: ProbeResult, a: AddressResult, clock: str) -> MatrixRow:
    cells = {key: "" for key, _ in COLUMNS}
    cells.update(agent=name, labels=labels, address=a.address, clock=clock)
    if a.connect_failure is Failure.DENIED_BY_POLICY:  # its error names the rule: "denied by policy: ..."
        cells["native"] = a.connect_error or "denied by policy"
        return MatrixRow(cells=_shown_cells(cells), ok=False, native_health=Health.WARN)
    if a.connect_failure is not Failure.NONE:
        cells["native"] = f"{a.connect_failure}: {a.connect_error}" if a.connect_error else str(a.connect_failure)
        return MatrixRow(cells=_shown_cells(cells), ok=False, native_health=Health.BAD)
    cells["tls"] = a.handshake.tls_version or "-"
    if a.chain:
        try:
            leaf = summarize(a.chain[0])
            certificate = parse_der(a.chain[0])
            cells["leaf"] = _leaf_names(_common_name(certificate.subject, leaf.subject), leaf.san)
            cells["fingerprint"] = leaf.short_fingerprint
            cells["issuer"] = _common_name(certificate.issuer, leaf.issuer)
        except CertificateParseError:
            cells["leaf"] = "unparseable certificate"
        cells["chain"] = str(len(a.chain))
    cells["native"] = _native_cell(a)
    stores = per_store(a.stores)
    cells["stores"] = _stores_cell(stores)
    ok = row_is_fine(a)
    return MatrixRow(
        cells=_shown_cells(cells),
        ok=ok,
        native_health=_native_health(a, ok),
        stores_health=_stores_health(stores),
        stores_brief=visible(_stores_brief(stores)),
    )


def row_is_fine(a: AddressResult) -> bool:
    """The handshake completed and verified, for every client view the agent reported: a failed handshake (a
    timeout, a reset, an alert after a verified chain) or a client on the host that fails is never fine."""
    if a.connect_failure is not Failure.NONE or a.handshake.failure is not Failure.NONE:
        return False
    if a.native.verdict is not Verdict.OK:
        return False
    return all(v.failure is Failure.NONE and v.verdict is Verdict.OK for v in a.views)


def _native_health(a: AddressResult, ok: bool) -> Health:
    if ok:
        return Health.GOOD
    native_fine = a.handshake.failure is Failure.NONE and a.native.verdict is Verdict.OK
    return Health.WARN if native_fine else Health.BAD  # native fine: another client view on the host fails


def _leaf_names(common_name: str, sans: tuple[str, ...]) -> str:
    """The first SANs and how many more (a certificate may list thousands; --json keeps them all); the CN too
    when it is not among them (a CN-only certificate says so)."""
    if not sans:
        return f"{common_name} [no SANs]"
    listed = ", ".join(sans[:MAX_CELL_SANS])
    if len(sans) > MAX_CELL_SANS:
        listed += f" +{len(sans) - MAX_CELL_SANS} more"
    return listed if common_name in sans else f"{listed} (CN {common_name})"


def _native_cell(a: AddressResult) -> str:
    """The openssl view (the native verdict), and any other client's view on that host that differs."""
    h = a.handshake
    if h.failure not in (Failure.NONE, Failure.CERT_VERIFY):
        detail = h.alert or h.error
        cell = f"{h.failure}: {detail}" if detail else str(h.failure)
    else:
        cell = str(a.native.verdict)
        if a.native.verify_code and a.native.verdict is not Verdict.OK:
            cell += f" ({a.native.verify_code})"
        if not a.native.hostname_checked:
            cell += ", name unchecked"
    others = [f"{v.client}: {_view_outcome(v)}" for v in a.views if v.client is not Client.OPENSSL]
    return f"{cell}; {'; '.join(others)}" if others else cell


def _view_outcome(v: ClientView) -> str:
    if v.failure not in (Failure.NONE, Failure.CERT_VERIFY):
        return str(v.failure)
    return f"{v.verdict} ({v.verify_code})" if v.verify_code and v.verdict is not Verdict.OK else str(v.verdict)


def _stores_cell(stores: Sequence[StoreVerdict]) -> str:
    if not stores:
        return "-"
    # Grouped by verdict: a host has half a dozen stores and a reader wants the odd one out.
    return "; ".join(f"{verdict}: {', '.join(names)}" for verdict, names in _store_groups(stores).items())


def _store_groups(stores: Sequence[StoreVerdict]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for s in stores:
        verdict = str(s.at_agent_time)
        if s.at_reference_time is not s.at_agent_time:
            verdict += f" ({s.at_reference_time} at reference time)"
        groups.setdefault(verdict, []).append(s.store)
    return groups


def _stores_brief(stores: Sequence[StoreVerdict]) -> str:
    """ "ok: 4 · unknown_issuer: java, certifi": the largest group counted (ok first among equals), the rest named."""
    if not stores:
        return "-"
    groups = _store_groups(stores)
    largest = max(groups, key=lambda verdict: (len(groups[verdict]), verdict == str(Verdict.OK)))
    if len(groups) == 1:
        names = groups[largest]
        return f"{largest}: {names[0]}" if len(names) == 1 else f"{largest}: all {len(names)}"
    parts = [f"{largest}: {len(groups[largest])}"]
    parts += [f"{verdict}: {', '.join(names)}" for verdict, names in groups.items() if verdict != largest]
    return " · ".join(parts)


def _stores_health(stores: Sequence[StoreVerdict]) -> Health:
    if not stores:
        return Health.NONE
    fine = sum(1 for s in stores if s.at_agent_time is Verdict.OK and s.at_reference_time is Verdict.OK)
    return Health.GOOD if fine == len(stores) else Health.WARN if fine else Health.BAD


def _clock_cell(clock: ClockEstimate | None) -> str:
    if clock is None:
        return "?"
    offset = clock.offset_ms
    if abs(offset) >= 86_400_000:
        return f"{offset / 86_400_000:+.1f} d"
    if abs(offset) >= 60_000:
        return f"{offset / 60_000:+.1f} min"
    if abs(offset) >= 1000:
        return f"{offset / 1000:+.1f} s"
    return f"{offset:+.0f} ms ±{clock.error_ms:.0f}"


def _clock_is_off(clock: ClockEstimate | None) -> bool:
    return clock is not None and abs(clock.offset_ms) - clock.error_ms > CLOCK_HIGHLIGHT_MS


def _common_name(name: x509.Name, rfc4514: str) -> str:
    """The CN when there is one: tables need the name a person recognizes, not the full DN."""
    names = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if names:
        value = names[0].value
        return value if isinstance(value, str) else value.decode(errors="replace")
    return rfc4514 or "-"
