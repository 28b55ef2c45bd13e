"""Builders for the thin Airflow DAG files in dags/: wiring, schedules and retries only.

Only airflow.sdk and pendulum are imported here; every task imports the stage it runs
inside its body, so parsing a DAG file touches no database, network or heavy library.
Tasks pass batch ids and small counts through XCom, never data.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, dag, get_current_context, task

START = pendulum.datetime(
    2016, 1, 1, tz="Asia/Shanghai"
)  # 国发〔2015〕52号 in force; earlier dates have no subsidy


def _on_failure(context: Any) -> None:
    """A task failed for good (after its last retry): the optional webhook notice (hub.alerts)."""
    from hub.alerts import notify_failure

    notify_failure(context)


DEFAULT_ARGS: dict[str, Any] = {
    "owner": "lianban",
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "on_failure_callback": _on_failure,
}


def staged_asset(source: str) -> Asset:
    """The Asset an ingestion DAG updates when a batch of `source` has been validated."""
    return Asset(f"lianban://staged/{source}")


def _as_of() -> date:
    """The run's business date by the one rule of core.business_date (never now()).

    Reads the context with .get(): Asset-triggered runs and triggers without a logical date have
    no `logical_date` key at all.
    """
    from core.business_date import business_date

    context = get_current_context()
    dag_run = context["dag_run"]
    events = context.get("triggering_asset_events") or {}
    extras = [event.extra for asset in events for event in events[asset]]
    return business_date(
        conf=getattr(dag_run, "conf", None),
        logical_date=context.get("logical_date"),
        event_extras=extras,
        run_after=getattr(dag_run, "run_after", None),
    )


def ingestion_dag(
    source: str, doc_md: str | None, schedule: str = "@daily", wait: dict[str, Any] | None = None
) -> DAG:
    """One ingestion DAG per source: [wait,] pull (land raw bytes), stage (standardise + validate), fresh.

    One retry policy per step: `pull` has no Airflow retries because the connector retries its own
    calls (bounded, one log line per attempt), so a dead source fails once, within the connector's
    bound, instead of Airflow multiplying the client's attempts. A refused pull does not stop the
    cycle: `stage` still runs (trigger rule all_done) and updates the Asset with status "stale",
    so the cycle runs on this source's last accepted batch; `fresh` then fails this DAG run with
    the pull's error, so the refusal is red in the UI and reaches the failure callbacks.

    `schedule` is the source's configured one (a cron expression or preset such as @daily). `wait`
    (a drop source's `wait:`, docs/operations.md) adds a sensor before the pull: a late file is
    waited for, a missing one fails the sensor at the deadline with the source, transport and folder
    named, and the cycle goes on with the source stale, as for a refused pull.
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
        @task(retries=0)
        def pull() -> str:
            from core.settings import load_settings
            from hub.progress import step
            from stages.ingest import pull_stage

            with step(f"{source} pull") as progress:
                pulled = pull_stage(load_settings(), source, _as_of())
                progress["rows"] = pulled.rows
            return pulled.batch_id

        @task(outlets=[staged_asset(source)], trigger_rule="all_done")
        def stage() -> dict[str, Any]:
            from core.settings import load_settings
            from core.staleness import refusal
            from core.storage import Storage
            from stages.ingest import validate_stage

            context = get_current_context()
            as_of = _as_of()
            settings = load_settings()
            batch_id = context["ti"].xcom_pull(task_ids="pull")
            if batch_id is None:  # the pull was refused: announce the source as stale
                refused = refusal(Storage(settings), source) or {}
                result: dict[str, Any] = {
                    "source": source,
                    "status": "stale",
                    "error": refused.get("error", "the pull task failed"),
                    "last_good_batch": refused.get("last_good_batch"),
                }
            else:
                from hub.progress import step

                with step(f"{source} validate") as progress:
                    staged = validate_stage(settings, source, str(batch_id), as_of)
                    progress["rows"] = staged.accepted
                result = staged.as_json()
            # The cycle run this event triggers takes its business date from here (core.business_date).
            context["outlet_events"][staged_asset(source)].extra = {
                "as_of": as_of.isoformat(),
                "batch_id": batch_id,
                "status": result["status"],
            }
            return result

        @task(retries=0, trigger_rule="all_done")
        def fresh(staged: dict[str, Any] | None) -> None:
            """Fail the run when the pull was refused (the cycle goes on without this source)."""
            if staged is None:
                raise RuntimeError(f"{source}: the stage task failed; see its log")
            if staged["status"] == "stale":
                raise RuntimeError(
                    f"{source} is stale (its pull was refused or its file never came: see the pull "
                    f"or wait task); "
                    f"the cycle uses its last accepted batch {staged['last_good_batch']}"
                )

        pulled, staged = pull(), stage()
        pulled >> staged
        if wait is not None:
            _drop_sensor(source, wait) >> pulled
        fresh(staged)  # type: ignore[arg-type]  # TaskFlow passes an XComArg that resolves to a dict

    return ingest()


def _drop_sensor(source: str, wait: dict[str, Any]) -> Any:
    """The wait for a ready drop file; its own deadline is its retry policy (no Airflow retries).

    Airflow's timeout is only a backstop a little past the deadline, so the error a person sees
    is the stage's (stages.ingest.wait_stage), not "Sensor has timed out".
    """
    poke, mode = float(wait["poke_seconds"]), str(wait.get("mode", "reschedule"))

    @task.sensor(
        task_id="wait",
        poke_interval=poke,
        timeout=float(wait["deadline_minutes"]) * 60 + poke + 60,
        mode=mode,
        retries=0,
    )
    def wait_for_drop() -> bool:
        from core.settings import load_settings
        from stages.ingest import wait_stage

        context = get_current_context()
        ti = context["ti"]
        # the deadline counts from the first look: in reschedule mode each look is a new try
        started = (mode == "reschedule" and ti.get_first_reschedule_date(context)) or ti.start_date
        return wait_stage(load_settings(), source, _as_of(), started, pendulum.now("UTC"))

    return wait_for_drop()


def cycle_dag(doc_md: str | None, sources: list[str], partitions: str = "none") -> DAG:
    """The cycle downstream of the staged Asset of every configured source: merge, eligibility, exchange,
    audit, report (any source's new batch may change a person's facts or an audit finding).

    `partitions: prefecture` (config) runs merge and eligibility as plan, one mapped task per prefecture
    (dynamic task mapping over the prefectures the plan found, so the Celery workers share them) and a
    reduce that publishes (stages/partitions.py); the tasks after them are the same.
    """

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
            """Run one stage module's stage; its typed result travels as JSON (counts and paths)."""
            from core.results import StageResult
            from core.settings import Settings, load_settings
            from hub.progress import step
            from stages.audit import audit_stage
            from stages.deliver import deliver_stage
            from stages.eligibility import eligibility_stage
            from stages.exchange import exchange_stage
            from stages.merge import merge_stage
            from stages.report import report_stage

            stages: dict[str, Callable[[Settings, date, str], StageResult]] = {
                "merge": merge_stage,
                "eligibility": eligibility_stage,
                "exchange": exchange_stage,
                "audit": audit_stage,
                "deliver": deliver_stage,
                "report": report_stage,
            }
            as_of = _as_of()
            with step(name) as progress:
                result = stages[name](load_settings(), as_of, f"cycle-{as_of}")
                progress["rows"] = getattr(result, "rows", None)  # every stage result counts rows
            return result.as_json()

        def run_part(name: str, *args: Any) -> Any:
            from core.settings import load_settings
            from stages import partitions as stages

            as_of = _as_of()
            return getattr(stages, f"{name}_stage")(load_settings(), as_of, f"cycle-{as_of}", *args)

        @task
        def merge() -> dict[str, Any]:
            return run_stage("merge")

        @task
        def eligibility() -> dict[str, Any]:
            return run_stage("eligibility")

        @task
        def merge_plan() -> list[str]:
            result: list[str] = run_part("merge_plan")
            return result

        @task
        def merge_part(partition: str) -> dict[str, Any]:
            result: dict[str, Any] = run_part("merge_part", partition)
            return result

        @task(trigger_rule="none_failed")  # a day with nobody in scope maps over no partition
        def merge_reduce(parts: list[dict[str, Any]]) -> dict[str, Any]:
            result: dict[str, Any] = run_part("merge_reduce", list(parts or []))
            return result

        @task
        def partitions_of(merged: dict[str, Any]) -> list[str]:
            return list(merged["partitions"])

        @task
        def eligibility_part(partition: str) -> dict[str, Any]:
            result: dict[str, Any] = run_part("eligibility_part", partition)
            return result

        @task(trigger_rule="none_failed")
        def eligibility_reduce(parts: list[dict[str, Any]]) -> dict[str, Any]:
            result: dict[str, Any] = run_part("eligibility_reduce", list(parts or []))
            return result

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

        if partitions == "prefecture":
            merged = merge_reduce(merge_part.expand(partition=merge_plan()))  # type: ignore[arg-type]
            decided = eligibility_reduce(
                eligibility_part.expand(partition=partitions_of(merged))  # type: ignore[arg-type]
            )
            decided >> exchange() >> audit() >> deliver() >> report()
        else:
            merge() >> eligibility() >> exchange() >> audit() >> deliver() >> report()

    return cycle()
