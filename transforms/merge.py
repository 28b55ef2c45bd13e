"""Merge the accepted staged rows of every source into the disabled-person master file (一人一档).

One row per person with an accepted cdpf row, keyed by the normalised 18-character ID number.
Each attribute has one authoritative source (一数一源):

- police (公安): name, gender, birth_date, hukou_county, hukou_status, death_date; cdpf stands in for
  name/gender/birth_date/hukou_county when police has no record (hukou_status then stays unknown);
- cdpf (残联): certificate columns, needs_long_term_care, institutional_care;
- civil (民政): assistance flags from the rows in force on the run date;
- hrss (人社): employment, pension_type, work_injury_care.

Disagreements between sources become conflict records (多元校核), never silent overwrites.
Everything is vectorised over the whole input: no Python loop over people.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from core.contracts import load_contract
from core.master_schema import MASTER_SCHEMA_PATH, master_schema
from core.precedence import CARRIERS as CAN_SAY
from core.precedence import DEFAULT_PRECEDENCE as DEFAULT_PRECEDENCE
from core.precedence import PrecedenceError as PrecedenceError
from core.precedence import resolve_precedence

log = logging.getLogger(__name__)

_SCHEMA = master_schema()
SOURCES = tuple(_SCHEMA.sources)
CONTRACTS_DIR = MASTER_SCHEMA_PATH.parent / "sources"

# The kind the merge holds a contract column in (a code column: its canonical values' kind).
_CONTRACT_KINDS = {
    "id_number": "string",
    "name": "string",
    "string": "string",
    "date": "date",
    "timestamp": "timestamp",
    "bool": "bool",
    "float": "float",
    "int": "int",
}


# Contract columns a staged frame may lack (read as null): 原公民身份号码 (police `ygmsfhm`), the number
# the person held before a reissue (docs/domain.md, ID numbers: duplicate numbers were reissued), which
# batches staged before the contract named it do not have.
_MAY_LACK: dict[str, tuple[str, ...]] = {"police": ("former_id_number",)}


def _staged(source: str) -> dict[str, str]:
    """A source's canonical staged columns and their kinds, from its contract (id_number first)."""
    contract = load_contract(CONTRACTS_DIR / f"{source}.yaml")
    kinds = {}
    for c in contract.columns:
        if c.type == "code":
            kinds[c.name] = "int" if all(isinstance(v, int) for v in (c.codes or {}).values()) else "string"
        else:
            kinds[c.name] = _CONTRACT_KINDS[c.type]
    return dict(sorted(kinds.items(), key=lambda item: item[0] != "id_number"))


_CONTRACT_COLUMNS = {s: _staged(s) for s in SOURCES}
# Canonical staged columns each source must provide, with their kinds (schemas/sources/<source>.yaml).
STAGED_COLUMNS: dict[str, dict[str, str]] = {
    s: {c: k for c, k in cols.items() if c not in _MAY_LACK.get(s, ())}
    for s, cols in _CONTRACT_COLUMNS.items()
}
# Columns a staged frame may leave out; absent ones are read as null.
OPTIONAL_COLUMNS: dict[str, dict[str, str]] = {
    s: {c: _CONTRACT_COLUMNS[s][c] for c in names} for s, names in _MAY_LACK.items()
}

# What identifies a row across a source's batches when a delta batch (SQL incremental, REST change feed)
# replaces earlier rows: one row per person, except civil's several assistance periods per person.
DELTA_KEYS: dict[str, tuple[str, ...]] = {
    "cdpf": ("id_number",),
    "police": ("id_number",),
    "hrss": ("id_number",),
    "civil": ("id_number", "assistance_type", "start_date"),
}

# The master file (schemas/master.yaml): column -> kind. `record_hash` covers the attribute columns
# (not provenance).
ATTRIBUTE_COLUMNS: dict[str, str] = _SCHEMA.attribute_columns
PROVENANCE_COLUMNS: dict[str, str] = _SCHEMA.provenance_columns

# `sources` holds one character per attribute after id_number, in ATTRIBUTE_COLUMNS order: the source
# that set it (compact on purpose: 22 more string columns per person would dominate the store writes).
SOURCE_CODES = dict(_SCHEMA.source_codes)
NO_SOURCE = "-"
_CODE_OF = {source: code for code, source in SOURCE_CODES.items()}
PROVENANCED = [c for c in ATTRIBUTE_COLUMNS if c != "id_number"]

# The column of the joined frame that holds a source's value of an attribute (civil's flags are unprefixed).
_PREFIX = {"police": "p_", "cdpf": "c_", "hrss": "h_", "civil": ""}
CARRIERS: dict[str, dict[str, str]] = {
    attribute: {source: _PREFIX[source] + attribute for source in sources}
    for attribute, sources in CAN_SAY.items()
}
# A column that is set exactly when the source knows the person (updated_at is required in every contract).
_KNOWS = {"police": "p_updated_at", "cdpf": "c_updated_at", "civil": "civil_batch", "hrss": "h_updated_at"}
MASTER_COLUMNS: dict[str, str] = {**ATTRIBUTE_COLUMNS, **PROVENANCE_COLUMNS}

CONFLICT_COLUMNS = _SCHEMA.conflict.columns
CONFLICT_TYPES = tuple(_SCHEMA.conflict.types or ())
ID_CHANGE_COLUMNS = _SCHEMA.id_change.columns

_CIVIL_FLAGS = {
    "dibao": ("dibao",),
    "dibao_edge": ("dibao_edge",),
    "tekun": ("tekun",),
    "orphan_support": ("orphan", "de_facto_orphan"),
}


class MergeInputError(ValueError):
    """A staged frame does not have the canonical shape the merge relies on."""


def decode_sources(code: str) -> dict[str, str | None]:
    """attribute -> source that set it, from a master row's `sources` code."""
    return {a: SOURCE_CODES.get(ch) for a, ch in zip(PROVENANCED, code, strict=True)}


def _no_id_changes() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype="string") for c in ID_CHANGE_COLUMNS})


@dataclass
class MergeResult:
    """The master file (one row per person), the conflicts queue (多元校核) and the ID changes of one merge."""

    master: pd.DataFrame
    conflicts: pd.DataFrame
    id_changes: pd.DataFrame = field(default_factory=_no_id_changes)


# -- dtypes -------------------------------------------------------------------------------------------


def coerce(series: pd.Series, kind: str) -> pd.Series:
    """Give a column its canonical dtype, whatever parquet or a hand-made frame produced."""
    if kind == "string":
        return series.astype("string")
    if kind == "date":
        return pd.to_datetime(series, errors="coerce").astype("datetime64[us]").dt.normalize()
    if kind == "timestamp":
        values = pd.to_datetime(series, errors="coerce")
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            values = values.dt.tz_convert("Asia/Shanghai").dt.tz_localize(None)
        return values.astype("datetime64[us]")
    if kind == "int":
        return pd.to_numeric(series, errors="coerce").astype("Int64")
    if kind == "float":
        return pd.to_numeric(series, errors="coerce").astype("Float64")
    if kind == "bool":
        return series.astype("boolean")
    if kind == "flag":
        return series.astype("boolean").fillna(False).astype(bool)
    raise ValueError(f"unknown column kind {kind!r}")


def empty_frame(columns: dict[str, str]) -> pd.DataFrame:
    """A zero-row frame with the canonical dtypes (a source without an accepted batch)."""
    return pd.DataFrame({name: coerce(pd.Series([], dtype=object), kind) for name, kind in columns.items()})


def canonical_columns(source: str) -> dict[str, str]:
    """The columns the merge reads from a source's staged rows: the required ones, then the optional ones."""
    return {**STAGED_COLUMNS[source], **OPTIONAL_COLUMNS.get(source, {})}


def _prepare(source: str, frame: pd.DataFrame | None) -> pd.DataFrame:
    """Check a staged frame has the canonical columns and coerce them; keep only what the merge reads."""
    columns = canonical_columns(source)
    if frame is None or (frame.empty and len(frame.columns) == 0):
        out = empty_frame(columns)
        out["_batch_id"] = pd.Series([], dtype="string")
        return out
    missing = [c for c in STAGED_COLUMNS[source] if c not in frame.columns]
    if missing:
        raise MergeInputError(
            f"staged {source} rows lack canonical column(s) {missing}; "
            f"expected {list(STAGED_COLUMNS[source])} + _batch_id"
        )
    absent = pd.Series(pd.NA, index=frame.index, dtype="object")
    out = pd.DataFrame({name: coerce(frame.get(name, absent), kind) for name, kind in columns.items()})
    batch = frame["_batch_id"] if "_batch_id" in frame.columns else pd.Series(pd.NA, index=frame.index)
    out["_batch_id"] = batch.astype("string")
    return out.reset_index(drop=True)


def _latest(frame: pd.DataFrame) -> np.ndarray:
    """Row positions, one per person: the latest updated_at wins (ties: the later row in batch order).

    Persons are told apart by `_key` (see id_keys). Only the persons with several rows (a few per
    thousand) are ordered, on integers: the frame's columns are not moved here at all.
    """
    keys = frame["_key"].to_numpy()
    several = pd.Series(keys).duplicated(keep=False).to_numpy(dtype=bool)
    if not several.any():
        return np.arange(len(frame))
    at = np.flatnonzero(several)
    stamps = frame["updated_at"].to_numpy(dtype="datetime64[us]")[at].view(np.int64)  # NaT sorts first
    ordered = at[np.lexsort((at, stamps, keys[at]))]
    last = np.append(keys[ordered][1:] != keys[ordered][:-1], True)
    return np.sort(np.concatenate([np.flatnonzero(~several), ordered[last]]))


class _NotEncodable(ValueError):
    pass


def _encode(ids: pd.Series) -> np.ndarray:
    """digits * 11 + check per ID, by Horner's rule over contiguous character positions."""
    from transforms.ids import as_arrow, char_columns, char_matrix, leading_number

    arr = as_arrow(ids)
    if arr.null_count or (len(arr) and pc.min_max(pc.binary_length(arr)).as_py() != {"min": 18, "max": 18}):
        raise _NotEncodable
    digits = char_columns(char_matrix(arr, 18)) - np.uint8(ord("0"))  # non-digits wrap above 9
    last = digits[17]
    check = np.where(last == np.uint8(ord("X") - ord("0")), np.uint8(10), last)
    if len(arr) and (digits[:17].max() > 9 or check.max() > 10):
        raise _NotEncodable
    return leading_number(digits, 17) * 11 + check


def id_keys(*columns: pd.Series) -> tuple[list[np.ndarray], bool]:
    """One int64 per ID number, equal for equal numbers across the columns; and whether it keeps their order.

    A normalised number is 17 digits and a check character: digits * 11 + check fits in int64 and sorts
    like the text, so joins, sorts and groupings run on integers instead of Arrow strings (hashing a
    million strings per join is most of a merge's time). Anything else (hand-made frames) gets codes
    of one factorisation of all the columns, which do not keep the order.
    """
    try:
        return [_encode(c) for c in columns], True
    except _NotEncodable:
        codes, _ = pd.factorize(pd.concat([c.astype("string") for c in columns], ignore_index=True))
        bounds = np.cumsum([len(c) for c in columns])[:-1]
        return [np.asarray(part, dtype=np.int64) for part in np.split(codes, bounds)], False


def _aligned(keys: np.ndarray, right: pd.DataFrame, rows: np.ndarray, prefix: str) -> pd.DataFrame:
    """A left join on `_key`: right's columns at `rows` (one per key) for each of `keys`, null where
    it has none. Found by binary search on the sorted keys, then one take per column."""
    where = np.full(len(keys), -1)  # -1: no row, a null
    if len(rows):
        found = right["_key"].to_numpy()[rows]
        order = np.argsort(found, kind="stable")
        at = np.minimum(np.searchsorted(found[order], keys), len(rows) - 1)
        where = np.where(found[order][at] == keys, rows[order][at], -1)
    body = right.drop(columns=[c for c in ("id_number", "_key") if c in right.columns])
    columns = {
        prefix + c: pd.Series(pd.api.extensions.take(body[c].array, where, allow_fill=True))
        for c in body.columns
    }
    return pd.DataFrame(columns, index=pd.RangeIndex(len(keys)))


def among(values: pd.Series, wanted: pd.Series | pd.Index) -> np.ndarray:
    """values.isin(wanted) as a bool array, through Arrow's hash set.

    pandas' isin on Arrow-backed strings walks `wanted` in Python (seconds for a million IDs).
    """
    from transforms.ids import as_arrow

    if len(values) == 0 or len(wanted) == 0:
        return np.zeros(len(values), dtype=bool)
    found = pc.is_in(as_arrow(pd.Series(values)), value_set=as_arrow(pd.Series(wanted)))
    return np.asarray(pc.fill_null(found, False).to_numpy(zero_copy_only=False), dtype=bool)


# -- ID changes (GB 11643: reissued numbers) -------------------------------------------------------------


def id_changes_of(police: pd.DataFrame | None, as_of: date) -> pd.DataFrame:
    """old_id -> new_id as police reports them (原公民身份号码 on the person's row), chains followed to the end.

    The former number is normalised like any ID (a legacy 15-digit number is upgraded); one that is not a
    valid number is left out and counted in the log. When police said different things over time the
    latest row wins. Columns: ID_CHANGE_COLUMNS + updated_at.
    """
    if police is None or "former_id_number" not in police:
        return _id_changes(_prepare("police", None), as_of)
    # only the rows that name a former number: a handful among a province's million
    return _id_changes(_prepare("police", police[police["former_id_number"].notna().to_numpy()]), as_of)


def _id_changes(prepared: pd.DataFrame, as_of: date) -> pd.DataFrame:
    from transforms.ids import normalise_ids

    rows = prepared[prepared["former_id_number"].notna()]
    if rows.empty:
        return _no_id_changes().assign(updated_at=pd.Series([], dtype="datetime64[us]"))
    former = normalise_ids(rows["former_id_number"].reset_index(drop=True), as_of)
    valid = (former["id_reason"].isna() & former["id_number"].notna()).to_numpy(dtype=bool)
    if not valid.all():
        log.warning("%d police rows carry a former ID number that is not valid; ignored", int((~valid).sum()))
    changes = pd.DataFrame(
        {
            "old_id": former["id_number"].astype("string").to_numpy(),
            "new_id": rows["id_number"].astype("string").to_numpy(),
            "source": pd.array(["police"] * len(rows), dtype="string"),
            "batch_id": rows["_batch_id"].astype("string").to_numpy(),
            "updated_at": rows["updated_at"].to_numpy(),
        }
    )[valid]
    changes = changes[(changes["old_id"] != changes["new_id"]).fillna(False).astype(bool)]
    changes = changes.sort_values(["updated_at", "new_id"], kind="stable", na_position="first")
    changes = changes.drop_duplicates("old_id", keep="last")
    # A -> B then B -> C: A's rows belong to C. A cycle is a data error: following stops where it closes.
    target = pd.Series(changes["new_id"].to_numpy(), index=changes["old_id"].to_numpy())
    new = changes["new_id"]
    for _ in range(16):
        step = new.map(target)
        go = (step.notna() & (step != changes["old_id"]) & (step != new)).fillna(False).astype(bool)
        if not go.any():
            break
        new = new.where(~go, step)
    changes["new_id"] = new.astype("string")
    return changes.sort_values("old_id", kind="stable").reset_index(drop=True)


def rekey(frame: pd.DataFrame, target: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows keyed by a replaced number moved to the new one, and the moved rows (new_id, old_id, batch)."""
    hit = among(frame["id_number"], target.index)  # a few among a million: map only those
    new = pd.Series(pd.NA, index=frame.index, dtype="string")
    if hit.any():
        new[hit] = frame.loc[hit, "id_number"].map(target).astype("string")
    hit &= new.notna().to_numpy(dtype=bool)
    moved = pd.DataFrame(
        {
            "id_number": new[hit].astype("string"),
            "old_id": frame.loc[hit, "id_number"].astype("string"),
            "batch": frame.loc[hit, "_batch_id"].astype("string"),
        }
    )
    if hit.any():  # a new id column; the other columns stay shared (no copy of the whole frame)
        frame = frame.assign(id_number=frame["id_number"].astype("string").mask(hit, new.astype("string")))
    return frame, moved


def superseded_conflicts(moved: dict[str, pd.DataFrame], changes: pd.DataFrame) -> pd.DataFrame:
    """ID_SUPERSEDED: a source still keys a person by a number police has replaced; that source fixes it."""
    police_batch = pd.Series(changes["batch_id"].to_numpy(), index=changes["old_id"].to_numpy())
    parts = []
    for source, rows in moved.items():
        if rows.empty:
            continue
        rows = rows.sort_values(["id_number", "old_id"], kind="stable").drop_duplicates("id_number")
        parts.append(
            pd.DataFrame(
                {
                    "id_number": rows["id_number"],
                    "conflict_type": "ID_SUPERSEDED",
                    "source_a": "police",
                    "value_a": rows["id_number"],
                    "source_b": source,
                    "value_b": rows["old_id"],
                    "batch_a": rows["old_id"].map(police_batch),
                    "batch_b": rows["batch"],
                    "department": source,
                }
            )
        )
    if not parts:
        return pd.DataFrame({c: pd.Series([], dtype="string") for c in CONFLICT_COLUMNS})
    return pd.concat(parts, ignore_index=True).astype("string")[list(CONFLICT_COLUMNS)]


def widen_scope(scope: pd.Series, changes: pd.DataFrame) -> pd.Series:
    """Both numbers of every ID change that touches the scope: old and new records are recomputed together."""
    scope = scope.dropna().astype("string").drop_duplicates()
    if changes.empty or scope.empty:
        return scope.reset_index(drop=True)
    for _ in range(16):
        hit = among(changes["old_id"], scope) | among(changes["new_id"], scope)
        grown = pd.concat([scope, changes["old_id"][hit], changes["new_id"][hit]]).astype("string")
        grown = grown.drop_duplicates()
        if len(grown) == len(scope):
            break
        scope = grown
    return scope.sort_values().reset_index(drop=True)


# -- delta batches -------------------------------------------------------------------------------------


def apply_deltas(source: str, parts: list[pd.DataFrame]) -> pd.DataFrame:
    """A source's current rows from its last full batch and the delta batches after it, in ledger order.

    Each delta row replaces every earlier row with the same key (DELTA_KEYS); rows of one batch keep
    their order, so the newest-updated_at rule still decides between versions inside a batch. A delta
    cannot delete: a row the department removed stays until the next full batch (departments end
    records with a status or an end date, which a delta does carry).
    """
    parts = [p for p in parts if p is not None]
    if not parts:
        return pd.DataFrame()
    if len(parts) == 1:
        return parts[0]
    frame = pd.concat(parts, ignore_index=True)
    seq = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
    kinds = canonical_columns(source)
    keys = pd.DataFrame({k: coerce(frame[k], kinds[k]) for k in DELTA_KEYS[source]})
    key = pd.util.hash_pandas_object(keys, index=False).to_numpy()
    newest = pd.Series(seq).groupby(key, sort=False).transform("max").to_numpy()
    return frame[seq == newest].reset_index(drop=True)


# -- civil ---------------------------------------------------------------------------------------------


def civil_flags(civil: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """Assistance flags per person from the civil rows in force on `as_of` (active, started, not ended)."""
    day = pd.Timestamp(as_of)
    in_force = (
        civil["active"].fillna(False).astype(bool)
        & (civil["start_date"] <= day).fillna(False).astype(bool)
        & (civil["end_date"].isna() | (civil["end_date"] >= day).fillna(False)).astype(bool)
    )
    kind = civil["assistance_type"]
    by = "_key" if "_key" in civil.columns else "id_number"  # the merge groups on integer keys
    parts = pd.DataFrame({by: civil[by]})
    for flag, types in _CIVIL_FLAGS.items():
        parts[flag] = in_force & kind.isin(types).fillna(False).astype(bool)
    low_income = in_force & kind.isin(["dibao", "dibao_edge"]).fillna(False).astype(bool)
    parts["dibao_standard"] = civil["dibao_standard"].where(low_income)
    grouped = parts.groupby(by, sort=True, observed=True)
    flags = grouped[list(_CIVIL_FLAGS)].any()
    flags["dibao_standard"] = grouped["dibao_standard"].max()
    # The civil batch the person's assistance facts rest on (any row, in force or not).
    flags["civil_batch"] = civil.groupby(by, sort=True, observed=True)["_batch_id"].max()
    return flags.reset_index()


# -- merge ---------------------------------------------------------------------------------------------


def merge_sources(
    frames: dict[str, pd.DataFrame],
    as_of: date,
    precedence: dict[str, list[str]] | None = None,
    region: str = "",
) -> MergeResult:
    """Merge each source's accepted staged rows (canonical columns + _batch_id) into the master file.

    `precedence` (attribute -> sources, first non-null wins; defaults for attributes not given) and
    `region` (the province's code: a 户籍 county outside it counts as moved out) come from settings.
    """
    order = resolve_precedence(precedence)
    unknown = sorted(set(frames) - set(SOURCES))
    if unknown:
        raise MergeInputError(f"unknown source(s) {unknown}; the merge knows {list(SOURCES)}")
    police_rows = _prepare("police", frames.get("police"))
    changes = _id_changes(police_rows, as_of)
    target = pd.Series(changes["new_id"].to_numpy(), index=changes["old_id"].to_numpy(), dtype="string")
    # police's own rows under a number it has replaced are stale; the other sources' rows follow the person
    police_rows = police_rows[~among(police_rows["id_number"], target.index)]
    moved: dict[str, pd.DataFrame] = {}
    rows: dict[str, pd.DataFrame] = {}
    for source in ("cdpf", "civil", "hrss"):
        rows[source], moved[source] = rekey(_prepare(source, frames.get(source)), target)
    rows["police"] = police_rows
    named = ("cdpf", "police", "civil", "hrss")
    keys, ordered = id_keys(*(rows[s]["id_number"] for s in named))
    for source, key in zip(named, keys, strict=True):
        rows[source] = rows[source].assign(_key=key)
    # the master's rows are cdpf's latest, by id_number; one take of cdpf's columns puts them in order
    holders = _latest(rows["cdpf"])
    if ordered:
        holders = holders[np.argsort(rows["cdpf"]["_key"].to_numpy()[holders], kind="stable")]
    else:
        numbers = rows["cdpf"]["id_number"].iloc[holders].reset_index(drop=True)
        holders = holders[numbers.sort_values(kind="stable", na_position="last").index.to_numpy()]
    cdpf = rows["cdpf"].iloc[holders]
    civil = civil_flags(rows["civil"], as_of)

    # left joins on the integer key
    m = cdpf.rename(columns=lambda c: c if c in ("id_number", "_key") else f"c_{c}").reset_index(drop=True)
    key = m["_key"].to_numpy()
    m = pd.concat(
        [
            m,
            _aligned(key, rows["police"], _latest(rows["police"]), "p_"),
            _aligned(key, civil, np.arange(len(civil)), ""),
            _aligned(key, rows["hrss"], _latest(rows["hrss"]), "h_"),
        ],
        axis=1,
    )

    values, codes = {}, np.full((len(m), len(PROVENANCED)), ord(NO_SOURCE), dtype=np.uint8)
    for i, attribute in enumerate(PROVENANCED):
        values[attribute], codes[:, i] = _pick(m, attribute, order[attribute])
    master = pd.DataFrame({"id_number": m["id_number"], **values}, index=m.index)
    master = pd.DataFrame({c: coerce(master[c], k) for c, k in ATTRIBUTE_COLUMNS.items()})
    master["sources"] = pd.Series(
        np.frombuffer(codes.tobytes(), dtype=f"S{len(PROVENANCED)}").astype(str),
        index=m.index,
        dtype="string",
    )
    master["cdpf_batch"] = m["c__batch_id"].astype("string")
    master["police_batch"] = m["p__batch_id"].astype("string")
    master["civil_batch"] = m["civil_batch"].astype("string")
    master["hrss_batch"] = m["h__batch_id"].astype("string")
    master["record_hash"] = record_hash(master)
    has_police = m["p_updated_at"].notna()

    conflicts = find_conflicts(m, order, region)
    in_master = master["id_number"]
    superseded = superseded_conflicts(moved, changes)
    superseded = superseded[among(superseded["id_number"], in_master)]
    if not superseded.empty:
        conflicts = pd.concat([conflicts, superseded], ignore_index=True)
        conflicts = conflicts.sort_values(
            ["id_number", "conflict_type", "source_a", "source_b"], kind="stable"
        ).reset_index(drop=True)
    changes = changes.loc[among(changes["new_id"], in_master), list(ID_CHANGE_COLUMNS)].reset_index(drop=True)
    log.info(
        "merged %d persons (police known for %d, civil in force for %d, hrss for %d); %d conflicts, "
        "%d ID changes",
        len(master),
        int(has_police.sum()),
        int(master[list(_CIVIL_FLAGS)].any(axis=1).sum()),
        int(m["h__batch_id"].notna().sum()),
        len(conflicts),
        len(changes),
    )
    return MergeResult(master=master, conflicts=conflicts, id_changes=changes)


def _pick(m: pd.DataFrame, attribute: str, order: list[str]) -> tuple[pd.Series, np.ndarray]:
    """First non-null value in precedence order, and the code of the source that gave it.

    A person no listed source has a value for keeps the first source that knows the person (its
    silence is the fact, e.g. police: no death date), else '-'.
    """
    value = m[CARRIERS[attribute][order[0]]]  # keeps the column's dtype; later sources fill its gaps
    code = np.full(len(m), ord(NO_SOURCE), dtype=np.uint8)
    unset = np.ones(len(m), dtype=bool)
    for source in order:
        column = m[CARRIERS[attribute][source]]
        present = column.notna().to_numpy(dtype=bool) & unset
        if source != order[0]:
            value = value.where(~present, column)
        code[present] = ord(_CODE_OF[source])
        unset &= ~present
    for source in order:
        knows = m[_KNOWS[source]].notna().to_numpy(dtype=bool) & unset
        code[knows] = ord(_CODE_OF[source])
        unset &= ~knows
    return value, code


def record_hash(master: pd.DataFrame) -> pd.Series:
    """A stable 64-bit hash of each person's attributes and their sources (signed, for SQL BIGINT).

    Batch ids are left out: a new batch that says the same things is not a change of the record.
    """
    if master.empty:
        return pd.Series([], dtype="Int64", index=master.index)
    hashed = pd.util.hash_pandas_object(master[[*ATTRIBUTE_COLUMNS, "sources"]], index=False)
    return pd.Series(hashed.to_numpy().view(np.int64), index=master.index, dtype="Int64")


# -- conflicts (多元校核) ------------------------------------------------------------------------------


def _text(series: pd.Series) -> pd.Series:
    """Render a conflict value as text (dates as YYYY-MM-DD)."""
    if pd.api.types.is_datetime64_any_dtype(series):
        return series.dt.strftime("%Y-%m-%d").astype("string")
    return series.astype("string")


def _records(
    m: pd.DataFrame,
    hit: pd.Series,
    conflict_type: str,
    source_a: str,
    value_a: pd.Series,
    batch_a: pd.Series | None,
    source_b: str,
    value_b: pd.Series,
    batch_b: pd.Series | None,
    department: str,
) -> pd.DataFrame:
    """The conflict rows of the persons hit; values (full-length or indexed by a subset) taken for them only."""
    at = m.index[hit.fillna(False).to_numpy(dtype=bool)]
    none = pd.Series(pd.NA, index=at, dtype="string")
    part: dict[str, Any] = {
        "id_number": m["id_number"].reindex(at),
        "conflict_type": conflict_type,
        "source_a": source_a,
        "value_a": _text(value_a.reindex(at)),
        "source_b": source_b,
        "value_b": _text(value_b.reindex(at)),
        "batch_a": none if batch_a is None else batch_a.reindex(at).astype("string"),
        "batch_b": none if batch_b is None else batch_b.reindex(at).astype("string"),
        "department": department,
    }
    return pd.DataFrame(part, index=at)


def find_conflicts(
    m: pd.DataFrame, order: dict[str, list[str]] | None = None, region: str = ""
) -> pd.DataFrame:
    """Conflict records from the joined sources, each for the work list of the department asked to fix it.

    Names (the side lower in the name precedence fixes it), ID-encoded birth date and sex (the source
    whose field disagrees), dead per police but active elsewhere (hrss or civil), an active certificate
    whose holder's 户籍 has left the province (cdpf).
    """
    from transforms.ids import birth_date_of, gender_of

    order = order or DEFAULT_PRECEDENCE
    ids = m["id_number"].astype("string")
    id_birth, id_gender = birth_date_of(ids), gender_of(ids)
    name_rank = {s: i for i, s in enumerate(order.get("name", []))}
    name_fixer = max(("police", "cdpf"), key=lambda s: name_rank.get(s, len(name_rank)))
    parts = [
        _records(
            m,
            m["p_name"].notna() & m["c_name"].notna() & (m["p_name"] != m["c_name"]),
            "NAME_MISMATCH",
            "police",
            m["p_name"],
            m["p__batch_id"],
            "cdpf",
            m["c_name"],
            m["c__batch_id"],
            name_fixer,
        )
    ]
    # GB 11643: digits 7-14 are the birth date, digit 17 odd = male; checked against every source that says.
    for prefix, source in (("p", "police"), ("c", "cdpf")):
        birth = m[f"{prefix}_birth_date"]
        gender = m[f"{prefix}_gender"]
        batch = m[f"{prefix}__batch_id"]
        parts.append(
            _records(
                m,
                birth.notna() & id_birth.notna() & (birth != id_birth),
                "BIRTH_MISMATCH",
                "id_number",
                id_birth,
                None,
                source,
                birth,
                batch,
                source,
            )
        )
        parts.append(
            _records(
                m,
                gender.notna() & id_gender.notna() & (gender != id_gender),
                "GENDER_MISMATCH",
                "id_number",
                id_gender,
                None,
                source,
                gender,
                batch,
                source,
            )
        )
    # texts are built for the few persons concerned only (strftime over every row costs seconds)
    dead = (m["p_hukou_status"] == "dead").fillna(False).astype(bool)
    the_dead = m.loc[dead]
    death = the_dead["p_death_date"].dt.strftime("%Y-%m-%d").astype("string")
    dead_text = ("dead" + ("," + death).fillna("")).astype("string")
    parts.append(
        _records(
            m,
            dead & (m["h_employment"] == "employed").fillna(False).astype(bool),
            "DEAD_BUT_ACTIVE",
            "police",
            dead_text,
            m["p__batch_id"],
            "hrss",
            m["h_employment"],
            m["h__batch_id"],
            "hrss",
        )
    )
    in_force = pd.Series("", index=the_dead.index, dtype="string")
    for flag in _CIVIL_FLAGS:
        in_force = in_force + pd.Series(
            np.where(the_dead[flag].fillna(False).astype(bool), flag + ",", ""), index=the_dead.index
        )
    in_force = in_force.str.rstrip(",")
    parts.append(
        _records(
            m,
            dead & (in_force != "").reindex(m.index, fill_value=False),
            "DEAD_BUT_ACTIVE",
            "police",
            dead_text,
            m["p__batch_id"],
            "civil",
            in_force,
            m["civil_batch"],
            "civil",
        )
    )
    # 户籍 moved out of the province: police says so, or its county code is another province's.
    status, county = m["p_hukou_status"], m["p_hukou_county"].astype("string")
    outside = (
        county.notna() & ~county.str.startswith(region[:2]) if region else pd.Series(False, index=m.index)
    )
    moved = (status == "moved_out").fillna(False).astype(bool) | outside.fillna(False).astype(bool)
    moved &= (m["c_cert_status"] == "active").fillna(False).astype(bool)
    parts.append(
        _records(
            m,
            moved,
            "CERT_ACTIVE_MOVED_OUT",
            "police",
            (status[moved].astype("string") + "," + county[moved].fillna("")).astype("string"),
            m["p__batch_id"],
            "cdpf",
            m["c_cert_status"],
            m["c__batch_id"],
            "cdpf",
        )
    )
    conflicts = pd.concat(parts, ignore_index=True)
    conflicts = conflicts.astype({c: "string" for c in CONFLICT_COLUMNS})
    conflicts = conflicts.sort_values(
        ["id_number", "conflict_type", "source_a", "source_b"], kind="stable"
    ).reset_index(drop=True)
    return conflicts[list(CONFLICT_COLUMNS)]


# -- incremental scope -----------------------------------------------------------------------------------


def changed_ids(source: str, before: pd.DataFrame | None, after: pd.DataFrame | None) -> pd.Series:
    """IDs whose rows in `source` differ between two snapshots (added, removed or changed), vectorised.

    Canonical facts only (lineage and batch columns left out, an absent optional column is null). Two
    snapshots with the same persons in the same row order (a 前置库 read in key order, a day without
    new or removed rows) are compared column by column; otherwise each row's facts are hashed and the
    rows whose hash the other snapshot lacks name the changed persons (for civil's several rows per
    person too: an added, removed or altered period).
    """
    from transforms.ids import as_arrow

    old, new = _prepare(source, before), _prepare(source, after)
    columns = list(canonical_columns(source))
    if as_arrow(old["id_number"]).equals(as_arrow(new["id_number"])):
        differs = np.zeros(len(new), dtype=bool)
        for column in columns:
            a, b = old[column].reset_index(drop=True), new[column].reset_index(drop=True)
            same = (a == b).fillna(False).to_numpy(dtype=bool) | (a.isna() & b.isna()).to_numpy(dtype=bool)
            differs |= ~same
        found = new["id_number"][differs]
    else:
        old_hash = pd.util.hash_pandas_object(old[columns], index=False).to_numpy()
        new_hash = pd.util.hash_pandas_object(new[columns], index=False).to_numpy()
        found = pd.concat(
            [old["id_number"][~np.isin(old_hash, new_hash)], new["id_number"][~np.isin(new_hash, old_hash)]]
        )
    return found.dropna().drop_duplicates().sort_values().reset_index(drop=True).astype("string")


def civil_crossings(civil: pd.DataFrame | None, since: date, until: date) -> pd.Series:
    """IDs whose civil assistance starts or ends between two run dates: in force changes with no new row."""
    rows = _prepare("civil", civil)
    lo, hi = pd.Timestamp(min(since, until)), pd.Timestamp(max(since, until))
    started = (rows["start_date"] > lo) & (rows["start_date"] <= hi)
    ended = (rows["end_date"] >= lo) & (rows["end_date"] < hi)
    hit = (started.fillna(False) | ended.fillna(False)).astype(bool)
    return rows.loc[hit, "id_number"].drop_duplicates().reset_index(drop=True).astype("string")


def in_scope(frames: dict[str, pd.DataFrame], scope: pd.Series) -> dict[str, pd.DataFrame]:
    """Each source's rows of the persons in scope only (what an incremental merge recomputes)."""
    wanted = scope.dropna()
    return {s: f[among(f["id_number"], wanted)] for s, f in frames.items()}
