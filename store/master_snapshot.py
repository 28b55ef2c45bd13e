"""The current master file as Arrow IPC files beside the store, for the stages that read it whole.

Eligibility and exchange read every current person each run. Through the SQLite driver that costs
about 170 ns a value (7 to 8 s for 15 columns at provincial scale); from a memory-mapped Arrow
file, a fraction of a second. The store stays the record: the files name the store and the merge
they mirror (run id and write time), and a reader takes them only when that merge is the store's
last one; otherwise it reads the store.

Two files, so that a 1% day costs about 1%: a base (every current person, by id_number) and a delta
(the persons changed since the base: their current row, or a removal). Each merge writes them after
its transaction commits, by the store's own rule (a person is rewritten only when their record_hash
changed): a full merge writes a new base; an incremental merge rewrites only the delta, folded into
a new base once it holds more than COMPACT_SHARE of the persons. When the files do not mirror the
merge before, they are rebuilt from the store.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from core.storage import publishing
from store.master_store import MASTER_COLUMNS, MasterStore, as_master

log = logging.getLogger(__name__)

TAG_KEY = b"lianban.master_snapshot"
BASE_KEY = b"lianban.master_snapshot.base"  # in a delta: the tag of the base it applies to
COMPACT_SHARE = 0.05


def _tag(store: MasterStore, merge: dict[str, Any] | None) -> dict[str, str] | None:
    """What a snapshot of the store after `merge` is labelled with (None: no merge yet)."""
    if merge is None:
        return None
    where = sa.make_url(store.url).render_as_string(hide_password=True)  # never a password in a file
    return {"store": where, "run_id": str(merge["run_id"]), "written_at": str(merge["written_at"])}


def _delta_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}.delta{path.suffix}")


def _arrow(frame: pd.DataFrame) -> pa.Table:
    """Master rows as an Arrow table in MASTER_COLUMNS order (readers give them read_master's dtypes)."""
    return pa.Table.from_pandas(frame[list(MASTER_COLUMNS)], preserve_index=False)


def _in_order(table: pa.Table) -> pa.Table:
    """The rows ordered by id_number (a table already in order is returned as it is, not copied)."""
    from transforms.merge import id_keys

    (keys,), ordered = id_keys(_ids(table))
    if not ordered:
        return table.take(pc.sort_indices(table, [("id_number", "ascending")]))
    if len(keys) < 2 or bool((keys[1:] > keys[:-1]).all()):
        return table
    return table.take(pa.array(np.argsort(keys, kind="stable")))


def _label(table: pa.Table, key: bytes) -> Any:
    text = (table.schema.metadata or {}).get(key)
    return None if text is None else json.loads(text)


def _load(path: Path) -> pa.Table | None:
    """A file memory-mapped: columns not used are never read, and a file replaced meanwhile stays whole."""
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all() if path.exists() else None


def _open(path: Path, tag: dict[str, str] | None) -> tuple[pa.Table, pa.Table | None] | None:
    """(base, delta or None) if they are the snapshot labelled `tag`, else None."""
    if tag is None:
        return None
    base, delta = _load(path), _load(_delta_path(path))
    if base is None:
        return None
    if (
        delta is not None
        and _label(delta, TAG_KEY) == tag
        and _label(delta, BASE_KEY) == _label(base, TAG_KEY)
    ):
        return base, delta
    return (base, None) if _label(base, TAG_KEY) == tag else None


def _ids(table: pa.Table) -> pd.Series:
    from transforms.ids import arrow_to_series

    return arrow_to_series(table.column("id_number").combine_chunks(), pd.RangeIndex(len(table)))


def _overlay(base: pa.Table, delta: pa.Table | None, columns: list[str], in_order: bool = True) -> pa.Table:
    """The current persons' columns (id_number among them): the base's rows the delta does not
    replace, and the delta's own; ordered by id_number unless the caller does not need it."""
    from transforms.merge import among

    kept = base.select(columns)
    if delta is None or len(delta) == 0:
        return kept
    stays = ~among(_ids(base), _ids(delta))
    alive = ~delta.column("removed").to_numpy(zero_copy_only=False)
    current = pa.concat_tables(
        [kept.filter(pa.array(stays)), delta.select(columns).filter(pa.array(alive)).cast(kept.schema)]
    )
    return _in_order(current) if in_order else current


def current_master(path: Path, store: MasterStore, columns: list[str] | None = None) -> pd.DataFrame:
    """The store's current master (the columns asked for, ordered by id_number), from the snapshot when
    it mirrors the store's last merge."""
    wanted = list(MASTER_COLUMNS if columns is None else columns)
    found = _open(path, _tag(store, store.last_merge())) if set(wanted) <= set(MASTER_COLUMNS) else None
    if found is None:
        log.info("master snapshot %s does not mirror the store's last merge; reading the store", path)
        return store.read_master(wanted)
    read = wanted if "id_number" in wanted else ["id_number", *wanted]
    return as_master(_overlay(*found, read).select(wanted).to_pandas(date_as_object=False))


def changes(
    base: pa.Table, delta: pa.Table | None, master: pd.DataFrame, scope: pd.Series | None
) -> pa.Table:
    """The delta after a merge (as MasterStore.apply_merge writes it) on top of `base`.

    Persons outside `scope` (everyone when None) keep what they had; in scope, a person the merge no
    longer has is removed, an unchanged record_hash keeps the person's row as it was (with the batches
    that set it), and anyone else takes the merge's row.
    """
    from transforms.merge import among

    new = _arrow(master)
    new_ids = _ids(new)
    now = _overlay(base, delta, ["id_number", "record_hash"], in_order=False)
    touched = now if scope is None else now.filter(pa.array(among(_ids(now), scope)))
    touched_ids = _ids(touched)
    pairs = pd.DataFrame({"id_number": touched_ids, "hash": touched.column("record_hash").to_numpy()}).merge(
        pd.DataFrame({"id_number": new_ids, "hash": new.column("record_hash").to_numpy()}),
        on=["id_number", "hash"],
    )
    taken = new.filter(pa.array(~among(new_ids, pairs["id_number"])))
    gone = touched.filter(pa.array(~among(touched_ids, new_ids)))
    rows = pa.concat_tables(
        [
            taken.append_column("removed", pa.array(np.zeros(len(taken), dtype=bool))),
            pa.Table.from_pydict(
                {
                    "id_number": gone.column("id_number").cast(taken.schema.field("id_number").type),
                    "removed": pa.array(np.ones(len(gone), dtype=bool)),
                }
            ),
        ],
        promote_options="default",
    )
    if delta is None:
        return rows
    replaced = among(_ids(delta), _ids(rows))
    return pa.concat_tables([delta.filter(pa.array(~replaced)), rows.cast(delta.schema)])


def _write(path: Path, table: pa.Table, labels: dict[bytes, Any]) -> None:
    """Write one file under a temporary name and rename it into place."""
    metadata = {
        **(table.schema.metadata or {}),
        **{k: json.dumps(v, sort_keys=True).encode() for k, v in labels.items()},
    }
    table = table.replace_schema_metadata(metadata)
    with (
        publishing(path) as tmp,
        pa.OSFile(str(tmp), "wb") as sink,
        pa.ipc.new_file(sink, table.schema) as writer,
    ):
        writer.write_table(table)


def write_after_merge(
    path: Path,
    store: MasterStore,
    before: dict[str, Any] | None,
    master: pd.DataFrame,
    scope: pd.Series | None,
) -> str:
    """Write the snapshot of the store's state after a merge committed; `before` is the merge before it.

    Returns what was written: a base from the merge, a delta, a compacted base, or a base read from the
    store when the files did not mirror the merge before.
    """
    after = _tag(store, store.last_merge())
    if before is None:
        found: tuple[pa.Table, pa.Table | None] | None = (_arrow(master.iloc[:0]), None)
    else:
        found = _open(path, _tag(store, before))
    if found is None:
        base, delta, how = _arrow(store.read_master()), None, "base read from the store"
    elif (
        len(found[0]) == 0 and found[1] is None and scope is None
    ):  # the first merge: its rows are the master
        base, delta, how = _in_order(_arrow(master)), None, "base from the merge"
    else:
        base, delta = found
        delta = changes(base, delta, master, scope)
        how = "delta"
        if scope is None or len(delta) > COMPACT_SHARE * max(len(base), 1):
            base, delta = _overlay(base, delta, list(MASTER_COLUMNS)), None
            how = "base from the merge" if scope is None else "base compacted from the delta"
    if delta is not None:  # the base stays as it is; a reader takes either delta with its base
        _write(_delta_path(path), delta, {TAG_KEY: after, BASE_KEY: _label(base, TAG_KEY)})
    else:  # the old delta names the old base, so no reader pairs it with the new one
        _write(path, base, {TAG_KEY: after})
        _delta_path(path).unlink(missing_ok=True)
    log.info("master snapshot: %d persons in the base, %s", len(base), how)
    return how
