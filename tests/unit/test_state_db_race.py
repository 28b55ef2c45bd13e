"""Tasks on several Celery workers open a new state database at once: none fails on a table another
process created between the check and the CREATE (seen in tests/e2e/test_celery.py: two pulls)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import sqlalchemy as sa


def _open(var: str) -> None:
    from core.settings import load_settings
    from core.storage import Storage

    Storage(load_settings(var_dir=var)).engine().dispose()


def test_many_processes_create_the_ledger_at_once(tmp_path: Path) -> None:
    for attempt in range(4):
        var = tmp_path / f"var{attempt}"
        with multiprocessing.get_context("fork").Pool(6) as pool:
            pool.map(_open, [str(var)] * 6)
        engine = sa.create_engine(f"sqlite:///{var / 'state' / 'ledger.sqlite'}")
        assert "batches" in sa.inspect(engine).get_table_names()
        engine.dispose()
