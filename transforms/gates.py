"""Batch gates: decide whether a validated batch may feed the master file.

A gate compares the batch with its own rows (invalid ratio; a column whose values mostly no longer
parse as its contracted type, i.e. schema drift by content) or with the source's last accepted batch
(volume, deaths and cancellations). A delta batch (change feed) holds only what changed: its volume,
deaths and cancellations are judged against the source's usual daily rate (configured, or the median
of its last accepted deltas) times the days it covers, or, before any rate is known, against a share
of the source's last full batch. Any gate that trips holds the batch: the master keeps that
source's last good data until an operator releases the batch with `hub batch release`. Pure
functions over counts, so each threshold is tested on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from core.contracts import SourceContract
from core.settings import Gates


@dataclass(frozen=True)
class Previous:
    """What the gates need from the source's last accepted batch."""

    batch_id: str
    accepted_rows: int
    events: dict[str, int] | None = None  # None: that batch was staged before events were counted


@dataclass(frozen=True)
class UsualRate:
    """A source's usual changes per day: per measure ('rows' and each event kind), and where it comes from."""

    per_day: dict[str, float]
    basis: dict[str, str]  # measure -> "configured" or "median of N delta batches"


@dataclass(frozen=True)
class DeltaBasis:
    """What a delta batch is judged against."""

    days: int  # days the batch covers: since the source's previous accepted batch, at least 1
    rate: UsualRate
    register_rows: int | None  # accepted rows of the source's last full batch


@dataclass(frozen=True)
class ColumnParse:
    """How many of a column's non-empty values failed to parse as its contracted type."""

    column: str  # canonical name
    native: str  # the department's column name
    type: str  # contract type
    unparsed: int
    present: int  # non-empty values


# The parse code that says "this value is not of the column's type", per contract type.
TYPE_CODES = {
    "id_number": "ID_FORMAT",
    "code": "CODE_UNKNOWN",
    "bool": "CODE_UNKNOWN",
    "date": "DATE_INVALID",
    "timestamp": "DATE_INVALID",
    "int": "FIELD_INVALID",
    "float": "FIELD_INVALID",
}


@dataclass(frozen=True)
class GateResult:
    """One gate's outcome, as the validation report shows it."""

    gate: str
    passed: bool
    value: float
    limit: float
    detail: str


@dataclass
class Verdict:
    status: str  # accepted | held
    note: str
    results: list[GateResult] = field(default_factory=list)

    def as_json(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.results]


def count_events(accepted: pd.DataFrame, contract: SourceContract) -> dict[str, int]:
    """Rows per event kind the contract declares (e.g. police deaths), among the accepted rows."""
    return {
        kind: int(accepted[rule.column].astype("string").isin(rule.values).fillna(False).sum())
        for kind, rule in contract.events.items()
    }


def column_parses(
    frame: pd.DataFrame, field_counts: list[dict[str, Any]], contract: SourceContract
) -> list[ColumnParse]:
    """Per typed column: values that did not parse (from the parse reason counts) and non-empty values.

    A failed parse leaves the canonical cell null, so non-empty = non-null + unparsed; an ID column keeps
    no value for any bad ID, so there non-empty = rows - ID_MISSING. Column-wise `notna` only: cheap.
    """
    flagged = {(c["field"], c["code"]): int(c["rows"]) for c in field_counts}
    out = []
    for column in contract.columns:
        code = TYPE_CODES.get(column.type)
        if code is None:
            continue
        unparsed = flagged.get((column.name, code), 0)
        if column.type == "id_number":  # a number a spreadsheet turned into a float failed its type too
            unparsed += flagged.get((column.name, "ID_SPREADSHEET_DAMAGED"), 0)
            present = len(frame) - flagged.get((column.name, "ID_MISSING"), 0)
        else:
            present = int(frame[column.name].notna().sum()) + unparsed
        out.append(ColumnParse(column.name, column.native, column.type, unparsed, present))
    return out


def _column_types(columns: Sequence[ColumnParse], gates: Gates) -> GateResult:
    """Schema drift by content: a column whose values mostly fail its type (dates now text, codes recoded,
    two columns swapped) changed type, even though its header is the contracted one."""
    judged = [c for c in columns if c.present >= gates.type_mismatch_min_values]
    shares = {c.column: c.unparsed / c.present for c in judged}
    changed = [c for c in judged if shares[c.column] > gates.max_type_mismatch]
    worst = max(shares.values(), default=0.0)
    if changed:
        detail = "字段类型变化 schema drift (changed type): " + ", ".join(
            f"{c.native} ({c.column}, {c.type}) {c.unparsed} of {c.present} values do not parse "
            f"({c.unparsed / c.present:.0%})"
            for c in changed
        )
    else:
        detail = f"every typed column parses (worst {worst:.1%})"
    return GateResult(
        "column_types",
        not changed,
        round(worst, 6),
        gates.max_type_mismatch,
        f"{detail}, limit {gates.max_type_mismatch:.0%} of a column's values "
        f"(columns with at least {gates.type_mismatch_min_values} values)",
    )


def evaluate(
    rows: int,
    quarantined: int,
    events: dict[str, int],
    previous: Previous | None,
    gates: Gates,
    columns: Sequence[ColumnParse] = (),
    delta: DeltaBasis | None = None,
) -> Verdict:
    """Every gate over one batch; the batch is held when any of them trips (each trip is in the note).

    A delta batch (`delta` given, `previous` None) is judged by the change-feed gates instead of volume
    change and event rise.
    """
    results: list[GateResult] = []
    ratio = quarantined / rows if rows else 0.0
    results.append(
        GateResult(
            "invalid_ratio",
            ratio <= gates.max_invalid_ratio,
            round(ratio, 6),
            gates.max_invalid_ratio,
            f"无效比例 invalid ratio {ratio:.1%} ({quarantined} of {rows} rows quarantined), "
            f"limit {gates.max_invalid_ratio:.0%}",
        )
    )
    if columns:
        results.append(_column_types(columns, gates))
    accepted = rows - quarantined
    if previous is not None and previous.accepted_rows:
        change = accepted / previous.accepted_rows - 1
        results.append(
            GateResult(
                "volume_change",
                abs(accepted - previous.accepted_rows) <= gates.max_volume_change * previous.accepted_rows,
                round(change, 6),
                gates.max_volume_change,
                f"数据量变化 accepted rows changed {change:+.1%} against {previous.batch_id} "
                f"({previous.accepted_rows} -> {accepted}), limit ±{gates.max_volume_change:.0%}",
            )
        )
    if previous is not None and previous.events is not None:
        for kind, now in sorted(events.items()):
            before = previous.events.get(kind, 0)
            allowed = before * (1 + gates.max_event_rise) + gates.event_rise_floor
            results.append(
                GateResult(
                    f"{kind}_rise",
                    now <= allowed,
                    now,
                    allowed,
                    f"{_EVENT_ZH.get(kind, kind)} {kind} rose from {before} in {previous.batch_id} to {now}, "
                    f"limit {before} x {1 + gates.max_event_rise:g} + {gates.event_rise_floor} = {allowed:g}",
                )
            )
    if delta is not None:
        results.extend(_delta_gates(accepted, events, delta, gates))
    tripped = [r.detail for r in results if not r.passed]
    note = "; ".join(tripped) if tripped else ("empty batch" if rows == 0 else "")
    return Verdict("held" if tripped else "accepted", note, results)


_EVENT_ZH = {"deaths": "死亡人数异常上升", "cancellations": "注销人数异常上升"}
_DELTA_ZH = {"rows": "增量数据量异常", "deaths": "增量死亡人数异常", "cancellations": "增量注销人数异常"}


def _delta_gates(accepted: int, events: dict[str, int], delta: DeltaBasis, gates: Gates) -> list[GateResult]:
    """Rows and each event kind of a delta batch against the usual rate x days (or a share of the register)."""
    out = []
    for measure, now in [("rows", accepted), *sorted(events.items())]:
        floor = gates.delta_rows_floor if measure == "rows" else gates.event_rise_floor
        rate = delta.rate.per_day.get(measure)
        if rate is not None:
            allowed = gates.delta_max_multiple * rate * delta.days + floor
            why = (
                f"usual {rate:g}/day ({delta.rate.basis[measure]}) over {delta.days} day(s), limit "
                f"{gates.delta_max_multiple:g} x {rate:g} x {delta.days} + {floor} = {allowed:g}"
            )
        elif delta.register_rows is not None:
            allowed = gates.delta_max_share * delta.register_rows + floor
            why = (
                f"no usual rate yet, limit {gates.delta_max_share:.0%} of the {delta.register_rows} rows of the "
                f"last full batch + {floor} = {allowed:g}"
            )
        else:
            continue  # nothing to judge a first delta by: neither a rate nor a full batch
        label = "accepted rows" if measure == "rows" else measure
        out.append(
            GateResult(
                f"delta_{measure}",
                now <= allowed,
                now,
                round(allowed, 6),
                f"{_DELTA_ZH.get(measure, measure)} delta batch has {now} {label}, {why}",
            )
        )
    return out
