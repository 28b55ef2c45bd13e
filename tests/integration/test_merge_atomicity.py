"""A merge killed mid-write (SIGKILL) leaves the previous master intact; running it again equals a clean run.

The merge runs in a child process whose store backend the test wraps (no hook in the store): it stops
inside the open transaction after writing its first chunk into the named table (BulkSession.write_chunk)
or just before the commit (the last BulkSession.drop_temps of the merge), touches a marker file and
sleeps; the test then kills it with SIGKILL, which no cleanup code can intercept.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from master_frames import (
    DAY1,
    DAY2,
    assert_same_state,
    first_merge,
    second_merge,
    state,
)

from store.master_store import MasterStore

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PERSONS = 3000
CHILD = """
import sys
import time
from pathlib import Path

from master_frames import DAY2, second_merge
from store.master_store import MasterStore
from store.backends import BulkSession

point, marker = sys.argv[3], Path(sys.argv[4])


def pause(where):
    if where == point:
        marker.write_text(point, encoding="utf-8")
        time.sleep(120)


write_chunk = BulkSession.write_chunk


def chunk_then_pause(self, table, write, part):
    write_chunk(self, table, write, part)
    pause(table.name)


def pausing(drop):
    def drop_then_pause(self):
        drop(self)
        pause("commit")

    return drop_then_pause


BulkSession.write_chunk = chunk_then_pause
for session in BulkSession.__subclasses__():  # the merge's last step before its commit
    session.drop_temps = pausing(session.drop_temps)
store = MasterStore(sys.argv[1], chunk_rows=500)
store.apply_merge(second_merge(int(sys.argv[2])), "run-2", DAY2, batches={"hrss": "hrss-b2"})
print("committed")
"""


def _merge_killed_at(url: str, point: str, marker: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(PERSONS), point, str(marker)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        if child.poll() is not None:
            out, err = child.communicate()
            pytest.fail(
                f"the merge ended (code {child.returncode}) before pausing at {point}:\n{out}\n{err[-3000:]}"
            )
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"the merge never reached {point}")
        time.sleep(0.05)
    assert _write_transaction_open(url), f"paused at {point} without an open write transaction"
    os.kill(child.pid, signal.SIGKILL)
    out, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL and "committed" not in out


def _write_transaction_open(url: str) -> bool:
    """Evidence the child is inside a writing transaction: PostgreSQL shows its xid; SQLite refuses a second writer."""
    engine = sa.create_engine(url, connect_args={"timeout": 0} if url.startswith("sqlite") else {})
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                return bool(
                    conn.exec_driver_sql(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()"  # it has written rows
                    ).scalar_one()
                )
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except sa.exc.OperationalError as exc:
                return "locked" in str(exc)
            conn.exec_driver_sql("ROLLBACK")
            return False
    finally:
        engine.dispose()


@pytest.mark.parametrize("point", ["person_version", "conflict", "commit"])
def test_a_merge_killed_mid_write_leaves_the_master_intact(
    new_store_url: Callable[[], str], point: str, tmp_path: Path
) -> None:
    url = new_store_url()
    store = MasterStore(url)
    store.apply_merge(first_merge(PERSONS), "run-1", DAY1, batches={"hrss": "hrss-b1"})
    before = state(url)
    store.dispose()

    _merge_killed_at(url, point, tmp_path / "paused")
    staged: list[Path] = []
    if url.startswith("sqlite"):  # killed while staging rows: their scratch file is left behind
        staged = sorted(Path(sa.make_url(url).database or "").parent.glob(".lb-stage-*"))
        assert bool(staged) == (point != "commit")

    store = MasterStore(url)
    assert not any(p.exists() for p in staged)  # opening the store swept the dead process's rows away
    assert_same_state(state(url), before)
    assert store.run_record("run-2") is None
    assert store.last_run_batches() == {"hrss": "hrss-b1"}

    # running it again gives exactly what a clean run gives
    counts = store.apply_merge(second_merge(PERSONS), "run-2", DAY2, batches={"hrss": "hrss-b2"})
    assert counts["changed"] > 0 and counts["removed"] > 0 and counts["new"] > 0
    clean_url = new_store_url()
    clean = MasterStore(clean_url)
    clean.apply_merge(first_merge(PERSONS), "run-1", DAY1, batches={"hrss": "hrss-b1"})
    clean.apply_merge(second_merge(PERSONS), "run-2", DAY2, batches={"hrss": "hrss-b2"})
    assert_same_state(state(url), state(clean_url))
    assert store.run_record("run-2")["written"] == clean.run_record("run-2")["written"]  # type: ignore[index]
    store.dispose()
    clean.dispose()
