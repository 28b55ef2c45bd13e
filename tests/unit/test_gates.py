"""Batch gates trip just above their thresholds and not at them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from hub.settings import ROOT, Gates
from transforms.contracts import ContractError, load_contract
from transforms.gates import Previous, count_events, evaluate

GATES = Gates(max_invalid_ratio=0.2, max_volume_change=0.3, max_event_rise=0.5, event_rise_floor=20)


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
