"""Incremental merge: only changed persons are recomputed and written, and the result equals a full rebuild."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from test_merge import cdpf, civil, hrss, make_id, police

from hub.cycle import merge_stage
from hub.master_store import MasterStore
from hub.settings import Settings, load_settings
from hub.storage import Storage
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
    assert first["mode"] == "full" and first["written"]["new"] == 300

    stage(settings, snapshot(2), 2)
    second = merge_stage(settings, AS_OF, "run-2")
    assert second["mode"] == "incremental"
    assert second["scope"] == 3  # persons 7 (level), 11 (police name) and 21 (civil row gone)
    assert second["written"]["changed"] == 3 and second["written"]["new"] == 0

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

    again = merge_stage(settings, AS_OF, "run-3")  # nothing new landed
    assert again["scope"] == 0 and again["written"]["changed"] == 0


def test_a_configuration_change_forces_a_full_merge(settings: Settings) -> None:
    stage(settings, snapshot(1), 1)
    merge_stage(settings, AS_OF, "run-1")
    cdpf_first = settings.model_copy(update={"precedence": {"name": ["cdpf", "police"]}})
    assert merge_stage(cdpf_first, AS_OF, "run-2")["mode"] == "full"
