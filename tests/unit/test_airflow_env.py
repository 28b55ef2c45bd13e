"""The private Airflow metadata set-up survives a kill at any point; settings reach the tasks."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETUP = (
    "from core.settings import load_settings\n"
    "from hub.airflow_env import configure, ensure_metadata_db\n"
    "ensure_metadata_db(configure(load_settings()))\n"
)


def _setup(var: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LIANBAN_VAR": str(var), "PYTHONPATH": str(ROOT)}
    env.pop("LIANBAN_AIRFLOW_HOME", None)
    return subprocess.Popen([sys.executable, "-c", SETUP], env=env, cwd=ROOT, start_new_session=True)


def _tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}


def _half_built(db: Path) -> bool:
    """The set-up has written some tables, not yet all: the moment to kill it."""
    if not db.exists():
        return False
    try:
        return bool(_tables(db)) and "connection" not in _tables(db)
    except sqlite3.Error:  # locked by the writer: look again
        return False


def test_kill_during_setup_then_rerun_gives_a_whole_database(tmp_path: Path) -> None:
    var = tmp_path / "var"
    home = var / "airflow"
    proc = _setup(var)
    deadline = time.monotonic() + 60
    while not _half_built(home / "airflow.db") and time.monotonic() < deadline:  # wait until set-up began
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (home / "airflow.db").exists(), "the set-up never started writing the database"
    assert not (home / ".lianban-metadata-ready").exists(), "killed before the end, yet marked ready"
    assert _setup(var).wait(timeout=180) == 0
    assert (home / ".lianban-metadata-ready").exists()
    assert {"dag_run", "task_instance", "alembic_version", "connection"} <= _tables(home / "airflow.db")


@pytest.fixture(autouse=True)
def _restore_environment() -> object:
    """configure() writes os.environ on purpose; give the other tests theirs back."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_configure_exports_the_config_file_for_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import load_settings
    from hub.airflow_env import configure

    config = tmp_path / "other.yaml"
    config.write_text((ROOT / "config" / "sandbox.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    for key in ("LIANBAN_CONFIG", "LIANBAN_VAR", "LIANBAN_AIRFLOW_HOME"):
        monkeypatch.delenv(key, raising=False)
    home = configure(load_settings(config, tmp_path / "var"))
    assert os.environ["LIANBAN_CONFIG"] == str(config.resolve())
    assert home == (tmp_path / "var" / "airflow").resolve()
    assert load_settings().config_file == config.resolve()  # what a task sees


def test_team_airflow_home_keeps_its_own_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import load_settings
    from hub.airflow_env import configure, ensure_metadata_db

    team = tmp_path / "team"
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql://team@db/airflow")
    home = configure(load_settings(None, tmp_path / "var"), airflow_home=team)
    assert home == team.resolve() and os.environ["AIRFLOW_HOME"] == str(team.resolve())
    assert os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "postgresql://team@db/airflow"
    ensure_metadata_db(home)  # must not touch a team database
    assert list(team.iterdir()) == []
