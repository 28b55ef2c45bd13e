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
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

SOURCES = ("cdpf", "police", "civil", "hrss")

# Canonical staged columns each source must provide (SPEC: "Canonical staged columns"), with their kinds.
STAGED_COLUMNS: dict[str, dict[str, str]] = {
    "cdpf": {
        "id_number": "string",
        "name": "string",
        "gender": "string",
        "birth_date": "date",
        "cert_number": "string",
        "category": "int",
        "level": "int",
        "cert_status": "string",
        "cert_issued": "date",
        "cert_valid_until": "date",
        "hukou_county": "string",
        "needs_long_term_care": "bool",
        "institutional_care": "bool",
        "updated_at": "timestamp",
    },
    "civil": {
        "id_number": "string",
        "name": "string",
        "assistance_type": "string",
        "county": "string",
        "dibao_standard": "float",
        "start_date": "date",
        "end_date": "date",
        "active": "bool",
        "updated_at": "timestamp",
    },
    "hrss": {
        "id_number": "string",
        "name": "string",
        "employment": "string",
        "pension_type": "string",
        "work_injury_care": "bool",
        "updated_at": "timestamp",
    },
    "police": {
        "id_number": "string",
        "name": "string",
        "gender": "string",
        "birth_date": "date",
        "hukou_county": "string",
        "hukou_status": "string",
        "death_date": "date",
        "updated_at": "timestamp",
    },
}

# The master file: column -> kind. `record_hash` covers the attribute columns (not provenance).
ATTRIBUTE_COLUMNS: dict[str, str] = {
    "id_number": "string",
    "name": "string",
    "gender": "string",
    "birth_date": "date",
    "hukou_county": "string",
    "hukou_status": "string",
    "death_date": "date",
    "cert_number": "string",
    "category": "int",
    "level": "int",
    "cert_status": "string",
    "cert_issued": "date",
    "cert_valid_until": "date",
    "needs_long_term_care": "flag",
    "institutional_care": "flag",
    "dibao": "flag",
    "dibao_edge": "flag",
    "tekun": "flag",
    "orphan_support": "flag",
    "dibao_standard": "float",
    "employment": "string",
    "pension_type": "string",
    "work_injury_care": "flag",
}
PROVENANCE_COLUMNS: dict[str, str] = {
    "sources": "string",
    "cdpf_batch": "string",
    "police_batch": "string",
    "civil_batch": "string",
    "hrss_batch": "string",
    "record_hash": "int",
}

# `sources` holds one character per attribute after id_number, in ATTRIBUTE_COLUMNS order: the source
# that set it (compact on purpose: 22 more string columns per person would dominate the store writes).
SOURCE_CODES = {"P": "police", "C": "cdpf", "M": "civil", "H": "hrss"}
NO_SOURCE = "-"
_CODE_OF = {source: code for code, source in SOURCE_CODES.items()}
PROVENANCED = [c for c in ATTRIBUTE_COLUMNS if c != "id_number"]

# Which source can say what (column of the joined frame), and the default precedence (一数一源):
# police for identity and 户籍, cdpf for the certificate, civil for assistance, hrss for employment.
CARRIERS: dict[str, dict[str, str]] = {
    "name": {"police": "p_name", "cdpf": "c_name", "hrss": "h_name"},
    "gender": {"police": "p_gender", "cdpf": "c_gender"},
    "birth_date": {"police": "p_birth_date", "cdpf": "c_birth_date"},
    "hukou_county": {"police": "p_hukou_county", "cdpf": "c_hukou_county"},
    "hukou_status": {"police": "p_hukou_status"},
    "death_date": {"police": "p_death_date"},
    **{
        c: {"cdpf": f"c_{c}"}
        for c in (
            "cert_number",
            "category",
            "level",
            "cert_status",
            "cert_issued",
            "cert_valid_until",
            "needs_long_term_care",
            "institutional_care",
        )
    },
    **{c: {"civil": c} for c in ("dibao", "dibao_edge", "tekun", "orphan_support", "dibao_standard")},
    **{c: {"hrss": f"h_{c}"} for c in ("employment", "pension_type", "work_injury_care")},
}
DEFAULT_PRECEDENCE: dict[str, list[str]] = {
    "name": ["police", "cdpf"],
    "gender": ["police", "cdpf"],
    "birth_date": ["police", "cdpf"],
    "hukou_county": ["police", "cdpf"],
    **{a: list(carriers) for a, carriers in CARRIERS.items() if len(carriers) == 1},
}
# A column that is set exactly when the source knows the person (updated_at is required in every contract).
_KNOWS = {"police": "p_updated_at", "cdpf": "c_updated_at", "civil": "civil_batch", "hrss": "h_updated_at"}
MASTER_COLUMNS: dict[str, str] = {**ATTRIBUTE_COLUMNS, **PROVENANCE_COLUMNS}

CONFLICT_COLUMNS = (
    "id_number",
    "conflict_type",
    "source_a",
    "value_a",
    "source_b",
    "value_b",
    "batch_a",
    "batch_b",
    "department",
)
CONFLICT_TYPES = (
    "NAME_MISMATCH",
    "BIRTH_MISMATCH",
    "GENDER_MISMATCH",
    "DEAD_BUT_ACTIVE",
    "CERT_ACTIVE_MOVED_OUT",
)

_CIVIL_FLAGS = {
    "dibao": ("dibao",),
    "dibao_edge": ("dibao_edge",),
    "tekun": ("tekun",),
    "orphan_support": ("orphan", "de_facto_orphan"),
}


class MergeInputError(ValueError):
    """A staged frame does not have the canonical shape the merge relies on."""


class PrecedenceError(ValueError):
    """The configured precedence names an unknown attribute or a source that cannot say it."""


def resolve_precedence(
    configured: dict[str, list[str]] | None, where: str = "config"
) -> dict[str, list[str]]:
    """The precedence per attribute: the defaults, overridden attribute by attribute by the config."""
    configured = configured or {}
    problems = []
    for attribute, order in configured.items():
        carriers = CARRIERS.get(attribute)
        if carriers is None:
            problems.append(f"precedence.{attribute}: unknown attribute; expected one of {sorted(CARRIERS)}")
            continue
        wrong = [s for s in order if s not in carriers]
        if wrong or not order or len(set(order)) != len(order):
            problems.append(
                f"precedence.{attribute}: {order} must list distinct sources among {sorted(carriers)}"
                + (f" ({wrong} cannot say {attribute})" if wrong else "")
            )
    if problems:
        raise PrecedenceError(f"{where}: " + "; ".join(problems))
    return {**DEFAULT_PRECEDENCE, **{a: list(o) for a, o in configured.items()}}


def decode_sources(code: str) -> dict[str, str | None]:
    """attribute -> source that set it, from a master row's `sources` code."""
    return {a: SOURCE_CODES.get(ch) for a, ch in zip(PROVENANCED, code, strict=True)}


@dataclass
class MergeResult:
    """The master file (one row per person) and the conflicts queue (多元校核) of one merge."""

    master: pd.DataFrame
    conflicts: pd.DataFrame


# -- dtypes -------------------------------------------------------------------------------------------


def coerce(series: pd.Series, kind: str) -> pd.Series:
    """Give a column its canonical dtype, whatever parquet or a hand-made frame produced."""
    if kind == "string":
        return series.astype("string")
    if kind == "date":
        return pd.to_datetime(series, errors="coerce").astype("datetime64[ns]").dt.normalize()
    if kind == "timestamp":
        values = pd.to_datetime(series, errors="coerce")
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            values = values.dt.tz_convert("Asia/Shanghai").dt.tz_localize(None)
        return values.astype("datetime64[ns]")
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


def _prepare(source: str, frame: pd.DataFrame | None) -> pd.DataFrame:
    """Check a staged frame has the canonical columns and coerce them; keep only what the merge reads."""
    columns = STAGED_COLUMNS[source]
    if frame is None or (frame.empty and len(frame.columns) == 0):
        out = empty_frame(columns)
        out["_batch_id"] = pd.Series([], dtype="string")
        return out
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MergeInputError(
            f"staged {source} rows lack canonical column(s) {missing}; expected {list(columns)} + _batch_id"
        )
    out = pd.DataFrame({name: coerce(frame[name], kind) for name, kind in columns.items()})
    batch = frame["_batch_id"] if "_batch_id" in frame.columns else pd.Series(pd.NA, index=frame.index)
    out["_batch_id"] = batch.astype("string")
    return out.reset_index(drop=True)


def _latest(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per id_number: the latest updated_at wins (ties: the later row in batch order)."""
    ordered = frame.sort_values("updated_at", kind="stable", na_position="first")
    return ordered.drop_duplicates("id_number", keep="last")


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
    parts = pd.DataFrame({"id_number": civil["id_number"]})
    for flag, types in _CIVIL_FLAGS.items():
        parts[flag] = in_force & kind.isin(types).fillna(False).astype(bool)
    low_income = in_force & kind.isin(["dibao", "dibao_edge"]).fillna(False).astype(bool)
    parts["dibao_standard"] = civil["dibao_standard"].where(low_income)
    grouped = parts.groupby("id_number", sort=True, observed=True)
    flags = grouped[list(_CIVIL_FLAGS)].any()
    flags["dibao_standard"] = grouped["dibao_standard"].max()
    # The civil batch the person's assistance facts rest on (any row, in force or not).
    flags["civil_batch"] = civil.groupby("id_number", sort=True, observed=True)["_batch_id"].max()
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
    cdpf = _latest(_prepare("cdpf", frames.get("cdpf")))
    police = _latest(_prepare("police", frames.get("police")))
    hrss = _latest(_prepare("hrss", frames.get("hrss")))
    civil_rows = _prepare("civil", frames.get("civil"))
    civil = civil_flags(civil_rows, as_of)

    m = cdpf.rename(columns=lambda c: f"c_{c}" if c != "id_number" else c)
    m = m.merge(
        police.rename(columns=lambda c: f"p_{c}" if c != "id_number" else c), on="id_number", how="left"
    )
    m = m.merge(civil, on="id_number", how="left")
    m = m.merge(
        hrss.rename(columns=lambda c: f"h_{c}" if c != "id_number" else c), on="id_number", how="left"
    )
    m = m.sort_values("id_number", kind="stable").reset_index(drop=True)

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
    log.info(
        "merged %d persons (police known for %d, civil in force for %d, hrss for %d); %d conflicts",
        len(master),
        int(has_police.sum()),
        int(master[list(_CIVIL_FLAGS)].any(axis=1).sum()),
        int(m["h__batch_id"].notna().sum()),
        len(conflicts),
    )
    return MergeResult(master=master, conflicts=conflicts)


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
    hit = hit.fillna(False).astype(bool)
    none = pd.Series(pd.NA, index=m.index, dtype="string")
    part: dict[str, Any] = {
        "id_number": m["id_number"],
        "conflict_type": conflict_type,
        "source_a": source_a,
        "value_a": _text(value_a),
        "source_b": source_b,
        "value_b": _text(value_b),
        "batch_a": none if batch_a is None else batch_a.astype("string"),
        "batch_b": none if batch_b is None else batch_b.astype("string"),
        "department": department,
    }
    return pd.DataFrame(part, index=m.index)[hit]


def find_conflicts(
    m: pd.DataFrame, order: dict[str, list[str]] | None = None, region: str = ""
) -> pd.DataFrame:
    """Conflict records from the joined sources, each for the work list of the department asked to fix it.

    Names (the side lower in the name precedence fixes it), ID-encoded birth date and sex (the source
    whose field disagrees), dead per police but active elsewhere (hrss or civil), an active certificate
    whose holder's 户籍 has left the province (cdpf).
    """
    order = order or DEFAULT_PRECEDENCE
    ids = m["id_number"].astype("string")
    id_birth = pd.to_datetime(ids.str.slice(6, 14), format="%Y%m%d", errors="coerce")
    parity = pd.to_numeric(ids.str.slice(16, 17), errors="coerce") % 2
    id_gender = pd.Series(np.where(parity == 1, "male", "female"), index=m.index, dtype="string").where(
        parity.notna()
    )
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
    dead = (m["p_hukou_status"] == "dead").fillna(False).astype(bool)
    death = m["p_death_date"].dt.strftime("%Y-%m-%d").astype("string")
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
    in_force = pd.Series("", index=m.index, dtype="string")
    for flag in _CIVIL_FLAGS:
        in_force = in_force + pd.Series(
            np.where(m[flag].fillna(False).astype(bool), flag + ",", ""), index=m.index
        )
    in_force = in_force.str.rstrip(",")
    parts.append(
        _records(
            m,
            dead & (in_force != ""),
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
    parts.append(
        _records(
            m,
            moved & (m["c_cert_status"] == "active").fillna(False).astype(bool),
            "CERT_ACTIVE_MOVED_OUT",
            "police",
            (status.astype("string") + "," + county.fillna("")).astype("string"),
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


def _row_hashes(source: str, frame: pd.DataFrame) -> pd.DataFrame:
    """id_number and a hash of each row's canonical facts (lineage and batch columns left out)."""
    prepared = _prepare(source, frame)
    facts = prepared[list(STAGED_COLUMNS[source])]
    return pd.DataFrame(
        {"id_number": facts["id_number"], "h": pd.util.hash_pandas_object(facts, index=False).to_numpy()}
    )


def changed_ids(source: str, before: pd.DataFrame | None, after: pd.DataFrame | None) -> pd.Series:
    """IDs whose rows in `source` differ between two snapshots (added, removed or changed), vectorised."""
    both = pd.concat([_row_hashes(source, before), _row_hashes(source, after)], ignore_index=True)
    differing = both.drop_duplicates(["id_number", "h"], keep=False)["id_number"]
    return differing.drop_duplicates().dropna().sort_values().reset_index(drop=True).astype("string")


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
    wanted = set(scope.dropna())
    return {s: f[f["id_number"].isin(wanted)] for s, f in frames.items()}
