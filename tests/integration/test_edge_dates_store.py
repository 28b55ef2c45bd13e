"""The master store keeps dates over year 1 to 9999 on both backends (no nanosecond cast on the way)."""

from __future__ import annotations

import pandas as pd
from master_frames import DAY1, Result, build_master, rehash

from store.master_store import MasterStore


def test_open_ended_and_ancient_dates_round_trip(store_url: str) -> None:
    master = build_master(3)
    master["cert_valid_until"] = pd.Series(["9999-12-31", "0001-01-01", "2030-01-01"], dtype="datetime64[us]")
    master["death_date"] = pd.Series([None, "1816-03-29", None], dtype="datetime64[us]")
    master = rehash(master)
    store = MasterStore(store_url)
    store.apply_merge(Result(master), "run-dates", DAY1)
    back = store.read_master().set_index("id_number").loc[master["id_number"]]
    assert back["cert_valid_until"].tolist() == [
        pd.Timestamp("9999-12-31"),
        pd.Timestamp("0001-01-01"),
        pd.Timestamp("2030-01-01"),
    ]
    assert back["death_date"].iloc[1] == pd.Timestamp("1816-03-29")
    written = sum(store.stats[k] for k in ("copy_rows", "ingest_rows"))
    store.apply_merge(Result(master), "run-dates-2", DAY1)
    # the same dates again write no person row: they compare equal after the round trip
    assert sum(store.stats[k] for k in ("copy_rows", "ingest_rows")) == written
