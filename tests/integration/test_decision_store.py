"""Decisions stored as changes, on both backends: versions, the decisions in force on a day, retries,
rows written on a 1%-change day, and migration 0003 up and down keeping every row."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from alembic import command
from master_frames import DAY1, DAY2, DAY3, first_merge, ids

from store import migrations
from store.master_store import MasterStore
from transforms.decisions import canonical, decisions_sha256

SERVICES = ("living", "nursing", "pension")  # any number of services: the store never names one
WRITES = ("copy_rows", "ingest_rows")
VALUE = ["id_number", "service", "eligible", "amount", "reasons"]


def evaluated(persons: pd.Series, day: date, flip: np.ndarray | None = None) -> pd.DataFrame:
    """Decisions for every person x service, as transforms.eligibility gives them; `flip`: positions
    of persons whose first service's decision turns around."""
    k = pd.to_numeric(persons.str.slice(14, 17)).to_numpy()  # per person, whoever else is evaluated
    parts = []
    for j, service in enumerate(SERVICES):
        eligible = (k + j) % 3 == 0
        if flip is not None and j == 0:
            eligible[flip] = ~eligible[flip]
        parts.append(
            pd.DataFrame(
                {
                    "id_number": persons.to_numpy(),
                    "service": service,
                    "period": f"{day:%Y-%m}",
                    "eligible": eligible,
                    "amount": np.where(eligible, 100.0 + j * 50, 0.0),
                    "reasons": np.where(eligible, "", "NOT_LOW_INCOME"),
                    "policy": "p",
                    "policy_version": "2026.1",
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    return canonical(
        frame.astype(
            {c: "string" for c in ("id_number", "service", "period", "reasons", "policy", "policy_version")}
        )
    )


def apply(
    store: MasterStore, frame: pd.DataFrame, run_id: str, day: date, snapshot: Path | None = None
) -> dict[str, int]:
    _, counts = store.apply_decisions(
        frame, run_id, day, "policyhash", decisions_sha256(frame), None, snapshot
    )
    return counts


def written(store: MasterStore) -> int:
    return sum(store.stats[k] for k in WRITES)


def same_decisions(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(
        got[VALUE].reset_index(drop=True), expected[VALUE].reset_index(drop=True), check_dtype=False
    )


def test_a_one_percent_day_writes_one_percent_and_in_force_is_a_query(store_url: str) -> None:
    store = MasterStore(store_url)
    persons = first_merge(1_000).master["id_number"]
    day1 = evaluated(persons, DAY1)
    before = written(store)
    assert apply(store, day1, "run-1", DAY1) == {"opened": 3_000, "closed": 0, "unchanged": 0, "undone": 0}
    full = written(store) - before
    assert full == 3_000

    flipped = np.arange(0, 1_000, 100)  # 1% of persons change their decision for one service
    day2 = evaluated(persons, DAY2, flip=flipped)
    before = written(store)
    counts = apply(store, day2, "run-2", DAY2)
    assert counts == {"opened": 10, "closed": 10, "unchanged": 2_990, "undone": 0}
    # rows sent to the database: the 10 new versions and the 10 keys of the versions closed
    assert written(store) - before == 20
    assert (written(store) - before) / full < 0.01

    same_decisions(store.decisions_in_force(DAY1), day1)
    same_decisions(store.decisions_in_force(DAY2 - pd.Timedelta(days=1)), day1)
    same_decisions(store.decisions_in_force(DAY3), day2)
    assert store.decisions_in_force(date(2020, 1, 1)).empty
    versions = store.read_decision_versions()
    changed = versions[versions["id_number"] == persons.iloc[0]].set_index(["service", "version"])
    assert changed.loc[("living", 1), "valid_to"] == pd.Timestamp(DAY2)
    assert changed.loc[("living", 1), "closed_run"] == "run-2"
    assert changed.loc[("living", 2), "run_id"] == "run-2" and pd.isna(changed.loc[("living", 2), "valid_to"])
    assert changed.loc[("living", 2), "policy_hash"] == "policyhash"
    # every run's decisions read back as they were evaluated
    pd.testing.assert_frame_equal(store.read_decisions("run-1"), day1, check_dtype=False)
    pd.testing.assert_frame_equal(store.read_decisions("run-2"), day2, check_dtype=False)
    assert store.run_record("run-2")["decisions_sha256"] == decisions_sha256(day2)  # type: ignore[index]
    assert store.counts()["decisions"] == 3_000
    store.dispose()


def test_a_retried_run_writes_what_a_clean_run_writes(store_url: str, tmp_path: Path) -> None:
    store = MasterStore(store_url)
    snapshot = tmp_path / "open.parquet"
    persons = first_merge(200).master["id_number"]
    apply(store, evaluated(persons, DAY1), "run-1", DAY1, snapshot)
    day2 = evaluated(persons, DAY2, flip=np.arange(0, 200, 10))
    first = apply(store, day2, "run-2", DAY2, snapshot)
    assert store.stats["open_decisions_from_snapshot"] == 1  # run-1's decisions, not a read of the table
    # the task retried after its first attempt committed: the file now mirrors run-2, not the state
    # before it, so the retry reads the table
    changes, again = store.apply_decisions(day2, "run-2", DAY2, "policyhash", "sha", None, snapshot)
    assert store.stats["open_decisions_from_snapshot"] == 1
    assert changes.open_before.to_dict() == {s: 200 for s in SERVICES}  # the state before run-2
    assert again == {**first, "undone": first["opened"]}
    stale = evaluated(persons, DAY1)  # a file that does not mirror the store's last run is ignored
    store.apply_decisions(stale, "run-x", DAY3, "h", "s", None, tmp_path / "other.parquet")
    pd.read_parquet(snapshot)  # still run-2's
    # run-2's file and the versions run-x opened and closed after it, not every open version
    assert apply(store, day2, "run-3", DAY3, snapshot)["opened"] == 20
    assert store.stats["open_decisions_from_snapshot"] == 1
    assert store.stats["open_decisions_from_snapshot_and_runs"] == 1
    versions = store.read_decision_versions()
    assert len(versions) == 600 + 20 + 20 + 20
    same_decisions(store.decisions_in_force(DAY2), day2)
    same_decisions(store.decisions_in_force(DAY3), day2)
    store.dispose()


def test_leaving_and_returning_persons_close_and_reopen_their_decisions(store_url: str) -> None:
    store = MasterStore(store_url)
    persons = first_merge(30).master["id_number"]
    apply(store, evaluated(persons, DAY1), "run-1", DAY1)
    fewer = persons.drop(index=[3]).reset_index(drop=True)
    newcomer = ids(1, start=5_000)
    day2 = evaluated(pd.concat([fewer, newcomer], ignore_index=True), DAY2)
    counts = apply(store, day2, "run-2", DAY2)
    assert counts["closed"] == 3 and counts["opened"] == 3  # the leaver's 3 closed, the newcomer's 3 opened
    apply(store, evaluated(persons, DAY3), "run-3", DAY3)  # the leaver is back, the newcomer gone
    versions = store.read_decision_versions()
    back = versions[versions["id_number"] == persons.iloc[3]]
    assert sorted(back["version"]) == [1, 1, 1, 2, 2, 2]  # after its history, not a second version 1
    assert back.loc[back["version"] == 2, "valid_from"].eq(pd.Timestamp(DAY3)).all()
    assert store.decisions_in_force(DAY2)["id_number"].eq(persons.iloc[3]).sum() == 0
    store.dispose()


def test_an_older_snapshot_brought_forward_by_the_runs_after_it_equals_reading_the_table(
    new_store_url: Callable[[], str], tmp_path: Path
) -> None:
    """Runs after the file's run closed, reopened, opened and left decisions: the file plus what those
    runs wrote gives what every open version read from the table gives."""
    patched, plain = MasterStore(new_store_url()), MasterStore(new_store_url())
    snapshot = tmp_path / "open.parquet"
    persons = first_merge(300).master["id_number"]
    fewer = persons.drop(index=[3, 4]).reset_index(drop=True)
    days = [
        ("run-1", DAY1, evaluated(persons, DAY1), snapshot),
        # the file stays run-1's: these runs write theirs elsewhere
        ("run-2", DAY2, evaluated(fewer, DAY2, flip=np.arange(0, 298, 7)), tmp_path / "elsewhere.parquet"),
        ("run-3", DAY2, evaluated(pd.concat([persons.iloc[[3]], fewer, ids(2, start=9_000)]), DAY2), None),
        ("run-4", DAY3, evaluated(persons, DAY3, flip=np.arange(0, 300, 11)), snapshot),
    ]
    for run_id, day, frame, path in days:
        assert apply(patched, canonical(frame), run_id, day, path) == apply(
            plain, canonical(frame), run_id, day
        )
    assert patched.stats["open_decisions_from_snapshot_and_runs"] == 1
    assert plain.stats["open_decisions_from_snapshot_and_runs"] == 0
    pd.testing.assert_frame_equal(patched.read_decision_versions(), plain.read_decision_versions())
    patched.dispose()
    plain.dispose()


def test_migration_0003_folds_per_run_rows_into_versions_and_back(store_url: str) -> None:
    command.upgrade(migrations.config(store_url), "0002")
    persons = list(ids(3))
    runs = [("r1", date(2026, 1, 1)), ("r2", date(2026, 2, 1)), ("r3", date(2026, 3, 1))]
    rows = []
    for n, (run_id, day) in enumerate(runs):
        for i, person in enumerate(persons):
            if i == 2 and n == 1:
                continue  # the third person is missing from the second run
            eligible = not (i == 1 and n == 2)  # the second person loses it in the third run
            rows.append(
                {
                    "run_id": run_id,
                    "id_number": person,
                    "service": "living",
                    "period": f"{day:%Y-%m}",
                    "eligible": eligible,
                    "amount": 100.0 if eligible else 0.0,
                    "reasons": "" if eligible else "NOT_LOW_INCOME",
                    "policy": "p",
                    "policy_version": "v",
                }
            )
    engine = sa.create_engine(store_url)
    old = sa.Table("decision", sa.MetaData(), autoload_with=engine)
    run = sa.Table("run", sa.MetaData(), autoload_with=engine)
    with engine.begin() as conn:
        for k, (run_id, day) in enumerate(runs):
            conn.execute(
                run.insert().values(
                    run_id=run_id, as_of=day, decisions_written_at=f"2026-0{k + 1}-02T00:00:00"
                )
            )
        conn.execute(old.insert(), rows)
    engine.dispose()

    store = MasterStore(store_url)  # opening upgrades to head
    versions = store.read_decision_versions().set_index(["id_number", "version"])
    assert len(versions) == 5
    steady, loser, gap = persons
    assert versions.loc[(steady, 1), "valid_from"] == pd.Timestamp("2026-01-01")
    assert pd.isna(versions.loc[(steady, 1), "valid_to"])
    assert versions.loc[(loser, 1), "valid_to"] == pd.Timestamp("2026-03-01")
    assert versions.loc[(loser, 1), "closed_run"] == "r3"
    assert not versions.loc[(loser, 2), "eligible"]
    assert versions.loc[(gap, 1), "valid_to"] == pd.Timestamp("2026-02-01")  # missing from r2: closed
    assert versions.loc[(gap, 2), "valid_from"] == pd.Timestamp("2026-03-01")
    assert store.decisions_in_force(date(2026, 2, 15))["id_number"].tolist() == [steady, loser]
    store.dispose()

    command.downgrade(migrations.config(store_url), "0002")
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as conn:
            back = pd.DataFrame(conn.execute(sa.text("SELECT * FROM decision")).mappings().all())
        assert "decision_version" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
    key = ["run_id", "id_number", "service"]
    expected = pd.DataFrame(rows).sort_values(key).reset_index(drop=True)
    back = back[expected.columns].sort_values(key).reset_index(drop=True)
    back["eligible"] = back["eligible"].astype(bool)
    pd.testing.assert_frame_equal(back, expected, check_dtype=False)
