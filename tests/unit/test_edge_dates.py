"""Dates over year 1 to 9999 from the landed cell to the decision: never through nanosecond timestamps.

A certificate valid until 9999-12-31 ("no end") used to wrap to 1816-03-29 in a datetime64[ns] cast,
and its holder lost both subsidies. These tests follow such a row through staging, the merge, the
master store (SQLite) and the eligibility rules, with the real functions.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from batch_builders import cdpf_row, holders, land_sql

from core.settings import Settings, load_settings
from stages.ingest import stage_batch
from store.master_store import MasterStore
from transforms.eligibility import evaluate, load_policy
from transforms.merge import civil_flags, merge_sources
from transforms.standardise import parse_dates, parse_timestamps

ROOT = Path(__file__).resolve().parents[2]
AS_OF = date(2025, 6, 30)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(var_dir=tmp_path)


def test_dates_parse_over_the_whole_calendar_and_impossible_ones_are_invalid() -> None:
    text = pd.Series(
        [
            "9999-12-31",
            "99991231",
            "0001-01-01",
            "1799-05-01",
            "0000-00-00",
            "2023-02-30",
            "2024-02-29",
            None,
        ],
        dtype="string",
    )
    dates, invalid = parse_dates(text)
    assert str(dates.dtype) == "datetime64[us]"
    assert [d.date() if pd.notna(d) else None for d in dates] == [
        date(9999, 12, 31),
        date(9999, 12, 31),
        date(1, 1, 1),
        date(1799, 5, 1),
        None,
        None,
        date(2024, 2, 29),
        None,
    ]
    assert invalid.tolist() == [False, False, False, False, True, True, False, False]
    stamps, bad = parse_timestamps(
        pd.Series(["9999-12-31 23:59:59", "9999-12-31T23:59:59.5", "2023-02-30 00:00:00"], dtype="string")
    )
    assert stamps.iloc[0] == pd.Timestamp("9999-12-31 23:59:59")
    assert stamps.iloc[1] == pd.Timestamp("9999-12-31 23:59:59.5")
    assert bad.tolist() == [False, False, True]


def test_civil_assistance_without_end_stays_in_force() -> None:
    civil = pd.DataFrame(
        {
            "id_number": pd.array(["a", "b"], dtype="string"),
            "assistance_type": pd.array(["dibao", "dibao"], dtype="string"),
            "dibao_standard": pd.array([1150.0, 1150.0], dtype="Float64"),
            "start_date": pd.Series(["2020-01-01", "2020-01-01"], dtype="datetime64[us]"),
            "end_date": pd.Series(["9999-12-31", "2024-01-01"], dtype="datetime64[us]"),
            "active": [True, True],
            "_batch_id": pd.array(["c1", "c1"], dtype="string"),
        }
    )
    flags = civil_flags(civil, date(2026, 3, 1)).set_index("id_number")
    assert flags["dibao"].to_dict() == {"a": True, "b": False}


@pytest.mark.sqlite
def test_certificate_valid_until_9999_keeps_both_subsidies_end_to_end(
    settings: Settings, tmp_path: Path
) -> None:
    forever, lapsed, feb30, zeros = holders(4)
    rows = [
        cdpf_row(forever, YXQZ="9999-12-31", CJLB="4", CJRZH=forever + "41"),
        cdpf_row(lapsed, YXQZ="2020-12-31", CJLB="4", CJRZH=lapsed + "41"),
        cdpf_row(feb30, YXQZ="2023-02-30"),
        cdpf_row(zeros, YXQZ="0000-00-00"),
    ]
    land_sql(settings, "cdpf", "cdpf-dates", rows, tmp_path)
    result = stage_batch(settings, "cdpf", "cdpf-dates", AS_OF, max_invalid_ratio=1.0)
    assert (result.accepted, result.quarantined) == (2, 2)
    quarantine = pd.read_parquet(result.path / "quarantine.parquet")
    assert quarantine["reason_codes"].tolist() == ["DATE_INVALID", "DATE_INVALID"]
    assert all("有效期至" in text for text in quarantine["reasons_zh"])

    accepted = pd.read_parquet(result.path / "accepted.parquet")
    until = accepted.set_index("id_number")["cert_valid_until"]
    assert until[forever] == pd.Timestamp("9999-12-31")  # not 1816-03-29

    civil = pd.DataFrame(
        {
            "id_number": pd.array([forever, lapsed], dtype="string"),
            "name": pd.array(["李䶮", "李䶮"], dtype="string"),
            "assistance_type": pd.array(["dibao", "dibao"], dtype="string"),
            "county": pd.array(["330106", "330106"], dtype="string"),
            "dibao_standard": pd.array([1150.0, 1150.0], dtype="Float64"),
            "start_date": pd.Series(["2020-01-01"] * 2, dtype="datetime64[us]"),
            "end_date": pd.Series(["9999-12-31"] * 2, dtype="datetime64[us]"),
            "active": [True, True],
            "updated_at": pd.Series(["2025-06-01 08:00:00"] * 2, dtype="datetime64[us]"),
            "_batch_id": pd.array(["civil-b1"] * 2, dtype="string"),
        }
    )
    police = pd.DataFrame(
        {
            "id_number": pd.array([forever, lapsed], dtype="string"),
            "name": pd.array(["李䶮", "李䶮"], dtype="string"),
            "gender": pd.array(["female", "female"], dtype="string"),
            "birth_date": accepted.set_index("id_number").loc[[forever, lapsed], "birth_date"].to_numpy(),
            "hukou_county": pd.array(["330106", "330106"], dtype="string"),
            "hukou_status": pd.array(["normal", "normal"], dtype="string"),
            "death_date": pd.Series([None, None], dtype="datetime64[us]"),
            "updated_at": pd.Series(["2025-06-01 08:00:00"] * 2, dtype="datetime64[us]"),
            "former_id_number": pd.array([None, None], dtype="string"),
            "_batch_id": pd.array(["police-b1"] * 2, dtype="string"),
        }
    )
    merged = merge_sources({"cdpf": accepted, "civil": civil, "police": police}, AS_OF)
    master = merged.master.set_index("id_number", drop=False)
    assert master.loc[forever, "cert_valid_until"] == pd.Timestamp("9999-12-31")

    store = MasterStore(settings.expand(settings.master_url))
    store.apply_merge(merged, "run-dates", AS_OF)
    back = store.read_master()
    assert back.set_index("id_number").loc[forever, "cert_valid_until"] == pd.Timestamp("9999-12-31")

    decisions = evaluate(back, load_policy(ROOT / "policies" / "zhejiang.yaml", AS_OF), AS_OF)
    granted = decisions[decisions["eligible"]]
    two = {"living_subsidy", "nursing_subsidy"}
    assert two <= set(granted.loc[granted["id_number"] == forever, "service"])
    assert not two & set(granted.loc[granted["id_number"] == lapsed, "service"])
