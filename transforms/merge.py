"""Merge the accepted staged rows of every source into the disabled-person master file (一人一档).

One row per person with an accepted cdpf row, keyed by the normalised 18-character ID number.
The departments, what each may say and how each is read come from data: schemas/master.yaml (or the
master schema a config names) and each department's contract `merge:` block (a MergePlan). With the
shipped schema each attribute has one authoritative source (一数一源):

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from core.contracts import SourceContract, load_contract
from core.master_schema import MASTER_SCHEMA_PATH, MasterSchema, master_schema
from core.precedence import DEFAULT_PRECEDENCE as DEFAULT_PRECEDENCE
from core.precedence import PrecedenceError as PrecedenceError
from core.precedence import resolve_precedence

log = logging.getLogger(__name__)

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

# 民政 assistance types behind each flag of the assistance_periods reduction (civil_flags).
_CIVIL_FLAGS = {
    "dibao": ("dibao",),
    "dibao_edge": ("dibao_edge",),
    "tekun": ("tekun",),
    "orphan_support": ("orphan", "de_facto_orphan"),
}

# What each reduction kind (a contract's `merge.reduce`) reads besides id_number, and what it says per
# person instead of the contract's columns (None: the columns themselves, the latest row's values).
_READS = {
    "latest": ("updated_at",),
    "assistance_periods": ("assistance_type", "active", "start_date", "end_date", "dibao_standard"),
}
_SAYS: dict[str, tuple[str, ...] | None] = {
    "latest": None,
    "assistance_periods": (*_CIVIL_FLAGS, "dibao_standard"),
}


class MergePlanError(ValueError):
    """The master schema and a department's contract do not fit together."""


@dataclass(frozen=True)
class Department:
    """How the merge reads one department: its contract's `merge:` block and canonical columns."""

    name: str
    code: str  # its character in a master row's `sources`
    prefix: str  # of its columns in the joined frame
    reduce: str  # a reduction kind of _READS
    key: tuple[str, ...]  # a delta row replaces the earlier rows with this key
    staged: dict[str, str]  # canonical columns a staged frame must have -> kind, id_number first
    optional: dict[str, str]  # columns a staged frame may lack (read as null)

    @property
    def columns(self) -> dict[str, str]:
        """The columns the merge reads: the required ones, then the optional ones."""
        return {**self.staged, **self.optional}

    @property
    def says(self) -> tuple[str, ...]:
        """What the department states per person after its reduction (the attributes it may carry)."""
        return _SAYS[self.reduce] or tuple(c for c in self.columns if c != "id_number")

    @property
    def batch(self) -> str:
        """Its provenance column in the master and in the joined frame."""
        return f"{self.name}_batch"

    @property
    def knows(self) -> str:
        """A joined column set exactly when the department knows the person."""
        return self.prefix + "updated_at" if self.reduce == "latest" else self.batch


def _department(contract: SourceContract, code: str) -> Department:
    """A department from its contract (id_number first among its columns)."""
    kinds = {}
    for c in contract.columns:
        if c.type == "code":
            kinds[c.name] = "int" if all(isinstance(v, int) for v in (c.codes or {}).values()) else "string"
        else:
            kinds[c.name] = _CONTRACT_KINDS[c.type]
    kinds = dict(sorted(kinds.items(), key=lambda item: item[0] != "id_number"))
    rule = contract.merge
    lacking = [c for c in _READS[rule.reduce] if c not in kinds or c in rule.may_lack]
    if lacking:
        raise MergePlanError(
            f"{contract.path}: merge.reduce {rule.reduce} reads column(s) {lacking}, which the contract "
            "does not have (or lets a batch lack)"
        )
    return Department(
        name=contract.source,
        code=code,
        prefix=contract.join_prefix,
        reduce=rule.reduce,
        key=tuple(rule.key),
        staged={c: k for c, k in kinds.items() if c not in rule.may_lack},
        optional={c: kinds[c] for c in rule.may_lack},
    )


@dataclass(frozen=True)
class MergePlan:
    """What the merge needs, from the master schema and the contracts of the departments it names."""

    schema: MasterSchema
    departments: dict[str, Department]  # in the schema's `sources` order

    @cached_property
    def attribute_columns(self) -> dict[str, str]:
        """The key, then every attribute: column -> kind (what record_hash covers)."""
        return self.schema.attribute_columns

    @cached_property
    def master_columns(self) -> dict[str, str]:
        return {**self.schema.attribute_columns, **self.schema.provenance_columns}

    @cached_property
    def provenanced(self) -> list[str]:
        """The attributes `sources` has a character for, in order."""
        return [c for c in self.attribute_columns if c != self.schema.key.name]

    @cached_property
    def carriers(self) -> dict[str, dict[str, str]]:
        """attribute -> department -> the joined column holding that department's value."""
        return {
            attribute: {s: self.departments[s].prefix + attribute for s in sources}
            for attribute, sources in self.schema.carriers.items()
        }

    @property
    def holders(self) -> Department:
        return self.departments[self.schema.holders]

    @property
    def reporter(self) -> Department:
        """The department whose rows report reissued ID numbers."""
        return self.departments[self.schema.id_changes.source]

    @property
    def former(self) -> str:
        """The reporter's column naming a person's former ID number."""
        return self.schema.id_changes.column

    def column(self, source: str, column: str) -> str:
        """The joined frame's column of a department's value (or its batch)."""
        department = self.departments[source]
        return department.batch if column == "_batch_id" else department.prefix + column


def merge_plan(
    schema: MasterSchema | None = None, contracts: Mapping[str, SourceContract] | None = None
) -> MergePlan:
    """The plan for a master schema (default: the shipped one) and the departments' contracts (default:
    schemas/sources/<source>.yaml); fails, naming the file, when they do not fit together."""
    schema = schema or master_schema()
    code_of = {source: code for code, source in schema.source_codes.items()}
    departments = {}
    for source in schema.sources:
        contract = (contracts or {}).get(source) or load_contract(CONTRACTS_DIR / f"{source}.yaml")
        departments[source] = _department(contract, code_of[source])
    plan = MergePlan(schema, departments)
    for attribute, sources in schema.carriers.items():
        mute = [s for s in sources if attribute not in departments[s].says]
        if mute:
            raise MergePlanError(
                f"{schema.path}: attribute {attribute}: carriers {mute} do not state it "
                f"(their contracts' columns, or what their merge.reduce gives)"
            )
    joined = [schema.key.name, "_key"]
    for d in departments.values():
        joined += [d.batch, *(d.prefix + c for c in d.says)]
    clash = sorted({c for c in joined if joined.count(c) > 1})
    if clash:
        raise MergePlanError(
            f"{schema.path}: the departments' merge prefixes give column(s) {clash} twice; "
            "give each department its own `merge.prefix` in its contract"
        )
    return plan


PLAN = merge_plan()  # the shipped master schema and contracts
SOURCES = tuple(PLAN.departments)
# Canonical staged columns each source must provide, with their kinds (schemas/sources/<source>.yaml).
STAGED_COLUMNS: dict[str, dict[str, str]] = {s: d.staged for s, d in PLAN.departments.items()}
# Columns a staged frame may leave out; absent ones are read as null.
OPTIONAL_COLUMNS: dict[str, dict[str, str]] = {
    s: d.optional for s, d in PLAN.departments.items() if d.optional
}

# The master file (schemas/master.yaml): column -> kind. `record_hash` covers the attribute columns
# (not provenance).
ATTRIBUTE_COLUMNS: dict[str, str] = PLAN.attribute_columns
PROVENANCE_COLUMNS: dict[str, str] = PLAN.schema.provenance_columns

# `sources` holds one character per attribute after id_number, in ATTRIBUTE_COLUMNS order: the source
# that set it (compact on purpose: 22 more string columns per person would dominate the store writes).
SOURCE_CODES = dict(PLAN.schema.source_codes)
NO_SOURCE = "-"
PROVENANCED = PLAN.provenanced
# The column of the joined frame that holds a source's value of an attribute.
CARRIERS: dict[str, dict[str, str]] = PLAN.carriers
MASTER_COLUMNS: dict[str, str] = PLAN.master_columns

CONFLICT_COLUMNS = PLAN.schema.conflict.columns
CONFLICT_TYPES = tuple(PLAN.schema.conflict.types or ())
ID_CHANGE_COLUMNS = PLAN.schema.id_change.columns


class MergeInputError(ValueError):
    """A staged frame does not have the canonical shape the merge relies on."""


def decode_sources(code: str, plan: MergePlan = PLAN) -> dict[str, str | None]:
    """attribute -> source that set it, from a master row's `sources` code."""
    codes = plan.schema.source_codes
    return {a: codes.get(ch) for a, ch in zip(plan.provenanced, code, strict=True)}


def _no_id_changes() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype="string") for c in ID_CHANGE_COLUMNS})


@dataclass
class MergeResult:
    """The master file (one row per person), the conflicts queue (多元校核) and the ID changes of one merge."""

    master: pd.DataFrame
    conflicts: pd.DataFrame
    id_changes: pd.DataFrame = field(default_factory=_no_id_changes)


# -- dtypes -------------------------------------------------------------------------------------------

_DAY_US = 86_400_000_000
_NAT = np.iinfo(np.int64).min  # NaT's int64
_MASKED = {"int": pd.Int64Dtype(), "float": pd.Float64Dtype(), "bool": pd.BooleanDtype()}


def coerce(series: pd.Series, kind: str) -> pd.Series:
    """Give a column its canonical dtype, whatever parquet or a hand-made frame produced.

    A column already in the dtype (a staged parquet file's, a merged column's) takes one numpy pass
    or none: pandas' general conversions cost a merge several passes per column.
    """
    if kind == "date" and series.dtype == "datetime64[us]":
        stamps = series.to_numpy().view(np.int64)
        days = stamps - stamps % _DAY_US  # floor to midnight, as dt.normalize does
        days[stamps == _NAT] = _NAT
        return pd.Series(days.view("datetime64[us]"), index=series.index, name=series.name)
    if kind == "flag" and isinstance(series.dtype, (pd.BooleanDtype, np.dtype)) and series.dtype.kind == "b":
        flags = series.array.to_numpy(dtype=bool, na_value=False)
        return pd.Series(flags, index=series.index, name=series.name)
    if kind in ("int", "float", "bool") and series.dtype == _MASKED[kind]:
        return series.copy(deep=False)
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


def canonical_columns(source: str, plan: MergePlan = PLAN) -> dict[str, str]:
    """The columns the merge reads from a source's staged rows: the required ones, then the optional ones."""
    return plan.departments[source].columns


def _prepare(source: str, frame: pd.DataFrame | None, plan: MergePlan = PLAN) -> pd.DataFrame:
    """Check a staged frame has the canonical columns and coerce them; keep only what the merge reads."""
    department = plan.departments[source]
    columns = department.columns
    if frame is None or (frame.empty and len(frame.columns) == 0):
        out = empty_frame(columns)
        out["_batch_id"] = pd.Series([], dtype="string")
        return out
    missing = [c for c in department.staged if c not in frame.columns]
    if missing:
        raise MergeInputError(
            f"staged {source} rows lack canonical column(s) {missing}; "
            f"expected {list(department.staged)} + _batch_id"
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


def _aligned(keys: np.ndarray, right: pd.DataFrame, rows: np.ndarray, department: Department) -> pd.DataFrame:
    """A left join on `_key`: right's columns at `rows` (one per key) for each of `keys`, null where
    it has none, named with the department's prefix (its batch: `<source>_batch`). Found by binary
    search on the sorted keys, then one take per column."""
    where = np.full(len(keys), -1)  # -1: no row, a null
    if len(rows):
        found = right["_key"].to_numpy()[rows]
        order = np.argsort(found, kind="stable")
        at = np.minimum(np.searchsorted(found[order], keys), len(rows) - 1)
        where = np.where(found[order][at] == keys, rows[order][at], -1)
    body = right.drop(columns=[c for c in ("id_number", "_key") if c in right.columns])
    columns = {
        department.batch if c == "_batch_id" else department.prefix + c: pd.Series(
            pd.api.extensions.take(_nullable(body[c]), where, allow_fill=True)
        )
        for c in body.columns
    }
    return pd.DataFrame(columns, index=pd.RangeIndex(len(keys)))


def _nullable(column: pd.Series) -> Any:
    """A column's values in a dtype that holds a null: numpy flags (civil's) become a masked array, not
    the Python objects a take with nulls would give them (and coerce would walk)."""
    if column.dtype == bool:
        return pd.arrays.BooleanArray(column.to_numpy(), np.zeros(len(column), dtype=bool))
    return column.array


def among(values: pd.Series, wanted: pd.Series | pd.Index) -> np.ndarray:
    """values.isin(wanted) as a bool array, through Arrow's hash set.

    pandas' isin on Arrow-backed strings walks `wanted` in Python (seconds for a million IDs). The hash
    set is built from the smaller side: a few values looked up among a million (the master's numbers)
    first narrow the million to the ones that match.
    """
    from transforms.ids import as_arrow

    if len(values) == 0 or len(wanted) == 0:
        return np.zeros(len(values), dtype=bool)
    looked_up, among_them = as_arrow(pd.Series(values)), as_arrow(pd.Series(wanted))
    if len(among_them) > len(looked_up):
        among_them = among_them.filter(pc.fill_null(pc.is_in(among_them, value_set=looked_up), False))
    found = pc.is_in(looked_up, value_set=among_them)
    return np.asarray(pc.fill_null(found, False).to_numpy(zero_copy_only=False), dtype=bool)


# -- ID changes (GB 11643: reissued numbers) -------------------------------------------------------------


def id_changes_of(reported: pd.DataFrame | None, as_of: date, plan: MergePlan = PLAN) -> pd.DataFrame:
    """old_id -> new_id as the reporting department (police: 原公民身份号码 on the person's row) says,
    chains followed to the end; `reported` is that department's staged rows (schemas/master.yaml id_changes).

    The former number is normalised like any ID (a legacy 15-digit number is upgraded); one that is not a
    valid number is left out and counted in the log. When the department said different things over
    time the latest row wins. Columns: ID_CHANGE_COLUMNS + updated_at.
    """
    reporter, former = plan.reporter.name, plan.former
    if reported is None or former not in reported:
        return _id_changes(_prepare(reporter, None, plan), as_of, plan)
    # only the rows that name a former number: a handful among a province's million
    rows = reported[reported[former].notna().to_numpy()]
    return _id_changes(_prepare(reporter, rows, plan), as_of, plan)


def _id_changes(prepared: pd.DataFrame, as_of: date, plan: MergePlan = PLAN) -> pd.DataFrame:
    from transforms.ids import normalise_ids

    reporter = plan.reporter.name
    rows = prepared[prepared[plan.former].notna()]
    if rows.empty:
        return _no_id_changes().assign(updated_at=pd.Series([], dtype="datetime64[us]"))
    former = normalise_ids(rows[plan.former].reset_index(drop=True), as_of)
    valid = (former["id_reason"].isna() & former["id_number"].notna()).to_numpy(dtype=bool)
    if not valid.all():
        log.warning(
            "%d %s rows carry a former ID number that is not valid; ignored", int((~valid).sum()), reporter
        )
    changes = pd.DataFrame(
        {
            "old_id": former["id_number"].astype("string").to_numpy(),
            "new_id": rows["id_number"].astype("string").to_numpy(),
            "source": pd.array([reporter] * len(rows), dtype="string"),
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


def superseded_conflicts(
    moved: dict[str, pd.DataFrame], changes: pd.DataFrame, reporter: str = PLAN.reporter.name
) -> pd.DataFrame:
    """ID_SUPERSEDED: a source still keys a person by a number the reporter (police) has replaced; that
    source fixes it."""
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
                    "source_a": reporter,
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


def apply_deltas(source: str, parts: list[pd.DataFrame], plan: MergePlan = PLAN) -> pd.DataFrame:
    """A source's current rows from its last full batch and the delta batches after it, in ledger order.

    Each delta row replaces every earlier row with the same key (its contract's `merge.key`); rows of one batch keep
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
    department = plan.departments[source]
    keys = pd.DataFrame({k: coerce(frame[k], department.columns[k]) for k in department.key})
    key = pd.util.hash_pandas_object(keys, index=False).to_numpy()
    newest = pd.Series(seq).groupby(key, sort=False).transform("max").to_numpy()
    return frame[seq == newest].reset_index(drop=True)


# -- civil ---------------------------------------------------------------------------------------------


def civil_flags(civil: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """Assistance flags per person from the civil rows in force on `as_of` (active, started, not ended),
    and the batch they rest on (`_batch_id`): the assistance_periods reduction."""
    day = pd.Timestamp(as_of)
    in_force = (
        civil["active"].fillna(False).astype(bool)
        & (civil["start_date"] <= day).fillna(False).astype(bool)
        & (civil["end_date"].isna() | (civil["end_date"] >= day).fillna(False)).astype(bool)
    )
    kind = civil["assistance_type"]
    by = "_key" if "_key" in civil.columns else "id_number"  # the merge groups on integer keys
    # grouped by numpy over factorised keys (in key order, a missing key dropped): a pandas groupby
    # of several aggregations costs a merge more than everything else civil takes
    codes, keys = pd.factorize(civil[by], sort=True)
    grouped = codes >= 0
    size = len(keys)
    flags: dict[str, Any] = {by: pd.Series(keys, copy=False).reset_index(drop=True)}
    for flag, types in _CIVIL_FLAGS.items():
        said = in_force & kind.isin(types).fillna(False).astype(bool)
        flags[flag] = np.bincount(codes[grouped & said.to_numpy(dtype=bool)], minlength=size) > 0
    low_income = in_force & kind.isin(["dibao", "dibao_edge"]).fillna(False).astype(bool)
    standard = civil["dibao_standard"]
    values = standard.to_numpy(dtype=float, na_value=np.nan)
    use = grouped & low_income.to_numpy(dtype=bool) & ~np.isnan(values)
    highest = np.full(size, -np.inf)
    np.maximum.at(highest, codes[use], values[use])
    highest[np.bincount(codes[use], minlength=size) == 0] = np.nan
    flags["dibao_standard"] = pd.Series(highest).astype(standard.dtype)
    # The civil batch the person's assistance facts rest on (any row, in force or not): the greatest.
    batch_codes, batches = pd.factorize(civil["_batch_id"], sort=True)
    latest = np.full(size, -1)
    np.maximum.at(latest, codes[grouped], batch_codes[grouped])
    flags["_batch_id"] = pd.Series(batches.take(latest, allow_fill=True)).astype(civil["_batch_id"].dtype)
    return pd.DataFrame(flags)


# -- merge ---------------------------------------------------------------------------------------------


def merge_sources(
    frames: dict[str, pd.DataFrame],
    as_of: date,
    precedence: dict[str, list[str]] | None = None,
    region: str = "",
    plan: MergePlan = PLAN,
) -> MergeResult:
    """Merge each source's accepted staged rows (canonical columns + _batch_id) into the master file.

    `precedence` (attribute -> sources, first non-null wins; defaults for attributes not given) and
    `region` (the province's code: a 户籍 county outside it counts as moved out) come from settings;
    `plan` says which departments there are and how each is read (the configured master schema and
    contracts; default the shipped ones).
    """
    from transforms.ids import arrow_to_series, strings_from_chars

    order = resolve_precedence(precedence, schema=plan.schema)
    unknown = sorted(set(frames) - set(plan.departments))
    if unknown:
        raise MergeInputError(f"unknown source(s) {unknown}; the merge knows {list(plan.departments)}")
    reporter, holders = plan.reporter.name, plan.holders.name
    reported = _prepare(reporter, frames.get(reporter), plan)
    changes = _id_changes(reported, as_of, plan)
    target = pd.Series(changes["new_id"].to_numpy(), index=changes["old_id"].to_numpy(), dtype="string")
    moved: dict[str, pd.DataFrame] = {}
    rows: dict[str, pd.DataFrame] = {}
    for source in plan.departments:
        if source == reporter:
            # the reporter's own rows under a number it has replaced are stale; the others follow the person
            rows[source] = reported[~among(reported["id_number"], target.index)]
        else:
            rows[source], moved[source] = rekey(_prepare(source, frames.get(source), plan), target)
    keys, ordered = id_keys(*(rows[s]["id_number"] for s in plan.departments))
    for source, key in zip(plan.departments, keys, strict=True):
        rows[source] = rows[source].assign(_key=key)
    # the master's rows are the holders' latest, by id_number; one take of their columns puts them in order
    first = _latest(rows[holders])
    if ordered:
        first = first[np.argsort(rows[holders]["_key"].to_numpy()[first], kind="stable")]
    else:
        numbers = rows[holders]["id_number"].iloc[first].reset_index(drop=True)
        first = first[numbers.sort_values(kind="stable", na_position="last").index.to_numpy()]
    held = rows[holders].iloc[first]

    # left joins on the integer key, one department after the other
    prefix = plan.holders.prefix
    m = held.rename(
        columns=lambda c: (
            plan.holders.batch if c == "_batch_id" else c if c in ("id_number", "_key") else prefix + c
        )
    ).reset_index(drop=True)
    key = m["_key"].to_numpy()
    joined = [m]
    for source, department in plan.departments.items():
        if source == holders:
            continue
        if department.reduce == "assistance_periods":
            said, at = civil_flags(rows[source], as_of), None
        else:
            said, at = rows[source], _latest(rows[source])
        joined.append(_aligned(key, said, np.arange(len(said)) if at is None else at, department))
    m = pd.concat(joined, axis=1)

    values, codes = (
        {"id_number": m["id_number"]},
        np.full((len(m), len(plan.provenanced)), ord(NO_SOURCE), np.uint8),
    )
    knows = {s: m[d.knows].notna().to_numpy(dtype=bool) for s, d in plan.departments.items()}
    for i, attribute in enumerate(plan.provenanced):
        values[attribute], codes[:, i] = _pick(m, attribute, order[attribute], knows, plan)
    # one frame built once: each construction copies the numpy-backed columns into blocks
    columns = {c: coerce(values[c], k) for c, k in plan.attribute_columns.items()}
    columns["sources"] = arrow_to_series(strings_from_chars(codes, np.ones(len(m), dtype=bool)), m.index)
    for department in plan.departments.values():
        columns[department.batch] = m[department.batch].astype("string")
    master = pd.DataFrame(columns, index=m.index)
    master["record_hash"] = record_hash(master, plan)

    conflicts = find_conflicts(m, order, region, plan)
    in_master = master["id_number"]
    superseded = superseded_conflicts(moved, changes, reporter)
    superseded = superseded[among(superseded["id_number"], in_master)]
    if not superseded.empty:
        conflicts = pd.concat([conflicts, superseded], ignore_index=True)
        conflicts = conflicts.sort_values(
            ["id_number", "conflict_type", "source_a", "source_b"], kind="stable"
        ).reset_index(drop=True)
    changes = changes.loc[among(changes["new_id"], in_master), list(ID_CHANGE_COLUMNS)].reset_index(drop=True)
    known = ", ".join(f"{s} {int(m[d.knows].notna().sum())}" for s, d in plan.departments.items())
    log.info(
        "merged %d persons (known to %s); %d conflicts, %d ID changes",
        len(master),
        known,
        len(conflicts),
        len(changes),
    )
    return MergeResult(master=master, conflicts=conflicts, id_changes=changes)


def _pick(
    m: pd.DataFrame,
    attribute: str,
    order: list[str],
    knows: dict[str, np.ndarray],
    plan: MergePlan = PLAN,
) -> tuple[pd.Series, np.ndarray]:
    """First non-null value in precedence order, and the code of the source that gave it.

    A person no listed source has a value for keeps the first source that knows the person (its
    silence is the fact, e.g. police: no death date), else '-'. `knows`: department -> whether it
    knows each person (its `knows` column set), computed once for every attribute.
    """
    carriers = plan.carriers[attribute]
    value = m[carriers[order[0]]]  # keeps the column's dtype; later sources fill its gaps
    code = np.full(len(m), ord(NO_SOURCE), dtype=np.uint8)
    unset = np.ones(len(m), dtype=bool)
    for source in order:
        column = m[carriers[source]]
        present = column.notna().to_numpy(dtype=bool) & unset
        if source != order[0]:
            value = value.where(~present, column)
        code[present] = ord(plan.departments[source].code)
        unset &= ~present
    for source in order:
        known = knows[source] & unset
        code[known] = ord(plan.departments[source].code)
        unset &= ~known
    return value, code


def record_hash(master: pd.DataFrame, plan: MergePlan = PLAN) -> pd.Series:
    """A stable 64-bit hash of each person's attributes and their sources (signed, for SQL BIGINT).

    Batch ids are left out: a new batch that says the same things is not a change of the record. The
    values are pandas' hash_pandas_object (transforms/hashing.py computes them faster).
    """
    from transforms.hashing import row_hashes

    if master.empty:
        return pd.Series([], dtype="Int64", index=master.index)
    hashed = row_hashes(master[[*plan.attribute_columns, "sources"]])
    return pd.Series(hashed.view(np.int64), index=master.index, dtype="Int64")


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
    m: pd.DataFrame, order: dict[str, list[str]] | None = None, region: str = "", plan: MergePlan = PLAN
) -> pd.DataFrame:
    """Conflict records from the joined sources, each for the work list of the department asked to fix it.

    Names (the side lower in the name precedence fixes it), ID-encoded birth date and sex (the source
    whose field disagrees), dead per the 户籍 department but employed or assisted per the departments
    that say so, an active certificate whose holder's 户籍 has left the province (the certificate's
    department fixes it). Which department says what is the master schema's default precedence (its
    first department per attribute), so departments are named in data only. `m` is the joined frame, a
    department's columns named as `plan` says.
    """
    from transforms.ids import birth_and_gender_of

    def at(source: str, column: str) -> pd.Series:
        return m[plan.column(source, column)]

    def says(attribute: str) -> str:
        """The department the schema asks first for an attribute (not the configured order: a conflict
        is between the departments that state the fact, whoever the master believes)."""
        return plan.schema.default_precedence[attribute][0]

    order = order or DEFAULT_PRECEDENCE
    ids = m["id_number"].astype("string")
    id_birth, id_gender = birth_and_gender_of(ids)
    name_rank = {s: i for i, s in enumerate(order.get("name", []))}
    first, *others = plan.schema.default_precedence["name"]
    parts = [
        _records(
            m,
            at(first, "name").notna() & at(other, "name").notna() & (at(first, "name") != at(other, "name")),
            "NAME_MISMATCH",
            first,
            at(first, "name"),
            at(first, "_batch_id"),
            other,
            at(other, "name"),
            at(other, "_batch_id"),
            max((first, other), key=lambda s: name_rank.get(s, len(name_rank))),
        )
        for other in others
    ]
    # GB 11643: digits 7-14 are the birth date, digit 17 odd = male; checked against every source that says.
    for source in plan.carriers["birth_date"]:
        birth = at(source, "birth_date")
        gender = at(source, "gender")
        batch = at(source, "_batch_id")
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
    registry = says("hukou_status")
    assistant = says("dibao")  # its assistance periods give every flag of _CIVIL_FLAGS (civil_flags)
    dead = (at(registry, "hukou_status") == "dead").fillna(False).astype(bool)
    the_dead = m.loc[dead, [plan.column(assistant, flag) for flag in _CIVIL_FLAGS]]
    death = at(says("death_date"), "death_date")[dead].dt.strftime("%Y-%m-%d").astype("string")
    dead_text = ("dead" + ("," + death).fillna("")).astype("string")
    employer = says("employment")
    parts.append(
        _records(
            m,
            dead & (at(employer, "employment") == "employed").fillna(False).astype(bool),
            "DEAD_BUT_ACTIVE",
            registry,
            dead_text,
            at(registry, "_batch_id"),
            employer,
            at(employer, "employment"),
            at(employer, "_batch_id"),
            employer,
        )
    )
    in_force = pd.Series("", index=the_dead.index, dtype="string")
    for flag in _CIVIL_FLAGS:
        in_force = in_force + pd.Series(
            np.where(the_dead[plan.column(assistant, flag)].fillna(False).astype(bool), flag + ",", ""),
            index=the_dead.index,
        )
    in_force = in_force.str.rstrip(",")
    parts.append(
        _records(
            m,
            dead & (in_force != "").reindex(m.index, fill_value=False),
            "DEAD_BUT_ACTIVE",
            registry,
            dead_text,
            at(registry, "_batch_id"),
            assistant,
            in_force,
            at(assistant, "_batch_id"),
            assistant,
        )
    )
    # 户籍 moved out of the province: the 户籍 department says so, or its county code is another province's.
    certifier = says("cert_status")
    status = at(registry, "hukou_status")
    county = at(says("hukou_county"), "hukou_county").astype("string")
    outside = (
        county.notna() & ~county.str.startswith(region[:2]) if region else pd.Series(False, index=m.index)
    )
    moved = (status == "moved_out").fillna(False).astype(bool) | outside.fillna(False).astype(bool)
    moved &= (at(certifier, "cert_status") == "active").fillna(False).astype(bool)
    parts.append(
        _records(
            m,
            moved,
            "CERT_ACTIVE_MOVED_OUT",
            registry,
            (status[moved].astype("string") + "," + county[moved].fillna("")).astype("string"),
            at(registry, "_batch_id"),
            certifier,
            at(certifier, "cert_status"),
            at(certifier, "_batch_id"),
            certifier,
        )
    )
    conflicts = pd.concat(parts, ignore_index=True)
    conflicts = conflicts.astype({c: "string" for c in CONFLICT_COLUMNS})
    conflicts = conflicts.sort_values(
        ["id_number", "conflict_type", "source_a", "source_b"], kind="stable"
    ).reset_index(drop=True)
    return conflicts[list(CONFLICT_COLUMNS)]


# -- incremental scope -----------------------------------------------------------------------------------


def changed_ids(
    source: str, before: pd.DataFrame | None, after: pd.DataFrame | None, plan: MergePlan = PLAN
) -> pd.Series:
    """IDs whose rows in `source` differ between two snapshots (added, removed or changed), vectorised.

    Canonical facts only (lineage and batch columns left out, an absent optional column is null). Two
    snapshots with the same persons in the same row order (a 前置库 read in key order, a day without
    new or removed rows) are compared column by column; otherwise each row's facts are hashed and the
    rows whose hash the other snapshot lacks name the changed persons (for civil's several rows per
    person too: an added, removed or altered period).
    """
    from transforms.ids import as_arrow

    old, new = _prepare(source, before, plan), _prepare(source, after, plan)
    columns = list(canonical_columns(source, plan))
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


def period_crossings(
    source: str, frame: pd.DataFrame | None, since: date, until: date, plan: MergePlan = PLAN
) -> pd.Series:
    """IDs whose assistance period (a department read by periods in force, civil) starts or ends between
    two run dates: what is in force changes with no new row."""
    rows = _prepare(source, frame, plan)
    lo, hi = pd.Timestamp(min(since, until)), pd.Timestamp(max(since, until))
    started = (rows["start_date"] > lo) & (rows["start_date"] <= hi)
    ended = (rows["end_date"] >= lo) & (rows["end_date"] < hi)
    hit = (started.fillna(False) | ended.fillna(False)).astype(bool)
    return rows.loc[hit, "id_number"].drop_duplicates().reset_index(drop=True).astype("string")


def in_scope(frames: dict[str, pd.DataFrame], scope: pd.Series) -> dict[str, pd.DataFrame]:
    """Each source's rows of the persons in scope only (what an incremental merge recomputes)."""
    wanted = scope.dropna()
    return {s: f[among(f["id_number"], wanted)] for s, f in frames.items()}
