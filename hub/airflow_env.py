"""Airflow wiring for in-process runs: an SQLite metadata database under var/airflow, no scheduler."""

from __future__ import annotations

import os
from pathlib import Path

from hub.settings import ROOT, Settings

DAGS_FOLDER = ROOT / "dags"


def configure(settings: Settings, verbose: bool = False) -> Path:
    """Point Airflow at var/airflow before it is imported; returns AIRFLOW_HOME."""
    home = settings.var_dir / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home / 'airflow.db'}"
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "INFO" if verbose else "WARNING"
    os.environ["LIANBAN_VAR"] = str(settings.var_dir)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    return home


def ensure_metadata_db(home: Path) -> None:
    """Create Airflow's metadata tables once (about two seconds on SQLite)."""
    from airflow.utils import db

    if not (home / "airflow.db").exists():
        db.initdb()
