"""The cycle under the CeleryExecutor with two workers, against the single-process run of the same day.

Airflow 3 as processes (api-server, dag-processor, scheduler and two `airflow celery worker`s with
distinct names), Redis on this machine as the broker (its own database number and queue), PostgreSQL
for Airflow's metadata and for the master store (throwaway databases), `partitions: prefecture`. The
scheduler runs the ingestion DAGs, their Assets trigger the cycle, whose per-prefecture tasks the two
workers share. Then `hub run` for the same business date on the same sandbox in one process
(`partitions: none`, its own store) must give the same store, decisions and partner files. Airflow's
own overhead in the cycle run (bench/overhead.py) is printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
import requests
import sqlalchemy as sa
import yaml
from test_scheduler import BIN, INGEST, Airflow, _free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
HUB = [sys.executable, "-m", "hub.cli"]
REDIS = ("127.0.0.1", 6379)
KEYS = {"LIANBAN_PSEUDONYM_KEY_CDPF_STATS": "celery-test-key-" + "0" * 32}


def _redis_up() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _config(base: Path, name: str, partitions: str, master_url: str) -> Path:
    data = yaml.safe_load((ROOT / "config" / "sandbox.yaml").read_text(encoding="utf-8"))
    data.update({"partitions": partitions, "master_url": master_url})
    path = base / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def _pg() -> Iterator[str]:
    from throwaway_db import PG_HOST, throwaway

    return throwaway(
        f"postgresql+psycopg://{PG_HOST}/postgres",
        f"postgresql+psycopg://{PG_HOST}/{{name}}",
        "CREATE DATABASE {name}",
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)",
    )


def _sandbox(var: Path, today: str, env: dict[str, str]) -> None:
    init = [*HUB, "sandbox", "init", "--persons", "2000", "--seed", "13", "--as-of", today]
    subprocess.run(init, env={**env, "LIANBAN_VAR": str(var)}, cwd=ROOT, check=True, capture_output=True)


@pytest.fixture(scope="module")
def celery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from sandbox.simulator import running_police_simulator

    if not _redis_up():
        pytest.fail(f"no Redis at {REDIS[0]}:{REDIS[1]} (the Celery broker this test needs)")
    base = tmp_path_factory.mktemp("celery")
    home, var = base / "airflow", base / "var"
    home.mkdir()
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat()
    hub_env = {**os.environ, **KEYS, "PYTHONPATH": str(ROOT)}
    for key in ("LIANBAN_CONFIG", "LIANBAN_POLICE_URL", "LIANBAN_POLICE_TOKEN", "LIANBAN_VAR"):
        hub_env.pop(key, None)
    _sandbox(var, today, hub_env)
    metadata, store = _pg(), _pg()
    metadata_url, store_url = next(metadata), next(store)
    port, queue = _free_port(), f"lianban-{secrets.token_hex(4)}"
    config = _config(base, "celery", "prefecture", store_url)
    with running_police_simulator(var / "sandbox") as (police_url, token):
        env = {
            **hub_env,
            "LIANBAN_VAR": str(var),
            "LIANBAN_CONFIG": str(config),
            "PYTHONPATH": f"{ROOT}{os.pathsep}{Path(__file__).parent}",  # worker_name for the workers
            "AIRFLOW_CONN_LIANBAN_POLICE": json.dumps(
                {"conn_type": "http", "host": police_url, "password": token}
            ),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": metadata_url,
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "worker_name.hostname",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__FERNET_KEY": "",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            # Redis on this machine: a database number and a queue of our own (other tests may share it)
            "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS[0]}:{REDIS[1]}/{int(queue[-2:], 16) % 15 + 1}",
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata_url,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            # one api-server for two workers on a loaded 2-core machine: 5 s (the default) is too short
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        }
        deployment = Airflow(home, env, port)
        try:
            migrate = subprocess.run(
                [str(BIN / "airflow"), "db", "migrate"], env=env, cwd=home, capture_output=True, text=True
            )
            assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-3000:]
            deployment.start("api-server")
            # the workers call the api-server's Execution API at once: up first (a pull has no retry)
            deployment.wait(
                "the api-server",
                lambda: requests.get(f"{deployment.base}/api/v2/monitor/health", timeout=10).ok,
            )
            deployment.start("dag-processor")
            deployment.start("scheduler")
            for name in ("w1", "w2"):  # each its own log server port and name
                deployment.env = {
                    **env,
                    "LIANBAN_WORKER_NAME": name,
                    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
                }
                deployment.start("celery", "worker", "--celery-hostname", f"{name}@%h", "--queues", queue)
                (home / "celery.out").rename(home / f"celery-{name}.out")
            deployment.env = env
            deployment.token = requests.get(f"{deployment.base}/auth/token", timeout=60).json()[
                "access_token"
            ]
            auth = {"Authorization": f"Bearer {deployment.token}"}
            deployment.wait(
                "the DAGs to be parsed",
                lambda: all(
                    requests.get(f"{deployment.base}/api/v2/dags/{d}", headers=auth, timeout=10).ok
                    for d in (*INGEST, "cycle")
                ),
            )
            yield {"airflow": deployment, "metadata_url": metadata_url, "store_url": store_url, "base": base}
        finally:
            deployment.stop()
            next(metadata, None)
            next(store, None)


def _store_digest(url: str) -> dict[str, str]:
    """SHA-256 per store table over its rows in a canonical order, without the wall-clock columns."""
    engine = sa.create_engine(url)
    digests = {}
    with engine.connect() as conn:
        for table in ("person_version", "conflict", "id_change", "decision_version", "run"):
            frame = pd.read_sql_table(table, conn)
            frame = frame[[c for c in frame.columns if not c.endswith("_at")]]
            frame = frame.astype("string").sort_values(list(frame.columns)).reset_index(drop=True)
            digests[table] = hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()
    engine.dispose()
    return digests


def _partner_files(var: Path, run_id: str) -> dict[str, str]:
    found = {}
    for manifest in sorted((var / "outbox").glob("*/*/*.manifest.json")):
        if json.loads(manifest.read_text(encoding="utf-8")).get("run_id") != run_id:
            continue
        data = manifest.with_name(manifest.name.removesuffix(".manifest.json"))
        found[str(data.relative_to(var))] = hashlib.sha256(data.read_bytes()).hexdigest()
    return found


def test_two_celery_workers_share_partitions_and_match_single_run(celery: dict[str, Any]) -> None:
    from bench.overhead import overhead, task_instances

    airflow: Airflow = celery["airflow"]
    for dag_id in INGEST:
        run = airflow.wait(
            f"a successful {dag_id} run",
            lambda d=dag_id: [r for r in airflow.runs(d) if r["state"] in {"success", "failed"}],
            seconds=600,
        )[0]
        assert run["state"] == "success", f"{dag_id}: {run}"
    cycle = airflow.wait(
        "the Asset-triggered cycle to finish",
        lambda: [r for r in airflow.runs("cycle") if r["state"] in {"success", "failed"}],
        seconds=900,
    )[0]
    assert cycle["state"] == "success", cycle
    instances = task_instances(celery["metadata_url"], "cycle", cycle["dag_run_id"])
    parts = instances[instances["task_id"].isin(["merge_part", "eligibility_part"])]
    assert len(parts) >= 20, parts  # ~12 partitions, each merged and evaluated
    assert set(parts["hostname"]) == {"w1", "w2"}, parts["hostname"].value_counts()
    assert (instances["state"] == "success").all(), instances[["task_id", "map_index", "state"]]

    tasks = airflow.api("GET", "/dags/cycle/tasks")["tasks"]
    upstream: dict[str, list[str]] = {}
    for task in tasks:
        for down in task["downstream_task_ids"]:
            upstream.setdefault(down, []).append(task["task_id"])
    measured = overhead(instances, upstream)
    print(f"\ncelery cycle: {json.dumps(measured)}")
    print(f"per worker: {parts['hostname'].value_counts().to_dict()}")

    # the same day in one process, partitions none, on a copy of the same sandbox and its own store
    var = Path(airflow.env["LIANBAN_VAR"])
    events = airflow.api("GET", f"/dags/cycle/dagRuns/{cycle['dag_run_id']}/upstreamAssetEvents")[
        "asset_events"
    ]
    as_of = max(e["extra"]["as_of"] for e in events)
    single_var = celery["base"] / "single"
    single_store = _pg()
    single_url = next(single_store)
    try:
        config = _config(celery["base"], "single", "none", single_url)
        env = {k: v for k, v in airflow.env.items() if not k.startswith("AIRFLOW")}
        env.update({"LIANBAN_VAR": str(single_var), "LIANBAN_CONFIG": str(config), "PYTHONPATH": str(ROOT)})
        sandbox_day = json.loads((var / "sandbox" / "sandbox.json").read_text(encoding="utf-8"))["as_of"]
        _sandbox(single_var, sandbox_day, env)
        done = subprocess.run(
            [*HUB, "run", "--date", as_of], env=env, cwd=ROOT, capture_output=True, text=True, timeout=1200
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        run_id = f"cycle-{as_of}"
        assert _store_digest(celery["store_url"]) == _store_digest(single_url)
        for name in ("eligibility.json",):
            a = json.loads((var / "runs" / run_id / name).read_text())["decisions_sha256"]
            b = json.loads((single_var / "runs" / run_id / name).read_text())["decisions_sha256"]
            assert a == b
        files = _partner_files(single_var, run_id)
        assert len(files) >= 5
        assert _partner_files(var, run_id) == files
    finally:
        next(single_store, None)
