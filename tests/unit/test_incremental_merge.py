"""Incremental merge: only changed persons are recomputed and written, and the result equals a full rebuild."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from test_merge import cdpf, civil, hrss, make_id, police

from core.landing import Manifest
from core.settings import Settings, load_settings
from core.storage import Storage
from stages.merge import merge_stage
from store.master_snapshot import current_master
from store.master_store import MasterStore
from transforms.merge import ATTRIBUTE_COLUMNS, changed_ids

AS_OF = date(2026, 3, 1)
PEOPLE = [
    make_id(birth=f"1980{1 + i // 28:02d}{1 + i % 28:02d}", seq=f"{i % 900 + 100:03d}") for i in range(300)
]


def snapshot(version: int) -> dict[str, pd.DataFrame]:
    """Four sources for 300 persons; version 2 changes 3 of them (1%) and drops one civil row."""
    rows: dict[str, list] = {"cdpf": [], "police": [], "civil": [], "hrss": []}
    for i, person in enumerate(PEOPLE):
        gender = "male" if int(person[16]) % 2 else "female"
        birth = f"{person[6:10]}-{person[10:12]}-{person[12:14]}"
        level = 2 if version == 2 and i == 7 else 1
        rows["cdpf"].append(
            cdpf(
                id_number=person,
                gender=gender,
                birth_date=birth,
                cert_number=person + f"4{level}",
                level=level,
            )
        )
        name = "李四" if version == 2 and i == 11 else "张三"
        rows["police"].append(police(id_number=person, gender=gender, birth_date=birth, name=name))
        if i % 3 == 0 and not (version == 2 and i == 21):
            rows["civil"].append(civil(id_number=person))
        rows["hrss"].append(hrss(id_number=person))
    return {source: pd.DataFrame(r) for source, r in rows.items()}


def stage(settings: Settings, frames: dict[str, pd.DataFrame], version: int) -> None:
    """Put the frames where an accepted batch lives: staged parquet plus an accepted ledger verdict."""
    storage = Storage(settings)
    for source, frame in frames.items():
        batch_id = f"{source}-v{version}"
        out = storage.staged(source, batch_id)
        out.mkdir(parents=True, exist_ok=True)
        frame.assign(_batch_id=batch_id).to_parquet(out / "accepted.parquet", index=False)
        storage.record_batch(batch_id, source, f"v{version}", len(frame))
        storage.set_verdict(batch_id, "accepted", len(frame), 0)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(var_dir=tmp_path / "var")


def test_changed_ids_sees_changes_additions_and_removals() -> None:
    before = pd.DataFrame([cdpf(id_number=p) for p in PEOPLE[:3]])
    after = pd.DataFrame(
        [cdpf(id_number=PEOPLE[0]), cdpf(id_number=PEOPLE[1], level=3), cdpf(id_number=PEOPLE[3])]
    )
    after.loc[0, "_batch_id"] = "another-batch"  # a new batch saying the same is no change
    assert changed_ids("cdpf", before, after).tolist() == sorted([PEOPLE[1], PEOPLE[2], PEOPLE[3]])


def test_incremental_merge_writes_only_the_changed_persons_and_equals_a_full_rebuild(
    settings: Settings,
) -> None:
    stage(settings, snapshot(1), 1)
    first = merge_stage(settings, AS_OF, "run-1")
    assert first.mode == "full" and first.written["new"] == 300

    stage(settings, snapshot(2), 2)
    second = merge_stage(settings, AS_OF, "run-2")
    assert second.mode == "incremental"
    assert second.scope == 3  # persons 7 (level), 11 (police name) and 21 (civil row gone)
    assert second.written["changed"] == 3 and second.written["new"] == 0

    incremental = MasterStore(settings.expand(settings.master_url)).read_master()
    rebuilt_settings = settings.model_copy(
        update={"master_url": f"sqlite:///{settings.var_dir}/rebuilt.sqlite"}
    )
    merge_stage(rebuilt_settings, AS_OF, "run-2-full", full=True)
    rebuilt = MasterStore(rebuilt_settings.expand(rebuilt_settings.master_url)).read_master()
    # Same facts, same sources, same hashes. The batch columns differ by design: an unchanged record keeps
    # the batch that set its values, while a fresh rebuild credits the batches it read.
    facts = [*ATTRIBUTE_COLUMNS, "sources", "record_hash"]
    pd.testing.assert_frame_equal(incremental[facts], rebuilt[facts])
    assert (incremental["cdpf_batch"] == "cdpf-v2").sum() == 3

    _snapshot_mirrors_the_store(settings, "run-2")

    again = merge_stage(settings, AS_OF, "run-3")  # nothing new landed
    assert again.scope == 0 and again.written["changed"] == 0
    _snapshot_mirrors_the_store(settings, "run-3")


def _snapshot_mirrors_the_store(settings: Settings, run_id: str) -> None:
    """The files merge_stage leaves for eligibility and exchange are the store's current master after
    `run_id` (read from them alone: the store's own read is barred while they are)."""
    store = MasterStore(settings.expand(settings.master_url))
    expected = store.read_master()
    assert store.last_merge()["run_id"] == run_id  # type: ignore[index]

    def barred(*args: object, **kwargs: object) -> pd.DataFrame:
        raise AssertionError("the snapshot did not mirror the store; current_master read the store")

    store.read_master = barred  # type: ignore[method-assign]
    pd.testing.assert_frame_equal(
        current_master(Storage(settings).master_snapshot(store.url), store), expected
    )
    store.dispose()


def test_a_configuration_change_forces_a_full_merge(settings: Settings) -> None:
    stage(settings, snapshot(1), 1)
    merge_stage(settings, AS_OF, "run-1")
    cdpf_first = settings.model_copy(update={"precedence": {"name": ["cdpf", "police"]}})
    assert merge_stage(cdpf_first, AS_OF, "run-2").mode == "full"


def _master(settings: Settings) -> pd.DataFrame:
    return MasterStore(settings.expand(settings.master_url)).read_master()


def _elsewhere(settings: Settings, name: str) -> Settings:
    return settings.model_copy(update={"master_url": f"sqlite:///{settings.var_dir}/{name}.sqlite"})


def test_incremental_and_full_merges_over_the_same_batches_give_the_identical_master(
    settings: Settings,
) -> None:
    """Compared exactly, batch, version and run columns included: the scope never loses a change."""
    other = _elsewhere(settings, "full-each-time")
    stage(settings, snapshot(1), 1)
    merge_stage(settings, AS_OF, "run-1")
    merge_stage(other, AS_OF, "run-1", full=True)
    stage(settings, snapshot(2), 2)
    assert merge_stage(settings, AS_OF, "run-2").mode == "incremental"
    assert merge_stage(other, AS_OF, "run-2", full=True).mode == "full"
    pd.testing.assert_frame_equal(_master(settings), _master(other))
    store, full_store = (MasterStore(s.expand(s.master_url)) for s in (settings, other))
    pd.testing.assert_frame_equal(store.read_conflicts(), full_store.read_conflicts())


def stage_delta(settings: Settings, source: str, frame: pd.DataFrame, batch_id: str) -> None:
    """An accepted delta batch: staged rows plus a landing manifest that says `delta`."""
    storage = Storage(settings)
    out = storage.staged(source, batch_id)
    out.mkdir(parents=True, exist_ok=True)
    frame.assign(_batch_id=batch_id).to_parquet(out / "accepted.parquet", index=False)
    landing = storage.landing(source, batch_id)
    landing.mkdir(parents=True, exist_ok=True)
    Manifest(source, batch_id, "delta", "sql", [], len(frame), "2026-03-01T00:00:00+00:00", delta=True).write(
        landing
    )
    storage.record_batch(batch_id, source, "delta", len(frame))
    storage.set_verdict(batch_id, "accepted", len(frame), 0)


def _changed_rows(source: str, version: int) -> pd.DataFrame:
    before, after = snapshot(version - 1)[source], snapshot(version)[source]
    merged = after.merge(before, how="left", indicator=True)
    return merged[merged["_merge"] == "left_only"].drop(columns="_merge")


def test_delta_batches_on_the_last_full_batch_equal_the_full_snapshot(settings: Settings) -> None:
    stage(settings, snapshot(1), 1)
    merge_stage(settings, AS_OF, "run-1")
    for source in ("cdpf", "police"):  # level of person 7, police name of person 11
        stage_delta(settings, source, _changed_rows(source, 2), f"{source}-d2")
    done = merge_stage(settings, AS_OF, "run-2")
    assert done.mode == "incremental" and done.scope == 2 and done.written["changed"] == 2
    assert done.delta_chains == {"cdpf": ["cdpf-v1", "cdpf-d2"], "police": ["police-v1", "police-d2"]}

    snap = _elsewhere(settings, "snapshot")  # the same day as full snapshots (civil: person 21 kept)
    v2 = snapshot(2)
    v2["civil"] = snapshot(1)["civil"]
    snap_settings = snap.model_copy(update={"var_dir": settings.var_dir / "snap"})
    stage(snap_settings, v2, 2)
    merge_stage(snap_settings, AS_OF, "snap", full=True)
    facts = [*ATTRIBUTE_COLUMNS, "sources", "record_hash"]
    pd.testing.assert_frame_equal(_master(settings)[facts], _master(snap_settings)[facts])

    rebuilt = _elsewhere(settings, "rebuilt")  # from the ledger and staged files alone
    merge_stage(rebuilt, AS_OF, "rebuild", full=True)
    pd.testing.assert_frame_equal(_master(settings)[facts], _master(rebuilt)[facts])
    assert (_master(rebuilt)["cdpf_batch"] == "cdpf-d2").sum() == 1

    again = merge_stage(settings, AS_OF, "run-3")  # nothing new
    assert again.scope == 0 and again.written["changed"] == 0


def test_an_id_change_moves_the_person_and_equals_a_full_rebuild(settings: Settings) -> None:
    stage(settings, snapshot(1), 1)
    merge_stage(settings, AS_OF, "run-1")
    old = PEOPLE[6]  # in all four sources
    new = make_id(birth=old[6:14], seq=f"{(int(old[14:17]) + 500) % 1000:03d}")
    police_v2 = snapshot(1)["police"]
    police_v2.loc[police_v2["id_number"] == old, ["id_number", "former_id_number"]] = [new, old]
    stage_delta(settings, "police", police_v2[police_v2["id_number"] == new], "police-idchange")
    done = merge_stage(settings, AS_OF, "run-2")
    assert done.mode == "incremental" and done.scope == 2 and done.id_changes == 1
    assert done.written["new"] == 1 and done.written["removed"] == 1
    master = _master(settings)
    assert new in set(master["id_number"]) and old not in set(master["id_number"])
    assert (master.loc[master["id_number"] == new, "cdpf_batch"] == "cdpf-v1").all()

    rebuilt = _elsewhere(settings, "rebuilt")
    merge_stage(rebuilt, AS_OF, "rebuild", full=True)
    facts = [*ATTRIBUTE_COLUMNS, "sources", "record_hash"]
    pd.testing.assert_frame_equal(master[facts], _master(rebuilt)[facts])
    store = MasterStore(settings.expand(settings.master_url))
    conflicts = store.read_conflicts("open")
    superseded = conflicts[conflicts["conflict_type"] == "ID_SUPERSEDED"]
    assert sorted(superseded["department"]) == ["cdpf", "civil", "hrss"]
    assert (superseded["id_number"] == new).all() and (superseded["value_b"] == old).all()
    assert store.current_id(old) == new
    _snapshot_mirrors_the_store(settings, "run-2")
    history = store.history(new)  # the old number's version, its tombstone, then the new number's
    assert set(history["id_number"]) == {old, new} and history["removed"].astype(bool).sum() == 1


def test_changed_ids_on_snapshots_in_the_same_order_compare_column_by_column() -> None:
    before = pd.DataFrame([police(id_number=p) for p in PEOPLE[:5]])
    after = before.copy()
    after.loc[3, "name"] = "李四"
    after.loc[1, "death_date"] = "2026-01-01"
    after["_batch_id"] = "police-b2"  # nulls equal nulls; a new batch saying the same is no change
    assert changed_ids("police", before, after).tolist() == sorted([PEOPLE[1], PEOPLE[3]])
    assert changed_ids("police", before, before.iloc[::-1]).tolist() == []  # same rows, other order
    assert changed_ids("police", None, before).tolist() == sorted(PEOPLE[:5])
