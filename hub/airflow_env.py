"""Airflow wiring for `hub run`: a private SQLite metadata database under var/airflow, or the team's.

By default `hub run` keeps its runs to itself (var/airflow/airflow.db). With `LIANBAN_AIRFLOW_HOME`
(or `hub run --airflow-home DIR`) it uses that Airflow home and whatever metadata database its
airflow.cfg or AIRFLOW__* variables name, so the runs appear in the team's UI; that database must
already be migrated (`airflow db migrate`), `hub run` never builds or changes it.

An existing Airflow deployment only needs one setting: its dags folder pointed at `DAGS_FOLDER`
(`AIRFLOW__CORE__DAGS_FOLDER=/path/to/lianban/dags`), plus LIANBAN_CONFIG and LIANBAN_VAR in the
environment of its workers.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.settings import ROOT, Settings

DAGS_FOLDER = ROOT / "dags"
_READY = ".lianban-metadata-ready"


def configure(settings: Settings, verbose: bool = False, airflow_home: Path | None = None) -> Path:
    """Point Airflow at its home before it is imported; returns AIRFLOW_HOME.

    Also exports the config file and var directory, so every task (in this process or a worker)
    loads the same settings the command was given.
    """
    team = airflow_home or (Path(v) if (v := os.environ.get("LIANBAN_AIRFLOW_HOME")) else None)
    home = team.resolve() if team else settings.var_dir / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
    if team is None:
        os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home / 'airflow.db'}"
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "INFO" if verbose else "WARNING"
    os.environ["LIANBAN_VAR"] = str(settings.var_dir)
    if settings.config_file is not None:
        os.environ["LIANBAN_CONFIG"] = str(settings.config_file)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    return home


def ensure_metadata_db(home: Path) -> None:
    """Create the private metadata database once, surviving a kill at any point of the set-up.

    A marker written after the tables exist says the database is whole; a database without it is
    the remains of an interrupted set-up and is rebuilt from scratch. A team home is left alone.
    """
    if os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") != f"sqlite:///{home / 'airflow.db'}":
        return
    marker = home / _READY
    if marker.exists():
        return
    for leftover in home.glob("airflow.db*"):
        leftover.unlink()
    from airflow.utils import db

    db.initdb()
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text("airflow metadata tables created\n", encoding="utf-8")
    os.replace(tmp, marker)
