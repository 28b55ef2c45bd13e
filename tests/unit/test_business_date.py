"""The business date of every kind of DAG run (core.business_date)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from core.business_date import BadBusinessDate, business_date

LATE_UTC = datetime(2026, 11, 30, 17, 30, tzinfo=UTC)  # 01:30 on 1 December in Asia/Shanghai


def test_conf_as_of_wins_over_everything() -> None:
    got = business_date(
        conf={"as_of": "2026-10-01"},
        logical_date=LATE_UTC,
        event_extras=[{"as_of": "2026-11-30"}],
        run_after=LATE_UTC,
    )
    assert got == date(2026, 10, 1)


def test_logical_date_is_taken_in_shanghai() -> None:
    assert business_date(conf={}, logical_date=LATE_UTC, run_after=None) == date(2026, 12, 1)


def test_asset_triggered_run_takes_the_newest_batch_date() -> None:
    extras = [{"as_of": "2026-11-29"}, {"as_of": "2026-11-30", "batch_id": "b"}, {}, {"as_of": None}]
    got = business_date(conf=None, logical_date=None, event_extras=extras, run_after=LATE_UTC)
    assert got == date(2026, 11, 30)


def test_trigger_without_logical_date_uses_run_after_in_shanghai() -> None:
    assert business_date(conf={}, logical_date=None, event_extras=[], run_after=LATE_UTC) == date(2026, 12, 1)


@pytest.mark.parametrize(
    ("conf", "extras", "message"),
    [
        ({"as_of": "30/11/2026"}, [], "dag run conf 'as_of'"),
        ({}, [{"as_of": "2026-02-30"}], "Asset event extra 'as_of'"),
    ],
)
def test_bad_dates_name_where_they_came_from(conf: dict, extras: list, message: str) -> None:
    with pytest.raises(BadBusinessDate, match=message):
        business_date(conf=conf, logical_date=None, event_extras=extras, run_after=LATE_UTC)


def test_no_date_at_all_is_an_error() -> None:
    with pytest.raises(BadBusinessDate, match="no conf as_of"):
        business_date(conf=None, logical_date=None, run_after=None)
