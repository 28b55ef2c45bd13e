"""The custom GX expectations judge what they claim, run through GX itself, and never copy the frame."""

from __future__ import annotations

import gc
import os
import re
import socket
import subprocess
import sys
import weakref
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from core.storage import sync_gx_context
from transforms.gx_custom import certificate_matches, id_facts, id_is_valid
from transforms.ids import check_char
from transforms.validate import run_suite, runtime_context

ROOT = Path(__file__).resolve().parents[2]

SUITE = Path("test-suite.json")
RUNTIME: dict[str, Path] = {}  # the runtime GX context of this module's runs (one, as a deployment has)


@pytest.fixture(autouse=True, scope="module")
def _gx_runtime(tmp_path_factory: pytest.TempPathFactory) -> None:
    RUNTIME["dir"] = sync_gx_context(tmp_path_factory.mktemp("gx"))


def valid(first17: str) -> str:
    return first17 + str(check_char(pd.Series([first17])).iloc[0])


GOOD = valid("33011319800101005")  # 330113 临平区: created 2021, still a valid number
MALE = valid("33010619900215003")  # digit 17 = 3: male
FUTURE = valid("33010620300101001")
FEB30 = "33010619800230001"  # 30 February: no check char makes it valid


def run(frame: pd.DataFrame, *expectations: dict[str, Any]) -> dict[str, list[int]]:
    doc = {"name": "t", "expectations": [{**e, "meta": {"reason_code": "X"}} for e in expectations]}
    return {o["type"]: sorted(o["index"].tolist()) for o in run_suite(frame, doc, SUITE, RUNTIME["dir"])}


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


def test_known_county_code_accepts_abolished_and_added_codes_only() -> None:
    """330185 临安市 was abolished in 2017 and numbers keep it; 330113 (2021) is known only when added;
    empty and unreadable IDs are the other rules' findings."""
    ids = [valid("33018519800101001"), GOOD, valid("33019919800101003"), valid("99000019800101001")]
    frame = pd.DataFrame({"id_number": pd.Series([*ids, None, "3301851980"], dtype="string")})
    kind = "expect_column_values_to_have_known_county_code"
    assert run(frame, {"type": kind, "kwargs": {"column": "id_number"}})[kind] == [1, 2, 3]
    added = {"type": kind, "kwargs": {"column": "id_number", "added_codes": ["330113"]}}
    assert run(frame, added)[kind] == [2, 3]


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
    context = runtime_context(RUNTIME["dir"])
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


# -- the vectorised conditions against plain-Python statements of the rules ---------------------------


def reference_valid(value: str | None, as_of: date) -> bool:
    """GB 11643 as a person would check it, one number at a time."""
    if value is None or not re.fullmatch(r"[0-9]{17}[0-9X]", value):
        return False
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    if "10X98765432"[sum(int(c) * w for c, w in zip(value, weights, strict=False)) % 11] != value[17]:
        return False
    try:
        born = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    return born.year >= 1800 and born <= as_of


def random_ids(n: int, seed: int) -> list[str | None]:
    """Mostly well-formed numbers with edge-case dates and check characters, plus junk of every shape."""
    rng = np.random.default_rng(seed)
    years = rng.choice([1799, 1800, 1900, 1996, 2000, 2024, 2026, 2027, 9999], n)
    months = rng.integers(0, 14, n)
    days = rng.integers(0, 32, n)
    out: list[str | None] = []
    for i in range(n):
        first17 = f"3301{rng.integers(0, 100):02d}{years[i]:04d}{months[i]:02d}{days[i]:02d}{rng.integers(0, 1000):03d}"
        kind = i % 10
        if kind < 6:
            out.append(valid(first17))
        elif kind == 6:
            out.append(first17 + str(rng.choice(list("0123456789Xx"))))
        elif kind == 7:
            out.append(None)
        elif kind == 8:
            out.append(first17[: rng.integers(0, 17)] + "".join(rng.choice(list("0123456789X /a"), 3)))
        else:
            out.append(first17.replace("0", "０", 1) + "1")  # a full-width digit: not ASCII
    return out


def test_valid_id_condition_equals_the_reference_on_random_numbers() -> None:
    ids = random_ids(6000, seed=11)
    as_of = date(2026, 11, 1)
    got = id_is_valid(pd.Series(ids, dtype="string"), as_of).tolist()
    expected = [reference_valid(v, as_of) for v in ids]
    assert sum(expected) > 1000 and got == expected


def test_birth_and_sex_read_from_the_id_equal_the_reference() -> None:
    ids = [
        v for v in random_ids(4000, seed=12) if reference_valid(v, date(2399, 12, 31))
    ]  # the tables end in 2399
    facts = id_facts(pd.Series(ids, dtype="string"))
    assert facts.shaped.all() and facts.real_birth.all()
    births = [np.datetime64(f"{v[6:10]}-{v[10:12]}-{v[12:14]}", "D") for v in ids if v]
    assert (facts.birth == np.array(births)).all()
    assert facts.male.tolist() == [int(v[16]) % 2 == 1 for v in ids if v]


def test_certificate_condition_equals_the_text_rule_for_every_shape() -> None:
    rng = np.random.default_rng(13)
    n = 3000
    ids = pd.Series([valid(f"3301061980010{i % 10}{i % 1000:03d}") for i in range(n)], dtype="string")
    category = pd.array(rng.integers(-1, 12, n), dtype="Int64")  # 10, 11 and -1 are not single digits
    level = pd.array(rng.integers(0, 6, n), dtype="Int64")
    category[rng.random(n) < 0.05] = pd.NA
    holder = ids.copy()
    holder[rng.random(n) < 0.05] = None
    holder[rng.random(n) < 0.05] = "1234567"
    certs: list[str | None] = []
    for i in range(n):
        proper = f"{ids[i]}{category[i] if category[i] is not pd.NA else ''}{level[i]}"
        certs.append(
            [proper, proper, ids[(i + 1) % n] + "41", proper[:-1], proper + "1", None, ids[i][:17] + "X41"][
                i % 7
            ]
        )
    cert = pd.Series(certs, dtype="string")
    got = certificate_matches(cert, holder, pd.Series(category), pd.Series(level))
    expected = [
        c is not None and h is not None and k is not pd.NA and c == f"{h}{k}{lv}"
        for c, h, k, lv in zip(certs, holder.tolist(), category, level, strict=True)
    ]
    assert sum(expected) > 300 and got.tolist() == expected


# -- no frame copies, no analytics ----------------------------------------------------------------------


def row_copies(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """(columns, rows) of every DataFrame copy: row takes (boolean indexing, dropna) and deep copies.
    Column selections (take along axis 1) share the data under copy-on-write: not counted."""
    widths: list[tuple[int, int]] = []
    take, copy = pd.DataFrame.take, pd.DataFrame.copy

    def spy_take(self: pd.DataFrame, indices: Any, axis: Any = 0, **kwargs: Any) -> pd.DataFrame:
        if self._get_axis_number(axis) == 0:
            widths.append((self.shape[1], len(indices)))
        return take(self, indices, axis=axis, **kwargs)

    def spy_copy(self: pd.DataFrame, deep: bool = True) -> pd.DataFrame:
        if deep:
            widths.append(self.shape)
        return copy(self, deep=deep)

    monkeypatch.setattr(pd.DataFrame, "take", spy_take)
    monkeypatch.setattr(pd.DataFrame, "copy", spy_copy)
    return widths


def wide_batch(n: int = 2000) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """30 columns; ID with nulls (so GX filters rows); two multicolumn expectations and 20 column ones."""
    frame = pd.DataFrame({f"c{i}": pd.Series(np.arange(n) % 7, dtype="float64") for i in range(20)})
    ids = pd.Series([MALE] * n, dtype="string")
    ids[::10] = None
    frame = frame.assign(
        id_number=ids,
        cert_number=ids + "41",
        category=pd.array([4] * n, dtype="Int64"),
        level=pd.array([1] * n, dtype="Int64"),
        birth_date=pd.Series(pd.to_datetime(["1990-02-15"] * n)),
        gender=pd.Series(["male"] * n, dtype="string"),
        **{f"s{i}": pd.Series(["x"] * n, dtype="string") for i in range(4)},
    )
    frame.loc[::7, "c3"] = np.nan
    exps: list[dict[str, Any]] = [
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": f"c{i}", "min_value": 0}}
        for i in range(20)
    ]
    exps += [
        {"type": "expect_column_values_to_be_valid_id_number", "kwargs": {"column": "id_number"}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "id_number"}},
        {
            "type": "expect_certificate_to_match_holder",
            "kwargs": {"column_list": ["cert_number", "id_number", "category", "level"]},
        },
        {
            "type": "expect_id_to_agree_with_birth_and_gender",
            "kwargs": {"column_list": ["id_number", "birth_date", "gender"]},
        },
    ]
    return frame, exps


def test_no_expectation_copies_more_than_its_own_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    frame, exps = wide_batch()
    copies = row_copies(monkeypatch)
    got = run(frame, *exps)
    assert got["expect_column_values_to_not_be_null"] == list(range(0, len(frame), 10))
    assert got["expect_certificate_to_match_holder"] == got["expect_id_to_agree_with_birth_and_gender"] == []
    assert copies, "GX no longer filters rows: this test would be empty"
    widest = max(width for width, _ in copies)
    assert widest <= 4, f"an expectation copied a frame of {widest} columns: {copies}"
    bulk = [(width, rows) for width, rows in copies if width > 1 and rows > len(frame) // 2]
    assert sorted(bulk) == [(3, 1800), (4, 1800)], (
        f"multicolumn rows copied more than once per domain: {bulk}"
    )


def test_stock_gx_engine_copies_the_whole_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    """The control for the test above: with GX's own engine the same suite copies all 30 columns."""
    from great_expectations.execution_engine import PandasExecutionEngine

    from transforms.gx_custom import ColumnScopedPandasDatasource

    monkeypatch.setattr(ColumnScopedPandasDatasource, "execution_engine_override", PandasExecutionEngine)
    frame, exps = wide_batch()
    copies = row_copies(monkeypatch)
    run(frame, *exps)
    assert max(width for width, _ in copies) == frame.shape[1]


def test_gx_analytics_are_off_before_gx_is_imported() -> None:
    code = (
        "import os, sys; import transforms.gx_custom; "
        "assert 'great_expectations' in sys.modules; print(os.environ['GX_ANALYTICS_ENABLED'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "GX_ANALYTICS_ENABLED"}
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert out.stdout.strip() == "False"


def test_running_a_suite_opens_no_network_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise OSError(f"test: no network ({address})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    frame = pd.DataFrame({"id_number": pd.Series([GOOD, "1"], dtype="string")})
    got = run(
        frame, {"type": "expect_column_values_to_be_valid_id_number", "kwargs": {"column": "id_number"}}
    )
    assert got["expect_column_values_to_be_valid_id_number"] == [1]
    assert attempts == []
    assert os.environ["GX_ANALYTICS_ENABLED"] == "False"
    assert runtime_context(RUNTIME["dir"]).config.analytics_enabled is False


def test_run_suite_lets_go_of_the_batch() -> None:
    """GX keeps its last context in a module global; the batch (a whole staged frame) must not stay with it."""
    frame, exps = wide_batch(100)
    alive = weakref.ref(frame)
    run(frame, *exps)
    del frame
    gc.collect()
    assert alive() is None
