"""The custom GX expectations judge what they claim, run through GX itself, and never copy the frame."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from transforms.ids import check_char
from transforms.validate import gx_context, run_suite

SUITE = Path("test-suite.json")


def valid(first17: str) -> str:
    return first17 + str(check_char(pd.Series([first17])).iloc[0])


GOOD = valid("33011319800101005")  # 330113 临平区: created 2021, still a valid number
MALE = valid("33010619900215003")  # digit 17 = 3: male
FUTURE = valid("33010620300101001")
FEB30 = "33010619800230001"  # 30 February: no check char makes it valid


def run(frame: pd.DataFrame, *expectations: dict[str, Any]) -> dict[str, list[int]]:
    doc = {"name": "t", "expectations": [{**e, "meta": {"reason_code": "X"}} for e in expectations]}
    return {o["type"]: sorted(o["index"].tolist()) for o in run_suite(frame, doc, SUITE)}


def test_valid_id_number_checks_check_char_and_birth_date_not_county() -> None:
    bad_check = GOOD[:17] + ("0" if GOOD[17] != "0" else "1")
    ids = pd.Series([GOOD, bad_check, FUTURE, valid(FEB30[:17]), None, "330106800101001"], dtype="string")
    got = run(
        pd.DataFrame({"id_number": ids}),
        {
            "type": "expect_column_values_to_be_valid_id_number",
            "kwargs": {"column": "id_number", "as_of": "2026-11-01"},
        },
    )
    # rows: 1 wrong check char, 2 born after as_of, 3 no such date, 5 15-digit (never staged as such)
    assert got["expect_column_values_to_be_valid_id_number"] == [1, 2, 3, 5]


def test_future_means_after_the_given_as_of() -> None:
    frame = pd.DataFrame({"id_number": pd.Series([FUTURE], dtype="string")})
    exp = {
        "type": "expect_column_values_to_be_valid_id_number",
        "kwargs": {"column": "id_number", "as_of": "2031-01-01"},
    }
    assert run(frame, exp)["expect_column_values_to_be_valid_id_number"] == []


def test_certificate_must_be_holder_id_plus_category_and_level() -> None:
    frame = pd.DataFrame(
        {
            "cert_number": pd.Series([GOOD + "41", GOOD + "42", MALE + "41", GOOD + "41"], dtype="string"),
            "id_number": pd.Series([GOOD, GOOD, GOOD, GOOD], dtype="string"),
            "category": pd.array([4, 4, 4, 4], dtype="Int64"),
            "level": pd.array([1, 1, 1, None], dtype="Int64"),
        }
    )
    got = run(
        frame,
        {
            "type": "expect_certificate_to_match_holder",
            "kwargs": {"column_list": ["cert_number", "id_number", "category", "level"]},
        },
    )
    assert got["expect_certificate_to_match_holder"] == [1, 2]  # row 3 lacks a level: not judged


def test_id_must_agree_with_birth_date_and_gender() -> None:
    frame = pd.DataFrame(
        {
            "id_number": pd.Series([MALE, MALE, MALE, MALE], dtype="string"),
            "birth_date": pd.to_datetime(["1990-02-15", "1990-02-16", "1990-02-15", None]),
            "gender": pd.Series(["male", "male", "female", "female"], dtype="string"),
        }
    )
    got = run(
        frame,
        {
            "type": "expect_id_to_agree_with_birth_and_gender",
            "kwargs": {"column_list": ["id_number", "birth_date", "gender"]},
        },
    )
    assert got["expect_id_to_agree_with_birth_and_gender"] == [1, 2]


def test_no_expectation_gets_a_copy_of_the_whole_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    """GX filters nulls per expectation with df[mask]; every such filter must see only its own columns."""
    widths: list[int] = []
    original = pd.DataFrame._getitem_bool_array

    def spy(self: pd.DataFrame, key: Any) -> pd.DataFrame:
        widths.append(self.shape[1])
        return original(self, key)

    monkeypatch.setattr(pd.DataFrame, "_getitem_bool_array", spy)
    n = 1000
    frame = pd.DataFrame({f"c{i}": pd.Series(np.arange(n) % 7, dtype="float64") for i in range(20)})
    frame["id_number"] = pd.Series([GOOD] * n, dtype="string")
    exps = [
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": f"c{i}", "min_value": 0}}
        for i in range(20)
    ]
    exps.append({"type": "expect_column_values_to_be_valid_id_number", "kwargs": {"column": "id_number"}})
    run(frame, *exps)
    assert widths, "GX no longer filters by mask: this test would be empty"
    assert max(widths) == 1, f"an expectation filtered a frame of {max(widths)} columns"


def test_gx_usage_analytics_are_off() -> None:
    context = gx_context()
    assert os.environ["GX_ANALYTICS_ENABLED"] == "False"
    assert context.config.analytics_enabled is False


def test_ids_in_the_as_of_sense_of_the_batch(tmp_path: Path) -> None:
    """A birth date after the run date is invalid for that run, valid for a later one (no clock reads)."""
    born = date(2026, 1, 1)
    ident = valid(f"330106{born:%Y%m%d}001")
    frame = pd.DataFrame({"id_number": pd.Series([ident], dtype="string")})
    for as_of, expected in (("2025-12-31", [0]), ("2026-01-01", [])):
        exp = {
            "type": "expect_column_values_to_be_valid_id_number",
            "kwargs": {"column": "id_number", "as_of": as_of},
        }
        assert run(frame, exp)["expect_column_values_to_be_valid_id_number"] == expected
