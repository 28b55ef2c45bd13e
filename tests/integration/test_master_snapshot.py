"""The master snapshot (store/master_snapshot.py) mirrors the store after every kind of merge, on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from master_frames import DAY1, DAY2, DAY3, Result, build_master, first_merge, rehash, second_merge

from store.master_snapshot import current_master, write_after_merge
from store.master_store import MasterStore


def _merge(store: MasterStore, path: Path, result: Result, run_id: str, day, scope=None) -> str:  # type: ignore[no-untyped-def]
    """What merge_stage does: the store's merge, then the snapshot of its outcome."""
    before = store.last_merge()
    store.apply_merge(result, run_id, day, scope=scope)
    return write_after_merge(path, store, before, result.master, scope)


def _from_file_only(
    store: MasterStore, path: Path, monkeypatch: pytest.MonkeyPatch, columns=None
) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """current_master, failing if it would read the store instead of the file."""
    with monkeypatch.context() as patched:
        patched.setattr(store, "read_master", lambda *a, **k: pytest.fail("read the store, not the snapshot"))
        return current_master(path, store, columns)


@pytest.fixture
def store(store_url: str) -> Iterator[MasterStore]:
    opened = MasterStore(store_url)
    yield opened
    opened.dispose()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "current.arrow"


def test_the_snapshot_mirrors_the_store_after_full_incremental_and_id_change_merges(
    store: MasterStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = first_merge(300)
    assert _merge(store, path, first, "run-1", DAY1) == "base from the merge"
    pd.testing.assert_frame_equal(_from_file_only(store, path, monkeypatch), store.read_master())

    # a full merge over a stored master: changed, gone and new persons; unchanged ones keep their batches
    second = second_merge(300)
    second.master["cdpf_batch"] = "cdpf-b2"
    _merge(store, path, second, "run-2", DAY2)
    now = _from_file_only(store, path, monkeypatch)
    pd.testing.assert_frame_equal(now, store.read_master())
    assert set(now["cdpf_batch"]) == {"cdpf-b1", "cdpf-b2"}  # only rewritten persons took the new batch

    # incremental: two persons recomputed (one changed), two gone, the rest untouched
    scope = now["id_number"].iloc[[1, 2, 3, 50]]
    part = now.iloc[[1, 2]].copy()
    part.loc[1, "level"] = 1 if part.loc[1, "level"] != 1 else 2
    assert _merge(store, path, Result(rehash(part)), "run-3", DAY3, scope=scope) == "delta"
    pd.testing.assert_frame_equal(_from_file_only(store, path, monkeypatch), store.read_master())
    assert len(store.read_master()) == len(now) - 2

    # an ID change: the old number's record goes, the new one arrives out of order at the end
    moved = store.read_master()
    old_id = moved.loc[4, "id_number"]
    moved.loc[4] = build_master(1, start=90_000).iloc[0].to_numpy()
    changes = pd.DataFrame(
        {"old_id": [old_id], "new_id": [moved.loc[4, "id_number"]], "source": ["police"], "batch_id": ["p2"]}
    ).astype("string")
    _merge(store, path, Result(rehash(moved), id_changes=changes), "run-4", DAY3)
    after = _from_file_only(store, path, monkeypatch)
    pd.testing.assert_frame_equal(after, store.read_master())
    assert old_id not in set(after["id_number"]) and after["id_number"].is_monotonic_increasing

    # a retried run writes nothing to the store, and the snapshot follows its new write time
    _merge(store, path, Result(rehash(moved), id_changes=changes), "run-4", DAY3)
    columns = ["id_number", "birth_date", "level", "dibao", "dibao_standard"]
    pd.testing.assert_frame_equal(
        _from_file_only(store, path, monkeypatch, columns), store.read_master(columns)
    )


def test_a_stale_snapshot_is_never_read_and_the_next_merge_rebuilds_it_from_the_store(
    store: MasterStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _merge(store, path, first_merge(100), "run-1", DAY1)
    # a merge that did not get to write its snapshot (killed after the commit, or run by another tool)
    second = second_merge(100)
    store.apply_merge(second, "run-2", DAY2)
    with pytest.raises(pytest.fail.Exception, match="read the store"):
        _from_file_only(store, path, monkeypatch)
    pd.testing.assert_frame_equal(current_master(path, store), store.read_master())

    third = Result(rehash(second.master.assign(employment="employed")))
    assert _merge(store, path, third, "run-3", DAY3) == "base read from the store"
    pd.testing.assert_frame_equal(_from_file_only(store, path, monkeypatch), store.read_master())
    # another store is another master, whatever the file says
    other = MasterStore(f"sqlite:///{path.parent}/other.sqlite")
    other.apply_merge(first_merge(10), "run-3", DAY3)
    assert len(current_master(path, other)) == 10
    other.dispose()


def test_small_days_only_grow_the_delta_until_it_is_folded_into_a_new_base(
    store: MasterStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = first_merge(200)
    _merge(store, path, first, "run-1", DAY1)
    base_bytes = path.read_bytes()
    ids = first.master["id_number"]
    hows = []
    # days 1-3: one person changed each day (a delta); day 2 also loses one; day 4 changes a tenth
    for day, picked in enumerate(([3], [3, 8], [150], list(range(20, 40))), start=1):
        now = store.read_master()
        part = now[now["id_number"].isin(ids.iloc[picked])].copy()
        part["employment"] = f"day-{day}"
        part = part[part["id_number"] != ids.iloc[8]]  # person 8 leaves every source on day 2
        when = DAY2 + pd.Timedelta(days=day)
        hows.append(_merge(store, path, Result(rehash(part)), f"run-d{day}", when, scope=ids.iloc[picked]))
        pd.testing.assert_frame_equal(_from_file_only(store, path, monkeypatch), store.read_master())
        if hows[-1] == "delta":
            assert path.read_bytes() == base_bytes  # a small day leaves the base alone
    assert hows == ["delta", "delta", "delta", "base compacted from the delta"]
    assert path.read_bytes() != base_bytes and not path.with_name("current.delta.arrow").exists()
    assert ids.iloc[8] not in set(store.read_master()["id_number"])
