"""The current master file as one Parquet file beside the store, for the stages that read it whole.

Eligibility and exchange read every current person each run. Through the SQLite driver that costs
about 170 ns a value (7 to 8 s for 15 columns at provincial scale); from Parquet, under half a second.
The store stays the record. The file names the store and the merge it mirrors (run id and write
time), and a reader takes it only when that merge is the store's last one; otherwise it reads the
store. Each merge writes the file after its transaction commits, from the file of the merge before
(or, when that one is missing or stale, from the store) and what this merge wrote, by the store's
own rule: a person is rewritten only when their record_hash changed.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from hub.master_store import MASTER_COLUMNS, MasterStore, as_master

log = logging.getLogger(__name__)

TAG_KEY = b"lianban.master_snapshot"


def _tag(store: MasterStore, merge: dict[str, Any] | None) -> dict[str, str] | None:
    """What a snapshot of the store after `merge` is labelled with (None: no merge yet)."""
    if merge is None:
        return None
    where = sa.make_url(store.url).render_as_string(hide_password=True)  # never a password in a file
    return {"store": where, "run_id": str(merge["run_id"]), "written_at": str(merge["written_at"])}


def _empty() -> pd.DataFrame:
    return as_master(pd.DataFrame({c: pd.Series([], dtype=object) for c in MASTER_COLUMNS}))


def _read(path: Path, tag: dict[str, str] | None, columns: list[str]) -> pd.DataFrame | None:
    """The file's rows if it is the snapshot labelled `tag`, else None (checked and read from one open file)."""
    if tag is None or not path.exists():
        return None
    with pq.ParquetFile(path) as parquet:
        label = (parquet.schema_arrow.metadata or {}).get(TAG_KEY)
        if label is None or json.loads(label) != tag:
            return None
        table = parquet.read(columns=columns)
    return as_master(table.to_pandas(date_as_object=False))


def current_master(path: Path, store: MasterStore, columns: list[str] | None = None) -> pd.DataFrame:
    """The store's current master (the columns asked for, ordered by id_number), from the snapshot when
    it mirrors the store's last merge."""
    wanted = list(MASTER_COLUMNS if columns is None else columns)
    if set(wanted) <= set(MASTER_COLUMNS):
        frame = _read(path, _tag(store, store.last_merge()), wanted)
        if frame is not None:
            return frame
        log.info("master snapshot %s does not mirror the store's last merge; reading the store", path)
    return store.read_master(wanted)


def advance(previous: pd.DataFrame, master: pd.DataFrame, scope: pd.Series | None) -> pd.DataFrame:
    """The current persons after a merge, from those before it, as MasterStore.apply_merge writes them.

    Persons outside `scope` (everyone when None) are untouched; in scope, a person the merge no longer
    has is gone, an unchanged record_hash keeps the row as it was (with the batches that set it), and
    anyone else takes the merge's row.
    """
    from transforms.merge import among, id_keys

    master = as_master(master[list(MASTER_COLUMNS)].reset_index(drop=True))
    before_ids = previous["id_number"]
    touched = np.ones(len(previous), dtype=bool) if scope is None else among(before_ids, scope)
    pairs = previous.loc[touched, ["id_number", "record_hash"]].merge(
        master[["id_number", "record_hash"]], on="id_number", suffixes=("", "_new")
    )
    same = pairs.loc[(pairs["record_hash"] == pairs["record_hash_new"]).to_numpy(dtype=bool), "id_number"]
    kept = ~touched | among(before_ids, same)
    taken = ~among(master["id_number"], same)
    if not kept.any():
        current = master[taken].reset_index(drop=True)
    else:
        current = pd.concat([previous[kept], master[taken]], ignore_index=True)
    (keys,), ordered = id_keys(current["id_number"])
    if ordered and (len(keys) < 2 or bool((keys[1:] > keys[:-1]).all())):
        return current
    order = np.argsort(keys, kind="stable") if ordered else current["id_number"].argsort(kind="stable")
    return current.iloc[np.asarray(order)].reset_index(drop=True)


def write_after_merge(
    path: Path,
    store: MasterStore,
    before: dict[str, Any] | None,
    master: pd.DataFrame,
    scope: pd.Series | None,
) -> str:
    """Write the snapshot of the store's state after a merge committed; `before` is the merge before it.

    Returns how the rows were found: advanced from the previous snapshot, or read from the store.
    """
    previous = _empty() if before is None else _read(path, _tag(store, before), list(MASTER_COLUMNS))
    if previous is None:
        current, how = store.read_master(), "read from the store"
    else:
        current, how = advance(previous, master, scope), "advanced from the previous snapshot"
    table = pa.Table.from_pandas(current, preserve_index=False)
    label = json.dumps(_tag(store, store.last_merge()), sort_keys=True).encode()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), TAG_KEY: label})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    log.info("master snapshot: %d persons %s", len(current), how)
    return how
