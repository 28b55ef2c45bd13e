"""The business date (as_of) of a DAG run, the same rule for every kind of run.

Every stage decides "as of" one calendar day in Asia/Shanghai (a subsidy is in force on a day,
a certificate valid until a day), never "now". Airflow 3 runs do not all carry a logical date:
an Asset-triggered run and a manual or REST trigger without one have `logical_date` None. So:

1. `as_of` in the run's conf (YYYY-MM-DD): an explicit choice, e.g. re-running a past day
   through the REST API (`{"conf": {"as_of": "2026-11-30"}}`).
2. the logical date (scheduled runs, backfills, `hub run`, `airflow dags test DAG DATE`, a
   trigger that names one), converted to Asia/Shanghai. Clearing a task reruns it in the same
   run, so it keeps the run's date.
3. for an Asset-triggered cycle run: the latest business date among the triggering batches
   (each ingestion run records its as_of in the Asset event's extra), so the cycle stands for
   the day its newest batch was pulled for, whatever the hour the scheduler gets to it.
4. otherwise the moment the run was due (`run_after`), in Asia/Shanghai.

Pure functions of plain values, so the rule is tested without Airflow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

TZ = ZoneInfo("Asia/Shanghai")
EXTRA_KEY = "as_of"


class BadBusinessDate(ValueError):
    """A conf or Asset event carried an as_of that is not a YYYY-MM-DD date."""


def _parse(value: Any, where: str) -> date:
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise BadBusinessDate(f"{where}: expected a date YYYY-MM-DD, got {value!r}") from exc


def _local_day(moment: datetime) -> date:
    if moment.tzinfo is None:  # Airflow hands aware datetimes; a naive one is taken as UTC
        moment = moment.replace(tzinfo=ZoneInfo("UTC"))
    return moment.astimezone(TZ).date()


def business_date(
    *,
    conf: Mapping[str, Any] | None,
    logical_date: datetime | None,
    event_extras: Iterable[Mapping[str, Any]] = (),
    run_after: datetime | None,
) -> date:
    """The as_of of one run, by the rule in the module docstring (first that applies)."""
    if conf and conf.get(EXTRA_KEY) is not None:
        return _parse(conf[EXTRA_KEY], "dag run conf 'as_of'")
    if logical_date is not None:
        return _local_day(logical_date)
    dates = [
        _parse(extra[EXTRA_KEY], "triggering Asset event extra 'as_of'")
        for extra in event_extras
        if extra and extra.get(EXTRA_KEY) is not None
    ]
    if dates:
        return max(dates)
    if run_after is None:
        raise BadBusinessDate("the run has no conf as_of, logical date, triggering batch date or run_after")
    return _local_day(run_after)
