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

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from airflow_deployment import INGEST, ROOT, Airflow, airflow_env, free_port
from run_digests import decisions_digest, partner_files, store_digest
from throwaway_db import throwaway_pg

pytestmark = pytest.mark.e2e

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


def _sandbox(var: Path, today: str, env: dict[str, str]) -> None:
    init = [*HUB, "sandbox", "init", "--persons", "2000", "--seed", "13", "--as-of", today]
    subprocess.run(init, env={**env, "LIANBAN_VAR": str(var)}, cwd=ROOT, check=True, capture_output=True)


@pytest.fixture(scope="module")
def celery(
    tmp_path_factory: pytest.TempPathFactory, airflow_metadata: Callable[[], Iterator[str]]
) -> Iterator[dict[str, Any]]:
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
    # the single run's copy of the same sandbox, taken before any run reads it
    shutil.copytree(var / "sandbox", base / "single" / "sandbox", symlinks=True)
    metadata, store = airflow_metadata(), throwaway_pg()
    metadata_url, store_url = next(metadata), next(store)
    port, queue = free_port(), f"lianban-{secrets.token_hex(4)}"
    config = _config(base, "celery", "prefecture", store_url)
    with running_police_simulator(var / "sandbox") as police:
        hub_env["LIANBAN_VAR"], hub_env["LIANBAN_CONFIG"] = str(var), str(config)
        hub_env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{Path(__file__).parent}"  # worker_name for the workers
        env = airflow_env(hub_env, home, metadata_url, port, police)
        env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "worker_name.hostname",
                # Redis on this machine: a database number and a queue of our own (other tests may share it)
                "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS[0]}:{REDIS[1]}/{int(queue[-2:], 16) % 15 + 1}",
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata_url,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
            }
        )
        deployment = Airflow(home, env, port)
        try:
            deployment.serve()  # the workers call the api-server's Execution API at once: it is up
            for name in ("w1", "w2"):  # each its own log server port and name
                deployment.env = {
                    **env,
                    "LIANBAN_WORKER_NAME": name,
                    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                }
                deployment.start("celery", "worker", "--celery-hostname", f"{name}@%h", "--queues", queue)
                (home / "celery.out").rename(home / f"celery-{name}.out")
            deployment.env = env
            deployment.log_in_and_wait_for_dags()
            yield {"airflow": deployment, "metadata_url": metadata_url, "store_url": store_url, "base": base}
        finally:
            deployment.stop()
            next(metadata, None)
            next(store, None)


def test_two_celery_workers_share_partitions_and_match_single_run(celery: dict[str, Any]) -> None:
    from bench.overhead import overhead, task_instances

    airflow: Airflow = celery["airflow"]
    for dag_id in INGEST:
        run = airflow.finished(dag_id)
        assert run["state"] == "success", f"{dag_id}: {run}"
    cycle = airflow.finished("cycle", seconds=900)
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
    single_store = throwaway_pg()
    single_url = next(single_store)
    try:
        config = _config(celery["base"], "single", "none", single_url)
        env = {k: v for k, v in airflow.env.items() if not k.startswith("AIRFLOW")}
        env.update({"LIANBAN_VAR": str(single_var), "LIANBAN_CONFIG": str(config), "PYTHONPATH": str(ROOT)})
        done = subprocess.run(
            [*HUB, "run", "--date", as_of], env=env, cwd=ROOT, capture_output=True, text=True, timeout=1200
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        run_id = f"cycle-{as_of}"
        assert store_digest(celery["store_url"]) == store_digest(single_url)
        assert decisions_digest(var, run_id) == decisions_digest(single_var, run_id)
        files = partner_files(single_var, run_id)
        assert len(files) >= 5
        assert partner_files(var, run_id) == files
    finally:
        next(single_store, None)
