"""The DAGs under a real Airflow 3: scheduler, dag-processor and api-server as processes, LocalExecutor,
PostgreSQL metadata in a throwaway database (airflow_deployment), a 300-person sandbox and the police
simulator.

Part 1 lets the scheduler run the four ingestion DAGs and checks that their Assets triggered the cycle
DAG, which succeeded and left partner files. Part 2 triggers the cycle through the REST API with no
logical date. Part 3 clears one task of a finished cycle run, which reruns to the same result; part 4
backfills an ingestion DAG over two days. Then no task log may contain a secret.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from airflow_deployment import BIN, INGEST, ROOT, Airflow, airflow_env, free_port

pytestmark = pytest.mark.e2e

TZ = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def airflow(
    tmp_path_factory: pytest.TempPathFactory, airflow_metadata: Callable[[], Iterator[str]]
) -> Iterator[Airflow]:
    from sandbox.simulator import running_police_simulator

    base = tmp_path_factory.mktemp("scheduler")
    home, var = base / "airflow", base / "var"
    home.mkdir()
    today = datetime.now(TZ).date().isoformat()
    hub_env = {**os.environ, "LIANBAN_VAR": str(var), "PYTHONPATH": str(ROOT)}
    for key in ("LIANBAN_CONFIG", "LIANBAN_POLICE_URL", "LIANBAN_POLICE_TOKEN"):
        hub_env.pop(key, None)
    init = [
        sys.executable,
        "-m",
        "hub.cli",
        "sandbox",
        "init",
        "--persons",
        "300",
        "--seed",
        "11",
        "--as-of",
        today,
    ]
    subprocess.run(init, env=hub_env, cwd=ROOT, check=True, capture_output=True)
    port = free_port()
    db = airflow_metadata()
    metadata_url = next(db)
    with running_police_simulator(var / "sandbox") as police:
        hub_env["LIANBAN_CONFIG"] = str(ROOT / "config" / "sandbox.yaml")
        env = airflow_env(hub_env, home, metadata_url, port, police)
        env.update({"AIRFLOW__CORE__EXECUTOR": "LocalExecutor", "AIRFLOW__CORE__PARALLELISM": "2"})
        deployment = Airflow(home, env, port)
        try:
            deployment.serve()
            deployment.log_in_and_wait_for_dags()
            yield deployment
        finally:
            deployment.stop()
            next(db, None)  # drop the throwaway metadata database


def test_assets_trigger_the_cycle_which_succeeds(airflow: Airflow) -> None:
    started = time.monotonic()
    for dag_id in INGEST:  # scheduled by the scheduler itself (unpaused at creation, @daily)
        run = airflow.finished(dag_id)
        assert run["state"] == "success", f"{dag_id}: {run}"
        assert run["run_type"] == "scheduled"
    cycle = airflow.finished("cycle")
    assert cycle["run_type"] == "asset_triggered"
    assert cycle["logical_date"] is None
    assert cycle["state"] == "success", cycle
    events = airflow.api("GET", f"/dags/cycle/dagRuns/{cycle['dag_run_id']}/upstreamAssetEvents")[
        "asset_events"
    ]
    assert {e["uri"] for e in events} == {f"lianban://staged/{s[7:]}" for s in INGEST}
    as_of = {e["extra"]["as_of"] for e in events}
    var = Path(airflow.env["LIANBAN_VAR"])
    partner_files = sorted(p.relative_to(var) for p in (var / "outbox").rglob("*.csv"))
    day = max(as_of).replace("-", "")
    subsidies = var / "outbox" / "civil" / f"{max(as_of)[:7]}" / f"civil_two_subsidies_{day}.csv"
    assert subsidies.exists(), partner_files
    assert len(subsidies.read_text(encoding="utf-8-sig", errors="backslashreplace").splitlines()) > 1
    assert all((var / p).with_name(p.name + ".manifest.json").exists() for p in partner_files)
    for source in ("cdpf", "civil", "hrss", "police"):
        assert (var / "outbox" / source / max(as_of)[:7] / f"{source}_conflicts_{day}.csv").exists()
    assert (var / "reports" / f"cycle-{max(as_of)}" / "report.html").exists()
    print(
        f"\nscheduler part 1: ingest + Asset-triggered cycle in {time.monotonic() - started:.0f} s; "
        f"{len(partner_files)} partner files, as_of {sorted(as_of)}"
    )


def test_rest_trigger_without_logical_date(airflow: Airflow) -> None:
    started = time.monotonic()
    created = airflow.api("POST", "/dags/cycle/dagRuns", json={"logical_date": None})
    assert created["logical_date"] is None
    run_id = created["dag_run_id"]
    done = airflow.wait(
        "the REST-triggered cycle",
        lambda: (
            (r := airflow.api("GET", f"/dags/cycle/dagRuns/{run_id}"))["state"] in {"success", "failed"} and r
        ),
    )
    assert done["run_type"] == "manual"
    assert done["state"] == "success", done
    # No logical date: the business date is the moment it was due, in Asia/Shanghai.
    due = datetime.fromisoformat(done["run_after"]).astimezone(ZoneInfo("Asia/Shanghai")).date()
    var = Path(airflow.env["LIANBAN_VAR"])
    report = json.loads((var / "reports" / f"cycle-{due}" / "report.json").read_text(encoding="utf-8"))
    assert report["as_of"] == due.isoformat()
    assert (var / "reports" / f"cycle-{due}" / "report.json").stat().st_mtime > time.time() - (
        time.monotonic() - started
    )
    print(
        f"\nscheduler part 2: REST-triggered cycle without logical date in {time.monotonic() - started:.0f} s"
    )


def test_clearing_a_task_reruns_it_to_the_same_result(airflow: Airflow) -> None:
    """Clear the report task of the finished Asset-triggered cycle run: it runs again in the same run
    (same business date, from the run's triggering events) and writes the same report."""
    started = time.monotonic()
    run = airflow.wait(
        "the Asset-triggered cycle run to finish",
        lambda: [
            r
            for r in airflow.runs("cycle")
            if r["run_type"] == "asset_triggered" and r["state"] in {"success", "failed"}
        ],
    )[0]
    assert run["state"] == "success", run
    run_id = run["dag_run_id"]
    before = airflow.api("GET", f"/dags/cycle/dagRuns/{run_id}/taskInstances/report")
    var = Path(airflow.env["LIANBAN_VAR"])
    events = airflow.api("GET", f"/dags/cycle/dagRuns/{run_id}/upstreamAssetEvents")["asset_events"]
    report = var / "reports" / f"cycle-{max(e['extra']['as_of'] for e in events)}" / "report.json"
    first, first_mtime = json.loads(report.read_text(encoding="utf-8")), report.stat().st_mtime_ns
    cleared = airflow.api(
        "POST",
        "/dags/cycle/clearTaskInstances",
        json={"dag_run_id": run_id, "task_ids": ["report"], "dry_run": False, "only_failed": False},
    )
    assert [t["task_id"] for t in cleared["task_instances"]] == ["report"]
    after = airflow.wait(
        "the cleared report task to run again",
        lambda: (
            (t := airflow.api("GET", f"/dags/cycle/dagRuns/{run_id}/taskInstances/report"))["try_number"]
            > before["try_number"]
            and t["state"] in {"success", "failed"}
            and t
        ),
    )
    assert after["state"] == "success", after
    assert (
        airflow.wait(
            "the run to finish again",
            lambda: (
                (r := airflow.api("GET", f"/dags/cycle/dagRuns/{run_id}"))["state"] in {"success", "failed"}
                and r
            ),
        )["state"]
        == "success"
    )
    assert report.stat().st_mtime_ns > first_mtime  # written again...
    assert json.loads(report.read_text(encoding="utf-8")) == first  # ...with the same content
    print(f"\nscheduler part 3: cleared report task reran in {time.monotonic() - started:.0f} s")


def test_backfill_over_two_days_runs_each_day_on_its_own_business_date(airflow: Airflow) -> None:
    """`airflow backfill create` of an audit-only ingestion DAG (it triggers no cycle) over two past days:
    one run per day, each succeeding with its logical day in Asia/Shanghai as business date (the as_of
    its stage announces in the Asset event, core.business_date rule 2)."""
    started = time.monotonic()
    dag_id = "ingest_cdpf_survey"
    today = datetime.now(TZ).date()
    days = [today - timedelta(days=2), today - timedelta(days=1)]
    created = subprocess.run(
        [str(BIN / "airflow"), "backfill", "create", "--dag-id", dag_id]
        + ["--from-date", f"{days[0]}T00:00:00+08:00", "--to-date", f"{days[1]}T00:00:00+08:00"]
        + ["--max-active-runs", "1"],
        env=airflow.env,
        cwd=airflow.home,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stdout[-2000:] + created.stderr[-3000:]

    def backfilled() -> list[dict]:
        runs = [r for r in airflow.runs(dag_id) if r["run_type"] == "backfill"]
        return runs if len(runs) == 2 and all(r["state"] in {"success", "failed"} for r in runs) else []

    runs = airflow.wait("the two backfill runs", backfilled)
    assert [r["state"] for r in runs] == ["success", "success"], runs
    logical = sorted(datetime.fromisoformat(r["logical_date"]).astimezone(TZ).date() for r in runs)
    assert logical == days
    events = airflow.api("GET", "/assets/events", params={"source_dag_id": dag_id, "limit": 100})
    as_of = {
        e["source_run_id"]: e["extra"]["as_of"]
        for e in events["asset_events"]
        if e["source_run_id"] in {r["dag_run_id"] for r in runs}
    }
    assert sorted(as_of.values()) == [d.isoformat() for d in days], as_of
    for run in runs:  # each run's own day, not the day it ran
        day = datetime.fromisoformat(run["logical_date"]).astimezone(TZ).date().isoformat()
        assert as_of[run["dag_run_id"]] == day
    print(
        f"\nscheduler part 4: backfill of {dag_id} over {days[0]}..{days[1]} in {time.monotonic() - started:.0f} s"
    )


def test_no_secret_in_any_task_log(airflow: Airflow) -> None:
    logs = [p for p in (airflow.home / "logs").rglob("*") if p.is_file()]
    assert any("task_id=pull" in str(p) for p in logs), "no task log found"
    token = json.loads(airflow.env["AIRFLOW_CONN_LIANBAN_POLICE"])["password"]
    leaked = [str(p) for p in logs if token in p.read_text(errors="backslashreplace")]
    assert leaked == [], f"the police token is in {leaked}"
    outputs = [p for p in airflow.home.glob("*.out")]
    assert not [str(p) for p in outputs if token in p.read_text(errors="backslashreplace")]
