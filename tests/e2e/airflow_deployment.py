"""A throwaway Airflow 3 deployment for the e2e tests (test_scheduler, test_celery): its environment, its
start-up (api-server first, then dag-processor and scheduler) and its REST API; plus the metadata database
made from one migrated template per test session (tests/e2e/conftest.py).

Every process is started in its own process group and killed as a group, whatever happened.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
INGEST = ("ingest_cdpf", "ingest_civil", "ingest_hrss", "ingest_police")
DEADLINE_S = 600  # per wait: at load 20 on 2 cores one ingestion run took more than 240 s
POLL_S = 0.5  # between two looks at what is awaited: a finished run is seen at most this late


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def airflow_env(
    hub_env: dict[str, str], home: Path, metadata_url: str, port: int, police: tuple[str, str]
) -> dict[str, str]:
    """The settings both deployments share: `hub_env` (the hub's LIANBAN_* and PYTHONPATH), metadata in
    PostgreSQL, the api-server on `port`, the police endpoint and token as an Airflow connection (config:
    conn_id lianban_police). The caller adds its executor."""
    police_url, token = police
    return {
        **hub_env,
        "AIRFLOW_CONN_LIANBAN_POLICE": json.dumps(
            {"conn_type": "http", "host": police_url, "password": token}
        ),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": metadata_url,  # psycopg 3 is async too
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__FERNET_KEY": "",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
        # a loaded CI machine can hold the api-server past the 5 s default; a task that cannot report its
        # start then fails before running (seen at load average 11 on 2 cores)
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }


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

    def serve(self) -> None:
        """The api-server, then the dag-processor and the scheduler. Tasks report to the api-server, so
        none may start before it listens (under load it takes a minute, longer than a task's connection
        retries); the dag-processor needs only the database and parses meanwhile."""
        self.start("api-server")
        self.start("dag-processor")
        self.wait(
            "the api-server",
            lambda: requests.get(f"{self.base}/api/v2/monitor/health", timeout=10).ok,
        )
        self.start("scheduler")

    def log_in_and_wait_for_dags(self) -> None:
        self.token = requests.get(f"{self.base}/auth/token", timeout=60).json()["access_token"]
        self.wait(
            "the dag-processor to parse the DAGs",
            lambda: (
                {"cycle", *INGEST}
                <= {d["dag_id"] for d in self.api("GET", "/dags", params={"limit": 100})["dags"]}
            ),
        )

    def stop(self) -> None:
        """Kill every process group at once: nothing is checked after the tests, a graceful shutdown
        would only be waited for."""
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.procs:
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

    def wait(self, what: str, probe: Callable[[], Any], seconds: float = DEADLINE_S) -> Any:
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
            time.sleep(POLL_S)
        raise AssertionError(
            f"timed out waiting for {what}\n" + "\n".join(self.tail(p.args[1]) for p in self.procs)
        )

    def tail(self, name: object) -> str:
        path = self.home / f"{name}.out"
        return f"--- {name}\n" + path.read_text(errors="backslashreplace")[-3000:] if path.exists() else ""

    def runs(self, dag_id: str) -> list[dict]:
        return list(self.api("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "run_after"})["dag_runs"])

    def finished(self, dag_id: str, seconds: float = DEADLINE_S) -> dict:
        """The first run of `dag_id` that succeeded or failed, waited for."""
        return self.wait(  # type: ignore[no-any-return]
            f"a finished {dag_id} run",
            lambda: [r for r in self.runs(dag_id) if r["state"] in {"success", "failed"}],
            seconds=seconds,
        )[0]
