"""The ledgers and an SQLite master file hold personal data: created owner-only whatever the umask."""

from __future__ import annotations

import os
import stat

import sqlalchemy as sa

from core.storage import Storage
from stages.deliver import engine as delivery_ledger
from store.master_store import MasterStore


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_ledger_and_master_file_are_owner_only(settings, tmp_path) -> None:
    old = os.umask(0o002)
    try:
        Storage(settings).record_batch("cdpf-1", "cdpf", "w", 1)
        delivery_ledger(Storage(settings)).dispose()
        master = tmp_path / "m" / "master.sqlite"
        store = MasterStore(f"sqlite:///{master}")
        with store.engine.begin() as conn:
            conn.execute(sa.text("SELECT 1"))
    finally:
        os.umask(old)
    ledger = settings.var_dir / "state" / "ledger.sqlite"
    assert _mode(ledger) == 0o600 and _mode(ledger.parent) == 0o700
    assert _mode(ledger.with_name("deliveries.sqlite")) == 0o600
    assert _mode(master) == 0o600 and _mode(master.parent) == 0o700
    wal = master.with_name("master.sqlite-wal")
    if wal.exists():  # SQLite gives its journal the database file's mode
        assert _mode(wal) == 0o600
