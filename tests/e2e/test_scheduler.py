"""The DAGs under a real Airflow 3: scheduler, dag-processor and api-server as processes, LocalExecutor,
PostgreSQL metadata in a throwaway database, a 300-person sandbox and the police simulator.

Part 1 lets the scheduler run the four ingestion DAGs and checks that their Assets triggered the cycle
DAG, which succeeded and left partner files. Part 2 triggers the cycle through the REST API with no
logical date. Then no task log may contain a secret. Every process is started in its own process
group and killed as a group, whatever happened.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
INGEST = ("ingest_cdpf", "ingest_civil", "ingest_hrss", "ingest_police")
DEADLINE_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Airflow:
    """A throwaway Airflow deployment driven through its REST API."""

    def __init__(self, home: Path, env: dict[str, str], port: int) -> None:
        self.home, self.env, self.base = home, env, f"http://127.0.0.1:{port}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.token = ""

    def start(self, *command: str) -> None:
        log = (self.home / f"{command[0]}.out").open("wb")
        self.procs.append(
            subprocess.Popen(
                [str(BIN / "airflow"), *command],
                env=self.env,
                cwd=self.home,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed with every child it forks
            )
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def api(self, method: str, path: str, **kwargs: object) -> dict:
        reply = requests.request(
            method,
            f"{self.base}/api/v2{path}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
            **kwargs,  # type: ignore[arg-type]
        )
        assert reply.ok, f"{method} {path}: {reply.status_code} {reply.text[:500]}"
        return reply.json()  # type: ignore[no-any-return]

    def wait(self, what: str, probe, seconds: float = DEADLINE_S):  # type: ignore[no-untyped-def]
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for proc in self.procs:
                assert proc.poll() is None, f"{proc.args[1]} exited: {self.tail(proc.args[1])}"
            try:
                found = probe()
            except requests.RequestException:  # not up yet, or slow under load
                found = None
            if found:
                return found
            time.sleep(2)
        raise AssertionError(
            f"timed out waiting for {what}\n" + "\n".join(self.tail(p.args[1]) for p in self.procs)
        )

    def tail(self, name: object) -> str:
        path = self.home / f"{name}.out"
        return f"--- {name}\n" + path.read_text(errors="backslashreplace")[-3000:] if path.exists() else ""

    def runs(self, dag_id: str) -> list[dict]:
        return list(self.api("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "run_after"})["dag_runs"])


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    from throwaway_db import PG_HOST, throwaway

    from sandbox.simulator import running_police_simulator

    base = tmp_path_factory.mktemp("scheduler")
    home, var = base / "airflow", base / "var"
    home.mkdir()
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat()
    hub_env = {**os.environ, "LIANBAN_VAR": str(var), "PYTHONPATH": str(ROOT)}
    for key in ("LIANBAN_CONFIG", "LIANBAN_POLICE_URL", "LIANBAN_POLICE_TOKEN"):
        hub_env.pop(key, None)
    subprocess.run(
        [
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
        ],
        env=hub_env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    port = _free_port()
    db = throwaway(
        f"postgresql+psycopg://{PG_HOST}/postgres",
        f"postgresql+psycopg://{PG_HOST}/{{name}}",
        "CREATE DATABASE {name}",
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)",
    )
    metadata_url = next(db)
    with running_police_simulator(var / "sandbox") as (police_url, token):
        env = {
            **hub_env,
            "LIANBAN_CONFIG": str(ROOT / "config" / "sandbox.yaml"),
            # the police endpoint and token as an Airflow connection (config: conn_id lianban_police)
            "AIRFLOW_CONN_LIANBAN_POLICE": json.dumps(
                {"conn_type": "http", "host": police_url, "password": token}
            ),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": metadata_url,  # psycopg 3 is async too
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__FERNET_KEY": "",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        }
        deployment = Airflow(home, env, port)
        try:
            migrate = subprocess.run(
                [str(BIN / "airflow"), "db", "migrate"], env=env, cwd=home, capture_output=True, text=True
            )
            assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-3000:]
            deployment.start("api-server")
            deployment.start("dag-processor")
            deployment.start("scheduler")
            deployment.wait(
                "the api-server",
                lambda: requests.get(f"{deployment.base}/api/v2/monitor/health", timeout=10).ok,
            )
            deployment.token = requests.get(f"{deployment.base}/auth/token", timeout=60).json()[
                "access_token"
            ]
            yield deployment
        finally:
            deployment.stop()
            next(db, None)  # drop the throwaway metadata database


def test_assets_trigger_the_cycle_which_succeeds(airflow: Airflow) -> None:
    started = time.monotonic()
    for dag_id in INGEST:  # scheduled by the scheduler itself (unpaused at creation, @daily)
        run = airflow.wait(
            f"a successful {dag_id} run",
            lambda d=dag_id: [r for r in airflow.runs(d) if r["state"] in {"success", "failed"}],
        )[0]
        assert run["state"] == "success", f"{dag_id}: {run}"
        assert run["run_type"] == "scheduled"
    cycle = airflow.wait(
        "the Asset-triggered cycle to finish",
        lambda: [r for r in airflow.runs("cycle") if r["state"] in {"success", "failed"}],
    )[0]
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


def test_no_secret_in_any_task_log(airflow: Airflow) -> None:
    logs = [p for p in (airflow.home / "logs").rglob("*") if p.is_file()]
    assert any("task_id=pull" in str(p) for p in logs), "no task log found"
    token = json.loads(airflow.env["AIRFLOW_CONN_LIANBAN_POLICE"])["password"]
    leaked = [str(p) for p in logs if token in p.read_text(errors="backslashreplace")]
    assert leaked == [], f"the police token is in {leaked}"
    outputs = [p for p in airflow.home.glob("*.out")]
    assert not [str(p) for p in outputs if token in p.read_text(errors="backslashreplace")]
