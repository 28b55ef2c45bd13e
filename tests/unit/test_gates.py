"""Batch gates trip just above their thresholds and not at them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.contracts import ContractError, load_contract
from core.settings import ROOT, Gates
from transforms.gates import (
    ColumnParse,
    DeltaBasis,
    Previous,
    UsualRate,
    column_parses,
    count_events,
    evaluate,
)
from transforms.standardise import standardise_rows

GATES = Gates(
    max_invalid_ratio=0.2,
    max_volume_change=0.3,
    max_event_rise=0.5,
    event_rise_floor=20,
    max_type_mismatch=0.5,
    type_mismatch_min_values=20,
)


def tripped(verdict_results: list) -> list[str]:
    return [r.gate for r in verdict_results if not r.passed]


def test_invalid_ratio_at_threshold_passes_and_above_holds() -> None:
    assert evaluate(100, 20, {}, None, GATES).status == "accepted"
    held = evaluate(100, 21, {}, None, GATES)
    assert held.status == "held" and tripped(held.results) == ["invalid_ratio"]
    assert "21 of 100" in held.note


@pytest.mark.parametrize(
    ("accepted", "status"), [(130, "accepted"), (131, "held"), (70, "accepted"), (69, "held")]
)
def test_volume_gate_is_symmetric_around_the_last_accepted_batch(accepted: int, status: str) -> None:
    verdict = evaluate(accepted, 0, {}, Previous("b-1", 100), GATES)
    assert verdict.status == status
    if status == "held":
        assert tripped(verdict.results) == ["volume_change"] and "b-1" in verdict.note


def test_event_rise_gate_uses_relative_rise_plus_floor() -> None:
    previous = Previous("police-1", 1000, {"deaths": 100, "cancellations": 10})
    limit = 100 * 1.5 + 20
    assert (
        evaluate(1000, 0, {"deaths": int(limit), "cancellations": 10}, previous, GATES).status == "accepted"
    )
    held = evaluate(1000, 0, {"deaths": int(limit) + 1, "cancellations": 10}, previous, GATES)
    assert held.status == "held" and tripped(held.results) == ["deaths_rise"]
    assert "死亡" in held.note and "police-1" in held.note
    # a source that went from 0 to a handful is within the floor
    assert evaluate(1000, 0, {"deaths": 100, "cancellations": 30}, previous, GATES).status == "accepted"
    assert evaluate(1000, 0, {"deaths": 100, "cancellations": 36}, previous, GATES).status == "held"


def test_no_event_gate_without_a_previous_count() -> None:
    verdict = evaluate(1000, 0, {"deaths": 900}, Previous("old", 1000, None), GATES)
    assert verdict.status == "accepted"
    assert [r.gate for r in verdict.results] == ["invalid_ratio", "volume_change"]


def test_every_trip_is_named_in_the_note() -> None:
    verdict = evaluate(100, 50, {"deaths": 90}, Previous("b-1", 200, {"deaths": 1}), GATES)
    assert tripped(verdict.results) == ["invalid_ratio", "volume_change", "deaths_rise"]
    assert verdict.note.count(";") == 2


def test_events_are_counted_from_the_contract() -> None:
    contract = load_contract(ROOT / "schemas/sources/police.yaml")
    frame = pd.DataFrame(
        {"hukou_status": pd.array(["normal", "dead", "moved_out", None, "dead"], dtype="string")}
    )
    assert count_events(frame, contract) == {"deaths": 2, "cancellations": 1}


def test_an_event_on_an_unknown_column_is_a_contract_error(tmp_path: Path) -> None:
    text = (ROOT / "schemas/sources/police.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "police.yaml"
    bad.write_text(
        text.replace("deaths: {column: hukou_status", "deaths: {column: hukou_state"), encoding="utf-8"
    )
    with pytest.raises(ContractError, match="hukou_state"):
        load_contract(bad)


def _dates(unparsed: int, present: int) -> list[ColumnParse]:
    return [ColumnParse("death_date", "swrq", "date", unparsed, present)]


def test_column_type_gate_trips_just_above_its_share() -> None:
    assert evaluate(1000, 0, {}, None, GATES, _dates(20, 40)).status == "accepted"  # 50 %: at the limit
    held = evaluate(1000, 0, {}, None, GATES, _dates(21, 40))
    assert held.status == "held" and tripped(held.results) == ["column_types"]
    assert "swrq (death_date, date) 21 of 40 values do not parse" in held.note


def test_column_type_gate_needs_enough_values_to_judge() -> None:
    assert evaluate(1000, 0, {}, None, GATES, _dates(19, 19)).status == "accepted"  # too few to tell
    assert evaluate(1000, 0, {}, None, GATES, _dates(20, 20)).status == "held"
    gate = evaluate(1000, 0, {}, None, GATES, _dates(19, 19)).results[1]
    assert (gate.gate, gate.passed, gate.value) == ("column_types", True, 0.0)


def test_column_parses_count_unparsed_and_present_values() -> None:
    """Non-empty values per typed column, and how many failed their type, straight from standardise."""
    from datetime import date

    contract = load_contract(ROOT / "schemas/sources/police.yaml")
    ok = "11010519491231002X"
    native = (
        pd.DataFrame(
            {
                "gmsfhm": [ok, "3.30106E+17", "", ok],
                "xm": ["甲", "乙", "丙", "丁"],
                "xbdm": ["1", "男", "2", None],
                "csrq": ["19491231", "19491231", "19491231", "19491231"],
                "hjdz_xzqhdm": ["110105"] * 4,
                "hkztdm": ["0", "1", "0", "0"],
                "swrq": [None, "2025年1月1日", "", "20250101"],
                "gxsj": ["2025-06-01 08:00:00"] * 4,
            },
            dtype="string",
        )
        .reindex(columns=contract.natives)
        .astype("string")
    )  # optional columns not set here: null
    frame, reasons = standardise_rows(native, contract, date(2025, 6, 30))
    got = {c.column: (c.unparsed, c.present) for c in column_parses(frame, reasons.field_counts(), contract)}
    assert got == {
        "id_number": (1, 3),
        "gender": (1, 3),
        "birth_date": (0, 4),
        "hukou_status": (0, 4),
        "death_date": (1, 2),
        "updated_at": (0, 4),
    }


def _delta(rate: dict[str, float], days: int = 1, register: int | None = None) -> DeltaBasis:
    return DeltaBasis(days, UsualRate(rate, {m: "configured" for m in rate}), register)


def test_delta_gates_judge_against_the_usual_daily_rate_times_days() -> None:
    gates = GATES.model_copy(update={"delta_max_multiple": 5.0, "delta_rows_floor": 200})
    basis = _delta({"rows": 10.0, "deaths": 2.0}, days=2)
    # rows: 5 x 10 x 2 + 200 = 300; deaths: 5 x 2 x 2 + 20 = 40
    assert evaluate(300, 0, {"deaths": 40}, None, gates, delta=basis).status == "accepted"
    held = evaluate(301, 0, {"deaths": 41}, None, gates, delta=basis)
    assert tripped(held.results) == ["delta_rows", "delta_deaths"]
    assert "usual 2/day (configured) over 2 day(s), limit 5 x 2 x 2 + 20 = 40" in held.note
    assert "增量死亡人数异常" in held.note


def test_a_first_delta_is_bounded_by_a_share_of_the_last_full_batch() -> None:
    gates = GATES.model_copy(update={"delta_max_share": 0.05, "delta_rows_floor": 200})
    basis = _delta({}, register=2000)  # events: 5% of 2000 + 20 = 120; rows: 100 + 200 = 300
    assert (
        evaluate(300, 0, {"deaths": 120, "cancellations": 0}, None, gates, delta=basis).status == "accepted"
    )
    held = evaluate(300, 0, {"deaths": 500, "cancellations": 0}, None, gates, delta=basis)
    assert tripped(held.results) == ["delta_deaths"] and "no usual rate yet" in held.note
    # nothing to judge by: neither a rate nor a full batch
    assert [r.gate for r in evaluate(10, 0, {"deaths": 9}, None, gates, delta=_delta({})).results] == [
        "invalid_ratio"
    ]
