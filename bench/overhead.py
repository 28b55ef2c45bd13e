"""Airflow's own overhead in one DAG run, from its metadata database (docs/scale.md, overhead).

For each task: its first instance's start minus the latest end among the instances of the tasks upstream
of it (the run's start for a root task). What is left is the time Airflow spent between one task ending
and the next starting: scheduling, queueing in the executor (the Celery broker), a worker process
starting and loading the DAG. Mapped instances of one task count once (the first one to start), so
waiting for a free worker slot is not counted as overhead.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import sqlalchemy as sa


def task_instances(metadata_url: str, dag_id: str, run_id: str) -> pd.DataFrame:
    """task_id, map_index, start, end, hostname of every task instance of one run."""
    engine = sa.create_engine(metadata_url)
    query = sa.text(
        "SELECT task_id, map_index, start_date, end_date, hostname, state FROM task_instance "
        "WHERE dag_id = :dag AND run_id = :run"
    )
    try:
        with engine.connect() as conn:
            return pd.read_sql(query, conn, params={"dag": dag_id, "run": run_id})
    finally:
        engine.dispose()


def overhead(instances: pd.DataFrame, upstream: dict[str, list[str]]) -> dict[str, Any]:
    """Gaps between tasks (seconds) against the run's span from its first start to its last end."""
    first_start = instances.groupby("task_id")["start_date"].min()
    last_end = instances.groupby("task_id")["end_date"].max()
    began, ended = instances["start_date"].min(), instances["end_date"].max()
    gaps = {}
    for task, start in first_start.items():
        before = [last_end[u] for u in upstream.get(str(task), []) if u in last_end]
        gaps[str(task)] = max(0.0, (start - (max(before) if before else began)).total_seconds())
    total = (ended - began).total_seconds()
    gap = sum(gaps.values())
    return {
        "tasks": len(gaps),
        "task_instances": len(instances),
        "span_seconds": round(total, 3),
        "gap_seconds": round(gap, 3),
        "gap_share": round(gap / total, 4) if total else 0.0,
        "gaps": {k: round(v, 3) for k, v in sorted(gaps.items())},
    }
