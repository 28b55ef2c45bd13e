"""Builders for the thin Airflow DAG files in dags/: wiring, schedules and retries only.

Only airflow.sdk and pendulum are imported here; every task imports the stage it runs
inside its body, so parsing a DAG file touches no database, network or heavy library.
Tasks pass batch ids and small counts through XCom, never data.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, dag, get_current_context, task

START = pendulum.datetime(
    2016, 1, 1, tz="Asia/Shanghai"
)  # 国发〔2015〕52号 in force; earlier dates have no subsidy
DEFAULT_ARGS: dict[str, Any] = {"owner": "lianban", "retries": 2, "retry_delay": timedelta(minutes=1)}


def staged_asset(source: str) -> Asset:
    """The Asset an ingestion DAG updates when a batch of `source` has been validated."""
    return Asset(f"lianban://staged/{source}")


def _as_of() -> date:
    """The run's logical date (never now()): decisions are for the day the run stands for."""
    logical = get_current_context()["logical_date"]
    return pendulum.instance(logical).in_timezone("Asia/Shanghai").date()


def ingestion_dag(source: str, doc_md: str | None, schedule: str = "@daily") -> DAG:
    """One ingestion DAG per source: pull (land raw bytes), then stage (standardise + validate).

    `schedule` is the source's configured one (a cron expression or preset such as @daily).
    """

    @dag(
        dag_id=f"ingest_{source}",
        schedule=schedule,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["lianban", "ingest", source],
        doc_md=doc_md,
    )
    def ingest() -> None:
        @task
        def pull() -> str:
            from hub.ingest import pull_stage
            from hub.settings import load_settings

            return str(pull_stage(load_settings(), source, _as_of())["batch_id"])

        @task(outlets=[staged_asset(source)])
        def stage(batch_id: str) -> dict[str, Any]:
            from hub.ingest import validate_stage
            from hub.settings import load_settings

            return validate_stage(load_settings(), source, batch_id, _as_of())

        stage(pull())  # type: ignore[arg-type]  # TaskFlow passes an XComArg that resolves to str

    return ingest()


def cycle_dag(doc_md: str | None, sources: list[str]) -> DAG:
    """The cycle downstream of the staged Asset of every configured source: merge, eligibility, exchange,
    audit, report (any source's new batch may change a person's facts or an audit finding)."""

    @dag(
        dag_id="cycle",
        schedule=[staged_asset(s) for s in sources],
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["lianban", "cycle"],
        doc_md=doc_md,
    )
    def cycle() -> None:
        def run_stage(name: str) -> dict[str, Any]:
            from hub import cycle as stages
            from hub.settings import load_settings

            as_of = _as_of()
            result: dict[str, Any] = getattr(stages, f"{name}_stage")(
                load_settings(), as_of, f"cycle-{as_of}"
            )
            return result

        @task
        def merge() -> dict[str, Any]:
            return run_stage("merge")

        @task
        def eligibility() -> dict[str, Any]:
            return run_stage("eligibility")

        @task
        def exchange() -> dict[str, Any]:
            return run_stage("exchange")

        @task
        def audit() -> dict[str, Any]:
            return run_stage("audit")

        @task
        def deliver() -> dict[str, Any]:
            return run_stage("deliver")

        # the report is written even when a delivery failed: it is where the failure is shown
        @task(trigger_rule="all_done")
        def report() -> dict[str, Any]:
            return run_stage("report")

        merge() >> eligibility() >> exchange() >> audit() >> deliver() >> report()

    return cycle()
