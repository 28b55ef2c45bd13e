"""The merge's frames as the store takes them, and the provenance the store derives from them.

Vectorised helpers of the facade: the input checks of a merge result, change detection, and which
batches caused a new version (`caused_by`).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from store.convert import PANDAS_TYPES, typed
from store.schema import (
    ATTRIBUTES,
    CONFLICT_FIELDS,
    CONFLICT_KEY,
    ID_CHANGE_FIELDS,
    MASTER_COLUMNS,
    SOURCE_ORDER,
    person,
)
from transforms.merge import SOURCE_CODES

log = logging.getLogger(__name__)


def as_master(frame: pd.DataFrame) -> pd.DataFrame:
    """Master columns with the dtypes `read_master` gives them (an empty master when given no rows)."""
    return typed(frame, person)


def differs(a: pd.Series, b: pd.Series) -> pd.Series:
    """Element-wise 'not the same value', where two nulls are the same."""
    a_na, b_na = a.isna().to_numpy(), b.isna().to_numpy()
    same = a.reset_index(drop=True) == b.reset_index(drop=True)
    equal = same.fillna(False).to_numpy(dtype=bool) & ~a_na & ~b_na
    return pd.Series(~(equal | (a_na & b_na)), index=a.index)


def isin(values: pd.Series, wanted: pd.Series) -> np.ndarray:
    """Membership as a numpy mask through Arrow's hash kernel (pandas' isin on Arrow strings loops in Python)."""
    if values.empty or wanted.empty:
        return np.zeros(len(values), dtype=bool)
    as_text = pa.Array.from_pandas(values.astype("string")).cast(pa.large_string())
    value_set = pa.Array.from_pandas(wanted.astype("string")).cast(pa.large_string())
    found = pc.is_in(as_text, value_set=value_set)
    return np.asarray(pc.fill_null(found, False).to_numpy(zero_copy_only=False), dtype=bool)


def join_batches(parts: dict[str, tuple[pd.Series, pd.Series]], index: pd.Index) -> pd.Series:
    """Comma-join, per row and in SOURCE_ORDER, the batch of every source whose flag is set.

    A run has a handful of batches, so rows share a few combinations: rows get one integer code per
    combination (the sources' factorised batches) and each combination is joined once, from its first row.
    """
    used: list[pd.Series] = []
    combined = np.zeros(len(index), dtype=np.int64)
    for source in (s for s in SOURCE_ORDER if s in parts):
        flag, batch = parts[source]
        batch = batch.where(flag.to_numpy(dtype=bool))
        codes, uniques = pd.factorize(batch)  # -1: not used
        combined = combined * (len(uniques) + 1) + (codes + 1)
        used.append(batch)
    _, first, inverse = np.unique(combined, return_index=True, return_inverse=True)
    picked = [u.iloc[first].to_numpy(dtype=object, na_value=None) for u in used]
    texts = [",".join(b for b in row if b is not None) or None for row in zip(*picked, strict=True)]
    joined = pc.take(pa.array(texts, pa.large_string()), pa.array(inverse.reshape(-1)))
    return pd.Series(joined.to_pandas(types_mapper=PANDAS_TYPES.get), dtype="string").set_axis(index)


def caused_by(new: pd.DataFrame, old: pd.DataFrame) -> pd.Series:
    """The batches behind a changed record: the source of every attribute whose value or source changed.

    `new` and `old` hold the same persons in the same order. An attribute's source is its character
    in `sources`; when a source stopped giving a value ('-' now) the old source is blamed. The batch is
    that source's batch in the new record (the old one when the source no longer knows the person).
    """
    index = new.index
    new_src = new["sources"].astype("string").fillna("")
    old_src = old["sources"].astype("string").fillna("").set_axis(index)
    by_code = {code: np.zeros(len(new), dtype=bool) for code in SOURCE_CODES}
    for j, attr in enumerate(ATTRIBUTES[1:]):
        now_code = new_src.str.slice(j, j + 1).fillna("")
        was_code = old_src.str.slice(j, j + 1).fillna("")
        changed = differs(new[attr], old[attr].set_axis(index)) | (now_code != was_code)
        blamed = now_code.where(now_code.isin(list(SOURCE_CODES)), was_code)
        for code in SOURCE_CODES:
            by_code[code] |= (changed & (blamed == code)).to_numpy(dtype=bool)
    parts = {}
    for code, source in SOURCE_CODES.items():
        batch = new[f"{source}_batch"].astype("string").fillna(old[f"{source}_batch"].set_axis(index))
        parts[source] = (pd.Series(by_code[code], index=index), batch)
    blamed_batches = join_batches(parts, index)
    # a changed hash with no attribute-level difference (provenance unknown): every batch of the record
    return blamed_batches.fillna(all_batches(new))


def all_batches(master: pd.DataFrame) -> pd.Series:
    """Every batch a record rests on, comma-joined in SOURCE_ORDER (a new person's caused_by)."""
    index = master.index
    parts = {s: (pd.Series(True, index=index), master[f"{s}_batch"].astype("string")) for s in SOURCE_ORDER}
    return join_batches(parts, index)


# -- input frames -----------------------------------------------------------------------------------------


def master_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The merge's master in MASTER_COLUMNS order; a missing `sources` (older merges) becomes null."""
    frame = frame.copy()
    if "sources" not in frame.columns:
        log.warning("master store: the merge gave no `sources` column; provenance per attribute unknown")
        frame["sources"] = pd.Series(pd.NA, index=frame.index, dtype="string")
    missing = [c for c in MASTER_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"merge result master lacks column(s) {missing}; expected {list(MASTER_COLUMNS)}")
    out = frame[list(MASTER_COLUMNS)].reset_index(drop=True)
    out["id_number"] = out["id_number"].astype("string")
    out["record_hash"] = pd.to_numeric(out["record_hash"], errors="coerce").astype("Int64")
    dupes = out["id_number"].duplicated(keep=False)
    if dupes.any():
        raise ValueError(
            f"merge result master has {int(dupes.sum())} rows sharing an id_number; expected one per person"
        )
    if out["id_number"].isna().any() or out["record_hash"].isna().any():
        raise ValueError("merge result master has rows without id_number or record_hash")
    return out


def conflict_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The merge's conflicts in CONFLICT_FIELDS order (its own status column, if any, is ignored)."""
    frame = frame.copy()
    if "department" not in frame.columns:
        frame["department"] = pd.Series(pd.NA, index=frame.index, dtype="string")
    missing = [c for c in CONFLICT_FIELDS if c not in frame.columns]
    if missing:
        raise ValueError(f"merge result conflicts lack column(s) {missing}; expected {list(CONFLICT_FIELDS)}")
    out = frame[list(CONFLICT_FIELDS)].astype("string").reset_index(drop=True)
    dupes = out.duplicated(list(CONFLICT_KEY), keep=False)
    if dupes.any():
        raise ValueError(
            f"merge result conflicts have {int(dupes.sum())} rows sharing a key {list(CONFLICT_KEY)}"
        )
    return out


def id_change_frame(frame: pd.DataFrame | None) -> pd.DataFrame:
    if frame is None or frame.empty:
        return pd.DataFrame({c: pd.Series([], dtype="string") for c in ID_CHANGE_FIELDS})
    missing = [c for c in ID_CHANGE_FIELDS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"merge result id_changes lack column(s) {missing}; expected {list(ID_CHANGE_FIELDS)}"
        )
    out = frame[list(ID_CHANGE_FIELDS)].astype("string")
    return out.drop_duplicates(["old_id", "new_id"]).reset_index(drop=True)
