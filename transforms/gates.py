"""Batch gates: decide whether a validated batch may feed the master file.

A gate compares the batch with its own rows (invalid ratio) or with the source's last accepted batch
(volume, deaths and cancellations). Any gate that trips holds the batch: the master keeps that
source's last good data until an operator releases the batch with `hub batch release`. Pure
functions over counts, so each threshold is tested on its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from hub.settings import Gates
from transforms.contracts import SourceContract


@dataclass(frozen=True)
class Previous:
    """What the gates need from the source's last accepted batch."""

    batch_id: str
    accepted_rows: int
    events: dict[str, int] | None = None  # None: that batch was staged before events were counted


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


def evaluate(
    rows: int, quarantined: int, events: dict[str, int], previous: Previous | None, gates: Gates
) -> Verdict:
    """Every gate over one batch; the batch is held when any of them trips (each trip is in the note)."""
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
                    f"limit {before} x {1 + gates.max_event_rise:g} + {gates.event_rise_floor}",
                )
            )
    tripped = [r.detail for r in results if not r.passed]
    note = "; ".join(tripped) if tripped else ("empty batch" if rows == 0 else "")
    return Verdict("held" if tripped else "accepted", note, results)


_EVENT_ZH = {"deaths": "死亡人数异常上升", "cancellations": "注销人数异常上升"}
