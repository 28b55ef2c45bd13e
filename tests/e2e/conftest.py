"""E2e fixtures: Airflow's metadata schema migrated once per session, copied for each deployment."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from airflow_deployment import BIN
from throwaway_db import throwaway_pg


@pytest.fixture(scope="session")
def airflow_metadata(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Iterator[str]]]:
    """`airflow db migrate` into a template database once; each call of the returned function is a
    throwaway metadata database copied from it (test_scheduler and test_celery each start a deployment:
    the schema is the same, the migration takes a large part of a deployment's start)."""
    home = tmp_path_factory.mktemp("airflow-template")
    template = throwaway_pg()
    url = next(template)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": url,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        }
    )
    try:
        migrate = subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"], env=env, cwd=home, capture_output=True, text=True
        )
        assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-3000:]
        yield lambda: throwaway_pg(template=sa.make_url(url).database)
    finally:
        next(template, None)
