"""The master file store (一人一档): current persons, every version, ID changes, conflicts, decisions, runs.

SQLAlchemy 2 Core over two backends: the embedded default (a SQLite file under var/) and production
PostgreSQL. The schema belongs to Alembic (hub/migrations); `MasterStore(url)` upgrades the database
to head on open, so the tables below are the models the migrations must agree with (a test compares
them).

A merge (`apply_merge`) is ONE transaction: a process killed at any point leaves the previous master
intact, and running the merge again writes what a clean run writes. Only persons whose record_hash
changed (or who are new or gone) are written: their open version is closed (valid_to = the run's
as_of) and a new version is inserted. `person`, the current master, is a view of the open versions
(migration 0002), never a second copy. "The file as of date D" is then
a query over person_version. Bulk writes go through COPY on PostgreSQL (psycopg 3) and executemany on
SQLite; large sets of keys travel in a temporary table, never in a giant IN list.

Test-only hook (documented here because it is the only environment variable the store reads):
LIANBAN_STORE_TEST_PAUSE_AT=<table name or "commit"> makes apply_merge stop after writing its first
chunk into that table (or just before the commit), touch the file named by
LIANBAN_STORE_TEST_PAUSE_MARKER and sleep up to LIANBAN_STORE_TEST_PAUSE_SECONDS (default 120). The
kill-mid-merge test SIGKILLs the process while it sleeps inside the open transaction.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import sqlalchemy as sa

# SOURCE_CODES: the merge's one character per attribute in `sources` (P police, C cdpf, M civil, H hrss)
from hub.storage import publishing
from transforms.decisions import DecisionDiff
from transforms.merge import ATTRIBUTE_COLUMNS, CONFLICT_COLUMNS, SOURCE_CODES

log = logging.getLogger(__name__)

SOURCE_ORDER = ("cdpf", "police", "civil", "hrss")
BATCH_COLUMNS = tuple(f"{s}_batch" for s in SOURCE_ORDER)
ATTRIBUTES = tuple(ATTRIBUTE_COLUMNS)
MASTER_COLUMNS = (*ATTRIBUTES, "sources", *BATCH_COLUMNS, "record_hash")
CONFLICT_KEY = ("id_number", "conflict_type", "source_a", "source_b")
CONFLICT_FIELDS = CONFLICT_COLUMNS  # the merge's conflict record, stored as it comes
CONFLICT_STATE = ("status", "first_run", "last_run", "resolved_run")
ID_CHANGE_FIELDS = ("old_id", "new_id", "source", "batch_id")

# PostgreSQL: persons written beyond which a merge refreshes the planner's statistics
ANALYZE_AFTER_ROWS = 50_000
PAUSE_AT_ENV = "LIANBAN_STORE_TEST_PAUSE_AT"
PAUSE_MARKER_ENV = "LIANBAN_STORE_TEST_PAUSE_MARKER"
PAUSE_SECONDS_ENV = "LIANBAN_STORE_TEST_PAUSE_SECONDS"

metadata = sa.MetaData()


def _master_columns(with_id: bool = True) -> list[sa.Column[Any]]:
    """The merged record's columns (MergeResult.master), shared by person and person_version."""
    cols: list[sa.Column[Any]] = [sa.Column("id_number", sa.String(18), primary_key=True)] if with_id else []
    return [
        *cols,
        sa.Column("name", sa.String(64)),
        sa.Column("gender", sa.String(8)),
        sa.Column("birth_date", sa.Date),
        sa.Column("hukou_county", sa.String(12)),
        sa.Column("hukou_status", sa.String(16)),
        sa.Column("death_date", sa.Date),
        sa.Column("cert_number", sa.String(20)),
        sa.Column("category", sa.SmallInteger),
        sa.Column("level", sa.SmallInteger),
        sa.Column("cert_status", sa.String(16)),
        sa.Column("cert_issued", sa.Date),
        sa.Column("cert_valid_until", sa.Date),
        sa.Column("needs_long_term_care", sa.Boolean, nullable=False),
        sa.Column("institutional_care", sa.Boolean, nullable=False),
        sa.Column("dibao", sa.Boolean, nullable=False),
        sa.Column("dibao_edge", sa.Boolean, nullable=False),
        sa.Column("tekun", sa.Boolean, nullable=False),
        sa.Column("orphan_support", sa.Boolean, nullable=False),
        sa.Column("dibao_standard", sa.Float),
        sa.Column("employment", sa.String(16)),
        sa.Column("pension_type", sa.String(16)),
        sa.Column("work_injury_care", sa.Boolean, nullable=False),
        sa.Column("sources", sa.String(22)),
        sa.Column("cdpf_batch", sa.String(128)),
        sa.Column("police_batch", sa.String(128)),
        sa.Column("civil_batch", sa.String(128)),
        sa.Column("hrss_batch", sa.String(128)),
        sa.Column("record_hash", sa.BigInteger),
    ]


# The current master: a view over the open, not-removed versions (migration 0002), so it is described
# apart from the tables the migrations create.
views = sa.MetaData()
person = sa.Table(
    "person",
    views,
    *_master_columns(),
    sa.Column("valid_from", sa.Date, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
)

person_version = sa.Table(
    "person_version",
    metadata,
    sa.Column("id_number", sa.String(18), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("valid_from", sa.Date, nullable=False),
    sa.Column("valid_to", sa.Date),
    sa.Column("caused_by", sa.Text),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("removed", sa.Boolean, nullable=False),
    *_master_columns(with_id=False),
)

id_change = sa.Table(
    "id_change",
    metadata,
    sa.Column("old_id", sa.String(18), primary_key=True),
    sa.Column("new_id", sa.String(18), primary_key=True),
    sa.Column("source", sa.String(16)),
    sa.Column("batch_id", sa.String(128)),
    sa.Column("first_run", sa.String(64), nullable=False),
    sa.Index("ix_id_change_new_id", "new_id"),
)

conflict = sa.Table(
    "conflict",
    metadata,
    sa.Column("id_number", sa.String(18), primary_key=True),
    sa.Column("conflict_type", sa.String(32), primary_key=True),
    sa.Column("source_a", sa.String(16), primary_key=True),
    sa.Column("source_b", sa.String(16), primary_key=True),
    sa.Column("value_a", sa.String(128)),
    sa.Column("value_b", sa.String(128)),
    sa.Column("batch_a", sa.String(128)),
    sa.Column("batch_b", sa.String(128)),
    sa.Column("department", sa.String(16)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("first_run", sa.String(64), nullable=False),
    sa.Column("last_run", sa.String(64), nullable=False),
    sa.Column("resolved_run", sa.String(64)),
    sa.Index("ix_conflict_type", "conflict_type"),
    sa.Index("ix_conflict_status", "status"),
)

# One row per change of a person's decision for a service (migration 0003): open while valid_to is
# null; run_id opened it, closed_run closed it (a retried run undoes exactly its own writes by these).
decision_version = sa.Table(
    "decision_version",
    metadata,
    sa.Column("id_number", sa.String(18), primary_key=True),
    sa.Column("service", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("valid_from", sa.Date, nullable=False),
    sa.Column("valid_to", sa.Date),
    sa.Column("period", sa.String(7), nullable=False),
    sa.Column("eligible", sa.Boolean, nullable=False),
    sa.Column("amount", sa.Float, nullable=False),
    sa.Column("reasons", sa.String(256), nullable=False),
    sa.Column("policy", sa.String(64), nullable=False),
    sa.Column("policy_version", sa.String(32), nullable=False),
    sa.Column("policy_hash", sa.String(64), nullable=False),
    sa.Column("caused_by", sa.Text),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("closed_run", sa.String(64)),
)

run = sa.Table(
    "run",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("as_of", sa.Date),
    sa.Column("persons", sa.Integer),
    sa.Column("conflicts", sa.Integer),
    sa.Column("decisions", sa.Integer),
    sa.Column("master_written_at", sa.String(32)),
    sa.Column("decisions_written_at", sa.String(32)),
    sa.Column("mode", sa.String(16)),
    sa.Column("scope", sa.Integer),
    sa.Column("written", sa.Integer),
    sa.Column("batches", sa.Text),
    sa.Column("decisions_written", sa.Integer),
    sa.Column("decisions_sha256", sa.String(64)),
)


class MergeLike(Protocol):
    """What apply_merge reads from transforms.merge.MergeResult (id_changes may be absent)."""

    master: pd.DataFrame
    conflicts: pd.DataFrame


def _written_at() -> str:
    """Audit timestamp of a write (when it happened, not what the run stands for)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _engine(url: str) -> sa.Engine:
    """An engine for the store; a SQLite file gets its directory and a few bulk-friendly pragmas."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def _test_pause(point: str) -> None:
    """The kill-mid-merge test's hook (see the module docstring); a no-op unless the variable names `point`."""
    if os.environ.get(PAUSE_AT_ENV) != point:
        return
    marker = os.environ.get(PAUSE_MARKER_ENV)
    if marker:
        Path(marker).write_text(point, encoding="utf-8")
    log.warning("master store: test pause at %s (%s is set)", point, PAUSE_AT_ENV)
    time.sleep(float(os.environ.get(PAUSE_SECONDS_ENV, "120")))


# -- conversions ------------------------------------------------------------------------------------------


def _driver_values(series: pd.Series, column: sa.Column[Any], dialect: sa.Dialect) -> np.ndarray:
    """A column as DBAPI-native Python values (None for nulls), converted vectorised.

    The executemany path hands these straight to the driver, so it does here, once per column, what
    SQLAlchemy's bind processors would do once per value.
    """
    if isinstance(column.type, sa.Date):
        days = pd.to_datetime(series, errors="coerce").astype("datetime64[ns]")
        if dialect.name == "sqlite":  # SQLAlchemy's SQLite storage format for Date: YYYY-MM-DD
            text = pa.Array.from_pandas(days).cast(pa.date32(), safe=False).cast(pa.string())
            return np.asarray(text.to_numpy(zero_copy_only=False), dtype=object)
        return days.dt.date.astype(object).where(days.notna(), None).to_numpy(dtype=object)
    if isinstance(column.type, sa.Boolean) and dialect.name == "sqlite":
        ints = series.astype("boolean").astype("Int64")
        return ints.astype(object).where(ints.notna(), None).to_numpy(dtype=object)
    return series.astype(object).where(series.notna(), None).to_numpy(dtype=object)


def _arrow(series: pd.Series, column: sa.Column[Any]) -> pa.Array:
    """A column as an Arrow array of the SQL column's type (for the CSV that COPY reads)."""
    kind = column.type
    if isinstance(kind, sa.Date):
        stamps = pd.to_datetime(series, errors="coerce").astype("datetime64[ns]")
        return pa.Array.from_pandas(stamps).cast(pa.date32(), safe=False)
    if isinstance(kind, sa.Boolean):
        return pa.Array.from_pandas(series.astype("boolean"))
    if isinstance(kind, sa.Integer):
        return pa.Array.from_pandas(pd.to_numeric(series, errors="coerce").astype("Int64"))
    if isinstance(kind, sa.Float):
        return pa.Array.from_pandas(pd.to_numeric(series, errors="coerce").astype("Float64"))
    return pa.Array.from_pandas(series.astype("string")).cast(pa.large_string())


# SQL column type -> the Arrow type COPY ... TO output is parsed as (Boolean and Date first)
_ARROW_TYPES: dict[type, pa.DataType] = {
    sa.Boolean: pa.bool_(),
    sa.Date: pa.date32(),
    sa.Integer: pa.int64(),
    sa.Float: pa.float64(),
}


def _arrow_type(kind: sa.types.TypeEngine[Any]) -> pa.DataType:
    return next((t for s, t in _ARROW_TYPES.items() if isinstance(kind, s)), pa.large_string())


_PANDAS_TYPES = {
    pa.int64(): pd.Int64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
    pa.float64(): pd.Float64Dtype(),
    pa.large_string(): pd.StringDtype(),
}

_CSV = pacsv.WriteOptions(include_header=False, quoting_style="needed")


def _csv_bytes(frame: pd.DataFrame, table: sa.Table) -> bytes:
    """Rows as PostgreSQL COPY CSV: every string quoted, so an unquoted empty field is exactly NULL."""
    arrays = [_arrow(frame[name], table.c[name]) for name in frame.columns]
    buffer = io.BytesIO()
    pacsv.write_csv(pa.Table.from_arrays(arrays, names=list(frame.columns)), buffer, _CSV)
    return buffer.getvalue()


def _rows_arrow(rows: list[tuple[Any, ...]], keys: list[str], table: sa.Table) -> pa.Table:
    """DBAPI rows as Arrow columns of the SQL types: transposed in C and converted by Arrow, never a
    pandas object column (SQLite hands dates back as YYYY-MM-DD text and flags as 0/1)."""
    arrays = []
    for key, values in zip(keys, zip(*rows, strict=True), strict=True):
        kind = table.c[key].type
        if isinstance(kind, sa.Date):
            arrays.append(pa.array(values, pa.large_string()).cast(pa.date32()))
        elif isinstance(kind, sa.Boolean):
            arrays.append(pa.array(values, pa.int64()).cast(pa.bool_()))
        else:
            arrays.append(pa.array(values, _arrow_type(kind)))
    return pa.Table.from_arrays(arrays, names=keys)


def _typed(frame: pd.DataFrame, table: sa.Table) -> pd.DataFrame:
    """Give a frame read back from SQL the dtypes the merge produces (dates, Int64, Float64, bools)."""
    out = {}
    for name in frame.columns:
        col = table.c[name]
        s = frame[name]
        if isinstance(col.type, sa.Date):
            out[col.name] = pd.to_datetime(s, errors="coerce").astype("datetime64[ns]")
        elif isinstance(col.type, sa.Boolean):
            flags = s.astype("boolean")
            out[col.name] = flags.astype(bool) if not col.nullable else flags
        elif isinstance(col.type, sa.Integer):
            out[col.name] = pd.to_numeric(s, errors="coerce").astype("Int64")
        elif isinstance(col.type, sa.Float):
            numbers = pd.to_numeric(s, errors="coerce")
            out[col.name] = numbers.astype("Float64") if col.nullable else numbers.astype("float64")
        else:
            out[col.name] = s.astype("string")
    return pd.DataFrame(out, index=frame.index)


def as_master(frame: pd.DataFrame) -> pd.DataFrame:
    """Master columns with the dtypes `read_master` gives them (an empty master when given no rows)."""
    return _typed(frame, person)


def _differs(a: pd.Series, b: pd.Series) -> pd.Series:
    """Element-wise 'not the same value', where two nulls are the same."""
    a_na, b_na = a.isna().to_numpy(), b.isna().to_numpy()
    same = a.reset_index(drop=True) == b.reset_index(drop=True)
    equal = same.fillna(False).to_numpy(dtype=bool) & ~a_na & ~b_na
    return pd.Series(~(equal | (a_na & b_na)), index=a.index)


def _isin(values: pd.Series, wanted: pd.Series) -> np.ndarray:
    """Membership as a numpy mask through Arrow's hash kernel (pandas' isin on Arrow strings loops in Python)."""
    if values.empty or wanted.empty:
        return np.zeros(len(values), dtype=bool)
    as_text = pa.Array.from_pandas(values.astype("string")).cast(pa.large_string())
    value_set = pa.Array.from_pandas(wanted.astype("string")).cast(pa.large_string())
    found = pc.is_in(as_text, value_set=value_set)
    return np.asarray(pc.fill_null(found, False).to_numpy(zero_copy_only=False), dtype=bool)


def _join_batches(parts: dict[str, tuple[pd.Series, pd.Series]], index: pd.Index) -> pd.Series:
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
    return pd.Series(joined.to_pandas(types_mapper=_PANDAS_TYPES.get), dtype="string").set_axis(index)


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
        changed = _differs(new[attr], old[attr].set_axis(index)) | (now_code != was_code)
        blamed = now_code.where(now_code.isin(list(SOURCE_CODES)), was_code)
        for code in SOURCE_CODES:
            by_code[code] |= (changed & (blamed == code)).to_numpy(dtype=bool)
    parts = {}
    for code, source in SOURCE_CODES.items():
        batch = new[f"{source}_batch"].astype("string").fillna(old[f"{source}_batch"].set_axis(index))
        parts[source] = (pd.Series(by_code[code], index=index), batch)
    blamed_batches = _join_batches(parts, index)
    # a changed hash with no attribute-level difference (provenance unknown): every batch of the record
    return blamed_batches.fillna(all_batches(new))


def all_batches(master: pd.DataFrame) -> pd.Series:
    """Every batch a record rests on, comma-joined in SOURCE_ORDER (a new person's caused_by)."""
    index = master.index
    parts = {s: (pd.Series(True, index=index), master[f"{s}_batch"].astype("string")) for s in SOURCE_ORDER}
    return _join_batches(parts, index)


# -- input frames -----------------------------------------------------------------------------------------


def _master_frame(frame: pd.DataFrame) -> pd.DataFrame:
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


def _conflict_frame(frame: pd.DataFrame) -> pd.DataFrame:
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


def _id_change_frame(frame: pd.DataFrame | None) -> pd.DataFrame:
    if frame is None or frame.empty:
        return pd.DataFrame({c: pd.Series([], dtype="string") for c in ID_CHANGE_FIELDS})
    missing = [c for c in ID_CHANGE_FIELDS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"merge result id_changes lack column(s) {missing}; expected {list(ID_CHANGE_FIELDS)}"
        )
    out = frame[list(ID_CHANGE_FIELDS)].astype("string")
    return out.drop_duplicates(["old_id", "new_id"]).reset_index(drop=True)


# -- bulk writes inside one transaction -------------------------------------------------------------------


class _Bulk:
    """Bulk writes on one open transaction: COPY on PostgreSQL (psycopg 3), executemany elsewhere."""

    def __init__(self, conn: sa.Connection, chunk_rows: int, stats: Counter[str]) -> None:
        self.conn = conn
        self.chunk_rows = chunk_rows
        self.stats = stats
        self.copy = conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"
        self.temps: list[str] = []

    def _quote(self, name: str) -> str:
        return str(self.conn.dialect.identifier_preparer.quote(name))

    def insert(self, table: sa.Table, frame: pd.DataFrame) -> None:
        """Insert every row of the frame (columns named as in the table)."""
        unknown = [c for c in frame.columns if c not in table.c]
        if unknown:
            raise ValueError(f"table {table.name} has no column(s) {unknown}")
        if frame.empty:
            return
        if self.copy:
            self._copy_in(table, frame)
        else:
            self._executemany(table, frame)

    def _copy_in(self, table: sa.Table, frame: pd.DataFrame) -> None:
        names = ", ".join(self._quote(c) for c in frame.columns)
        sql = f"COPY {self._quote(table.name)} ({names}) FROM STDIN (FORMAT csv)"
        raw = self.conn.connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(sql) as copy:  # type: ignore[union-attr]
            for start in range(0, len(frame), self.chunk_rows):
                copy.write(_csv_bytes(frame.iloc[start : start + self.chunk_rows], table))
                if start == 0:
                    _test_pause(table.name)
        self.stats["copy_statements"] += 1
        self.stats["copy_rows"] += len(frame)

    def _executemany(self, table: sa.Table, frame: pd.DataFrame) -> None:
        names = list(frame.columns)
        compiled = table.insert().compile(dialect=self.conn.dialect, column_keys=names)
        order = list(compiled.positiontup or []) if compiled.positional else names
        for start in range(0, len(frame), self.chunk_rows):
            part = frame.iloc[start : start + self.chunk_rows]
            values = [_driver_values(part[name], table.c[name], self.conn.dialect).tolist() for name in order]
            # rows as tuples zipped in C, one at a time as the driver binds them: a third cheaper than an
            # object matrix turned into row lists, and no list of rows held
            rows = zip(*values, strict=True)
            if compiled.positional:
                cursor = self.conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
                cursor.executemany(str(compiled), rows)
                cursor.close()
            else:
                self.conn.exec_driver_sql(str(compiled), [dict(zip(order, r, strict=True)) for r in rows])
            if start == 0:
                _test_pause(table.name)
        self.stats["executemany_rows"] += len(frame)

    def keys(self, name: str, frame: pd.DataFrame) -> sa.Table:
        """A temporary table holding a set of keys, for joins, deletes and updates by key."""
        columns = [sa.Column(c, sa.String(64), primary_key=True) for c in frame.columns]
        table = sa.Table(name, sa.MetaData(), *columns)
        defs = ", ".join(f"{self._quote(c)} VARCHAR(64) NOT NULL" for c in frame.columns)
        pk = ", ".join(self._quote(c) for c in frame.columns)
        if self.copy:
            self.conn.exec_driver_sql(f"CREATE TEMP TABLE {name} ({defs}, PRIMARY KEY ({pk})) ON COMMIT DROP")
        else:
            self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{name}")
            self.conn.exec_driver_sql(f"CREATE TEMP TABLE {name} ({defs}, PRIMARY KEY ({pk}))")
            self.temps.append(name)
        self.insert(table, frame.astype("string"))
        if self.copy:
            self.conn.exec_driver_sql(f"ANALYZE {name}")
        return table

    def _match(self, table: sa.Table, keys: sa.Table) -> list[sa.ColumnElement[bool]]:
        return [table.c[c.name] == c for c in keys.c]

    def in_keys(self, table: sa.Table, keys: sa.Table) -> sa.ColumnElement[bool]:
        """`key IN (SELECT key FROM keys)`: SQLite probes the table's primary key per key (a join or EXISTS may scan it)."""
        names = [c.name for c in keys.c]
        if len(names) == 1:
            return table.c[names[0]].in_(sa.select(keys.c[names[0]]))
        return sa.tuple_(*(table.c[n] for n in names)).in_(sa.select(*keys.c))

    def delete(self, table: sa.Table, keys: sa.Table) -> int:
        """DELETE the rows whose key is in `keys` (PostgreSQL: DELETE ... USING)."""
        if self.copy:
            statement = table.delete().where(*self._match(table, keys))
        else:
            statement = table.delete().where(self.in_keys(table, keys))
        return int(self.conn.execute(statement).rowcount)

    def update(
        self, table: sa.Table, keys: sa.Table, where: sa.ColumnElement[bool], values: dict[str, Any]
    ) -> int:
        """UPDATE the rows whose key is in `keys` (PostgreSQL: UPDATE ... FROM)."""
        if self.copy:
            statement = table.update().where(*self._match(table, keys), where).values(**values)
        else:
            statement = table.update().where(self.in_keys(table, keys), where).values(**values)
        return int(self.conn.execute(statement).rowcount)

    def drop_temps(self) -> None:
        for name in self.temps:
            self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{name}")
        self.temps.clear()


# -- the open decisions as a file --------------------------------------------------------------------------

OPEN_DECISIONS_KEY = b"lianban.open_decisions"
OPEN_DECISION_COLUMNS = ["id_number", "service", "eligible", "amount", "reasons"]


def _write_open_decisions(path: Path, decisions: pd.DataFrame, tag: dict[str, str]) -> None:
    """The open decisions after a run (its decisions), tagged with the store, the run and its write time."""
    table = pa.Table.from_pandas(decisions[OPEN_DECISION_COLUMNS], preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), OPEN_DECISIONS_KEY: json.dumps(tag)}
    )
    with publishing(path) as tmp:
        pq.write_table(table, tmp)


def _read_open_decisions(path: Path, tag: dict[str, str]) -> pd.DataFrame | None:
    """The file's decisions when its tag is `tag` (it mirrors the store), else None."""
    try:
        schema = pq.read_schema(path)
    except (FileNotFoundError, OSError, pa.ArrowInvalid):
        return None
    if json.loads((schema.metadata or {}).get(OPEN_DECISIONS_KEY, b"{}")) != tag:
        return None
    frame = pq.read_table(path).to_pandas(types_mapper=_PANDAS_TYPES.get)
    return frame.astype({"eligible": bool, "amount": "float64"})


# -- the store --------------------------------------------------------------------------------------------


class MasterStore:
    """The master file with its history, ID changes, conflicts queue, decisions and run records."""

    def __init__(self, url: str, chunk_rows: int = 50_000) -> None:
        from hub.migrations import upgrade

        self.url = url
        self.chunk_rows = chunk_rows
        self.engine = _engine(url)
        # Which bulk path wrote how much (tests assert the PostgreSQL path really is COPY).
        self.stats: Counter[str] = Counter()
        upgrade(self.engine)

    def _bulk(self, conn: sa.Connection) -> _Bulk:
        return _Bulk(conn, self.chunk_rows, self.stats)

    def _touch_run(
        self, conn: sa.Connection, run_id: str, values: dict[str, Any], added: dict[str, int] | None = None
    ) -> None:
        """Create or update a run record; `added` counts accumulate over retries of the same run."""
        more = {k: sa.func.coalesce(run.c[k], 0) + n for k, n in (added or {}).items()}
        updated = conn.execute(run.update().where(run.c.run_id == run_id).values(**values, **more))
        if updated.rowcount == 0:
            conn.execute(run.insert().values(run_id=run_id, **values, **(added or {})))

    # -- merge --------------------------------------------------------------------------------------------

    def apply_merge(
        self,
        result: MergeLike,
        run_id: str,
        as_of: date,
        scope: pd.Series | None = None,
        batches: dict[str, str | None] | None = None,
    ) -> dict[str, int]:
        """Write one merge into the store in ONE transaction; only changed persons are written.

        scope None: result.master is the whole master (current persons absent from it are removed).
        scope = the id_numbers recomputed: result.master holds the persons of scope still present;
        persons in scope absent from it are removed; persons outside scope are untouched.

        Conflicts of the persons in scope: found again -> open, values refreshed, last_run = this
        run (a resolved one is reopened: status open, resolved_run cleared, first_run kept); new ->
        open with first_run = last_run = this run; open but not found -> resolved (resolved_run =
        this run, last_run stays the last run that saw it). Re-running the same merge writes nothing.
        """
        started = time.perf_counter()
        master = _master_frame(result.master)
        found = _conflict_frame(result.conflicts)
        changes = _id_change_frame(getattr(result, "id_changes", None))
        scope_ids = None
        if scope is not None:
            scope_ids = pd.Series(scope, dtype="string").dropna().drop_duplicates().reset_index(drop=True)
            outside = ~_isin(master["id_number"], scope_ids)
            if outside.any():
                raise ValueError(
                    f"merge result master holds {int(outside.sum())} persons outside the scope given"
                )
            outside = ~_isin(found["id_number"], scope_ids)
            if outside.any():
                raise ValueError(
                    f"merge result conflicts concern {int(outside.sum())} rows outside the scope given"
                )
        before = dict(self.stats)
        with self.engine.begin() as conn:
            bulk = self._bulk(conn)
            self._check_forward(conn, run_id, as_of)
            scope_keys = None if scope_ids is None else bulk.keys("lb_scope", scope_ids.to_frame("id_number"))
            counts = self._write_persons(conn, bulk, master, scope_keys, run_id, as_of, batches or {})
            counts.update(self._write_conflicts(conn, bulk, found, scope_keys, run_id))
            counts["id_changes"] = self._write_id_changes(conn, bulk, changes, run_id)
            persons = int(conn.execute(sa.select(sa.func.count()).select_from(person)).scalar_one())
            if bulk.copy and counts["new"] + counts["changed"] + counts["removed"] > ANALYZE_AFTER_ROWS:
                # the next merge's key joins are planned from these statistics; autovacuum refreshes
                # them only later, and stale ones after a bulk load turn a 1% merge into full scans
                for table in (person_version, conflict):
                    conn.exec_driver_sql(f"ANALYZE {table.name}")
            self._touch_run(
                conn,
                run_id,
                {
                    "as_of": as_of,
                    "persons": persons,
                    "conflicts": counts["conflicts_open"],
                    "master_written_at": _written_at(),
                    "mode": "full" if scope_ids is None else "incremental",
                    "scope": len(master) if scope_ids is None else len(scope_ids),
                    "batches": json.dumps(batches or {}, sort_keys=True),
                },
                # a retry after a committed attempt writes nothing more: the run's total stays right
                added={"written": counts["new"] + counts["changed"] + counts["removed"]},
            )
            bulk.drop_temps()
            _test_pause("commit")
        paths = {k: v - before.get(k, 0) for k, v in self.stats.items() if v != before.get(k, 0)}
        log.info(
            "master store %s: %d new, %d changed, %d removed, %d unchanged; conflicts %d open, %d resolved; "
            "%.2f s (%s)",
            run_id,
            counts["new"],
            counts["changed"],
            counts["removed"],
            counts["unchanged"],
            counts["conflicts_open"],
            counts["conflicts_resolved"],
            time.perf_counter() - started,
            paths or "nothing written",
        )
        return counts

    def _check_forward(self, conn: sa.Connection, run_id: str, as_of: date) -> None:
        """History only moves forward: a merge as of a day before the last merge would corrupt valid_to."""
        last = conn.execute(
            sa.select(sa.func.max(run.c.as_of)).where(run.c.mode.is_not(None), run.c.run_id != run_id)
        ).scalar_one()
        if last is not None and isinstance(last, str):
            last = date.fromisoformat(last)
        if last is not None and as_of < last:
            raise ValueError(
                f"merge {run_id} is as of {as_of}, but the master already holds a merge as of {last}; "
                "history only moves forward (rebuild the store from landing to go back)"
            )

    def _write_persons(
        self,
        conn: sa.Connection,
        bulk: _Bulk,
        master: pd.DataFrame,
        scope_keys: sa.Table | None,
        run_id: str,
        as_of: date,
        batches: dict[str, str | None],
    ) -> dict[str, int]:
        state = sa.select(person.c.id_number, person.c.record_hash, person.c.version)
        if scope_keys is not None:
            state = state.where(bulk.in_keys(person, scope_keys))
        current = self._read(state, person, conn)
        plan = master[["id_number", "record_hash"]].merge(
            current, on="id_number", how="outer", suffixes=("", "_old"), indicator=True
        )
        is_new = (plan["_merge"] == "left_only").to_numpy()
        is_gone = (plan["_merge"] == "right_only").to_numpy()
        both = (plan["_merge"] == "both").to_numpy()
        is_changed = both & _differs(plan["record_hash"], plan["record_hash_old"]).to_numpy()
        counts = {
            "new": int(is_new.sum()),
            "changed": int(is_changed.sum()),
            "removed": int(is_gone.sum()),
            "unchanged": int((both & ~is_changed).sum()),
        }
        if not (is_new | is_gone | is_changed).any():
            return counts
        # version numbers: a current person's next; a returning person's after their open tombstone
        versions_now = plan.loc[is_gone | is_changed, ["id_number", "version"]]
        new_ids = plan.loc[is_new, "id_number"].astype("string")
        returning = pd.DataFrame({"id_number": pd.Series([], dtype="string"), "version": []})
        has_history = conn.execute(sa.select(sa.exists().select_from(person_version))).scalar_one()
        if len(new_ids) and has_history:
            fresh = bulk.keys("lb_new", new_ids.to_frame("id_number"))
            pv = person_version
            returning = self._read(
                sa.select(pv.c.id_number, pv.c.version).where(
                    bulk.in_keys(pv, fresh), pv.c.valid_to.is_(None), pv.c.removed == sa.true()
                ),
                pv,
                conn,
            )
        prior = pd.concat([versions_now, returning]).set_index("id_number")["version"]

        existing = prior.index.to_series().astype("string")  # rows to close, delete or compare
        keys = bulk.keys("lb_touched", existing.to_frame("id_number")) if len(existing) else None
        old = _typed(pd.DataFrame({c: pd.Series([], dtype=object) for c in MASTER_COLUMNS}), person)
        if keys is not None:
            query = sa.select(*(person.c[c] for c in MASTER_COLUMNS)).where(bulk.in_keys(person, keys))
            old = self._read(query, person, conn)
        old = old.set_index("id_number", drop=False)

        written = master[_isin(master["id_number"], plan.loc[is_new | is_changed, "id_number"])]
        written = written.set_index("id_number", drop=False)
        changed_ids = plan.loc[is_changed, "id_number"]
        cause = all_batches(written)
        if len(changed_ids):
            cause.loc[changed_ids] = caused_by(written.loc[changed_ids], old.loc[changed_ids]).to_numpy()
        gone = old.loc[plan.loc[is_gone, "id_number"]]
        knew = {
            s: (gone[f"{s}_batch"].notna(), pd.Series(batches.get(s), index=gone.index, dtype="string"))
            for s in SOURCE_ORDER
        }
        tomb_cause = _join_batches(knew, gone.index).fillna(all_batches(gone))

        def versioned(frame: pd.DataFrame, why: pd.Series, removed: bool) -> pd.DataFrame:
            out = frame.reset_index(drop=True)
            number = prior.reindex(frame.index).fillna(0).astype("int64").to_numpy() + 1
            out.insert(1, "version", number)
            out.insert(2, "valid_from", pd.Timestamp(as_of))
            out.insert(3, "valid_to", pd.NaT)
            out.insert(4, "caused_by", why.reindex(frame.index).to_numpy())
            out.insert(5, "run_id", run_id)
            out.insert(6, "removed", removed)
            return out

        parts = [versioned(written, cause, False), versioned(gone, tomb_cause, True)]
        versions = pd.concat([p for p in parts if len(p)], ignore_index=True)
        if keys is not None:
            # close the open version (a returning person's tombstone too); the person view shows the new one
            bulk.update(person_version, keys, person_version.c.valid_to.is_(None), {"valid_to": as_of})
        bulk.insert(person_version, versions)
        return counts

    def _write_conflicts(
        self, conn: sa.Connection, bulk: _Bulk, found: pd.DataFrame, scope_keys: sa.Table | None, run_id: str
    ) -> dict[str, int]:
        query = sa.select(*(conflict.c[c] for c in (*CONFLICT_FIELDS, *CONFLICT_STATE)))
        if scope_keys is not None:
            query = query.where(bulk.in_keys(conflict, scope_keys))
        stored = self._read(query, conflict, conn)
        j = found.merge(stored, on=list(CONFLICT_KEY), how="outer", suffixes=("", "_old"), indicator=True)
        seen = (j["_merge"] != "right_only").to_numpy()
        fresh = (j["_merge"] == "left_only").to_numpy()
        was_open = (j["status"] == "open").fillna(False).to_numpy(dtype=bool)
        resolving = ~seen & was_open
        values = [c for c in CONFLICT_FIELDS if c not in CONFLICT_KEY]
        final = j[list(CONFLICT_KEY)].copy()
        for c in values:
            final[c] = j[c].where(seen, j[f"{c}_old"])
        final["status"] = pd.Series(
            np.where(seen, "open", j["status"].fillna("")), index=j.index, dtype="string"
        )
        final.loc[resolving, "status"] = "resolved"
        final["first_run"] = j["first_run"].where(~fresh, run_id).astype("string")
        final["last_run"] = j["last_run"].where(~seen, run_id).astype("string")
        final["resolved_run"] = j["resolved_run"].where(~seen, pd.NA).astype("string")
        final.loc[resolving, "resolved_run"] = run_id
        touched = fresh.copy()
        for c in (*values, *CONFLICT_STATE):
            old = j[f"{c}_old"] if c in values else j[c]
            touched |= _differs(final[c], old.astype("string")).to_numpy()
        reopened = seen & ~fresh & (j["status"] == "resolved").fillna(False).to_numpy(dtype=bool)
        rows = final[touched]
        if len(rows):
            keys = bulk.keys("lb_conflict_keys", rows[list(CONFLICT_KEY)])
            bulk.delete(conflict, keys)
            bulk.insert(conflict, rows)
        open_now = conn.execute(
            sa.select(sa.func.count()).select_from(conflict).where(conflict.c.status == "open")
        ).scalar_one()
        return {
            "conflicts_open": int(open_now),
            "conflicts_new": int(fresh.sum()),
            "conflicts_reopened": int(reopened.sum()),
            "conflicts_resolved": int(resolving.sum()),
        }

    def _write_id_changes(self, conn: sa.Connection, bulk: _Bulk, changes: pd.DataFrame, run_id: str) -> int:
        if changes.empty:
            return 0
        known = self._read(sa.select(id_change.c.old_id, id_change.c.new_id), id_change, conn)
        j = changes.merge(known, on=["old_id", "new_id"], how="left", indicator=True)
        new = j.loc[j["_merge"] == "left_only", list(ID_CHANGE_FIELDS)].assign(first_run=run_id)
        bulk.insert(id_change, new)
        return len(new)

    # -- decisions ----------------------------------------------------------------------------------------

    def apply_decisions(
        self,
        decisions: pd.DataFrame,
        run_id: str,
        as_of: date,
        policy_hash: str,
        sha256: str,
        causes: Callable[[pd.Series], pd.Series] | None = None,
        open_snapshot: Path | None = None,
    ) -> tuple[DecisionDiff, dict[str, int]]:
        """Write a run's decisions as changes, in ONE transaction; returns the comparison and counts.

        `decisions`: every person x service of the run, in canonical order (transforms.decisions).
        Compared with the open versions: a new or changed decision closes the open version
        (valid_to = as_of, closed_run = this run) and opens the next; a decision no longer made (the
        person left the master, the service left the policy) only closes. Unchanged decisions are not
        touched, so a day with 1% changed decisions writes about 1% of the rows. A retried run first
        undoes what its earlier attempt committed (its versions deleted, the versions it closed
        reopened), then writes what a clean run writes. `causes(ids)`: the batches each person's facts
        came from, asked only for the persons written.

        `open_snapshot`: a Parquet file of the open decisions. After a run the open versions are
        exactly its decisions, so the file is that run's decisions, tagged with the run and its write
        time; the next run reads it instead of every open version from the database (the read that
        would otherwise cost as much as the day's writes) when the tag names the store's last
        decision run.
        """
        from transforms.decisions import diff

        with self.engine.begin() as conn:
            bulk = self._bulk(conn)
            self._check_decisions_forward(conn, run_id, as_of)
            undone = self._undo_decisions(conn, run_id)
            before = self._open_decisions(conn, run_id, open_snapshot)
            changes = diff(decisions, before)
            rows = changes.rows
            opening = rows[rows["state"] != "gone"]
            closing = int((rows["state"] != "new").sum())
            # an empty table (the first run) has nothing to close and every version is the first
            history = conn.execute(sa.select(sa.exists().select_from(decision_version))).scalar_one()
            keys = (
                bulk.keys("lb_decision_keys", rows[["id_number", "service"]])
                if history and len(rows)
                else None
            )
            if len(opening):
                self._insert_decisions(
                    conn, bulk, keys, decisions, opening, run_id, as_of, policy_hash, causes
                )
            if keys is not None:
                bulk.update(
                    decision_version,
                    keys,
                    sa.and_(decision_version.c.valid_to.is_(None), decision_version.c.run_id != run_id),
                    {"valid_to": as_of, "closed_run": run_id},
                )
            counts = {
                "opened": len(opening),
                "closed": closing,
                "unchanged": changes.unchanged,
                "undone": undone,
            }
            written_at = _written_at()
            self._touch_run(
                conn,
                run_id,
                {
                    "as_of": as_of,
                    "decisions": len(decisions),
                    "decisions_written": len(opening),
                    "decisions_sha256": sha256,
                    "decisions_written_at": written_at,
                },
            )
            bulk.drop_temps()
        if open_snapshot is not None:
            _write_open_decisions(
                open_snapshot, decisions, {"url": self.url, "run_id": run_id, "at": written_at}
            )
        log.info(
            "master store %s: decisions %d opened, %d closed, %d unchanged",
            run_id,
            counts["opened"],
            counts["closed"],
            counts["unchanged"],
        )
        return changes, counts

    def _check_decisions_forward(self, conn: sa.Connection, run_id: str, as_of: date) -> None:
        """Decision history only moves forward too; a past date is a backfill, which writes no versions."""
        last = self._last_decision_day(conn, run_id)
        if last is not None and as_of < last:
            raise ValueError(
                f"decisions of {run_id} are as of {as_of}, but the store holds decisions from {last}; "
                "a past date is a backfill (evaluate and compare, write nothing)"
            )

    @staticmethod
    def _last_decision_day(conn: sa.Connection, exclude_run: str | None = None) -> date | None:
        """The latest as_of of a run that wrote decisions (the small run table, not a scan of versions)."""
        query = sa.select(sa.func.max(run.c.as_of)).where(run.c.decisions_written_at.is_not(None))
        if exclude_run is not None:
            query = query.where(run.c.run_id != exclude_run)
        last = conn.execute(query).scalar_one()
        return date.fromisoformat(last) if isinstance(last, str) else last

    def _undo_decisions(self, conn: sa.Connection, run_id: str) -> int:
        """Take back what an earlier attempt of this run committed (nothing on a first attempt)."""
        wrote = conn.execute(
            sa.select(run.c.decisions_written_at).where(run.c.run_id == run_id)
        ).scalar_one_or_none()
        if wrote is None:
            return 0
        dv = decision_version
        deleted = conn.execute(dv.delete().where(dv.c.run_id == run_id)).rowcount
        conn.execute(dv.update().where(dv.c.closed_run == run_id).values(valid_to=None, closed_run=None))
        return int(deleted)

    def _open_decisions(self, conn: sa.Connection, run_id: str, snapshot: Path | None) -> pd.DataFrame:
        """The open versions' keys and values: from the snapshot when it mirrors the store, else read."""
        last = conn.execute(
            sa.select(run.c.run_id, run.c.decisions_written_at)
            .where(run.c.decisions_written_at.is_not(None))
            .order_by(run.c.decisions_written_at.desc(), run.c.run_id.desc())
            .limit(1)
        ).first()
        if snapshot is not None and last is not None and last[0] != run_id:
            frame = _read_open_decisions(
                snapshot, {"url": self.url, "run_id": str(last[0]), "at": str(last[1])}
            )
            if frame is not None:
                self.stats["open_decisions_from_snapshot"] += 1
                return frame
        dv = decision_version
        cols = self._columns(dv, ["id_number", "service", "eligible", "amount", "reasons"])
        query = sa.select(*cols).where(dv.c.valid_to.is_(None)).order_by(dv.c.id_number, dv.c.service)
        return self._read(query, dv, conn)

    def _insert_decisions(
        self,
        conn: sa.Connection,
        bulk: _Bulk,
        keys: sa.Table | None,
        decisions: pd.DataFrame,
        opening: pd.DataFrame,
        run_id: str,
        as_of: date,
        policy_hash: str,
        causes: Callable[[pd.Series], pd.Series] | None,
    ) -> None:
        """Insert the next version of every opened decision, after whatever history its key has
        (`keys`: every key the run touches; None when the table was empty)."""
        dv = decision_version
        rows = opening[["id_number", "service"]].merge(decisions, on=["id_number", "service"], how="left")
        out = rows[["id_number", "service"]].copy()
        out["version"] = np.int64(1)
        if keys is not None:
            last = self._read(
                sa.select(dv.c.id_number, dv.c.service, sa.func.max(dv.c.version).label("version"))
                .where(bulk.in_keys(dv, keys))
                .group_by(dv.c.id_number, dv.c.service),
                dv,
                conn,
            )
            found = out[["id_number", "service"]].merge(last, on=["id_number", "service"], how="left")
            out["version"] = found["version"].fillna(0).astype("int64").to_numpy() + 1
        out["valid_from"] = pd.Timestamp(as_of)
        for c in ("period", "eligible", "amount", "reasons", "policy", "policy_version"):
            out[c] = rows[c].to_numpy()
        out["policy_hash"] = policy_hash
        if causes is not None:
            out["caused_by"] = causes(out["id_number"]).to_numpy()
        out["run_id"] = run_id
        bulk.insert(dv, out)

    def decisions_in_force(self, day: date, services: Iterable[str] | None = None) -> pd.DataFrame:
        """The decisions in force on `day`: the version of each person x service valid then.

        Columns: id_number, service, eligible, amount, reasons, policy, policy_version, policy_hash,
        valid_from, valid_to, caused_by, run_id; ordered by id_number and service.
        """
        dv = decision_version
        wanted = ["id_number", "service", "eligible", "amount", "reasons", "policy", "policy_version"]
        wanted += ["policy_hash", "valid_from", "valid_to", "caused_by", "run_id"]
        query = sa.select(*self._columns(dv, wanted)).where(
            dv.c.valid_from <= day, sa.or_(dv.c.valid_to.is_(None), dv.c.valid_to > day)
        )
        if services is not None:
            query = query.where(dv.c.service.in_(list(services)))
        return self._read(query.order_by(dv.c.id_number, dv.c.service), dv)

    def last_decision_day(self) -> date | None:
        """The latest date decisions were written for: a run before it is a backfill."""
        with self.engine.connect() as conn:
            return self._last_decision_day(conn)

    def read_decision_versions(self, run_id: str | None = None) -> pd.DataFrame:
        """Every decision version (or those one run opened), ordered by key and version."""
        dv = decision_version
        query = sa.select(*dv.c)
        if run_id is not None:
            query = query.where(dv.c.run_id == run_id)
        return self._read(query.order_by(dv.c.id_number, dv.c.service, dv.c.version), dv)

    def master_rows(self, ids: pd.Series, columns: list[str], day: date | None = None) -> pd.DataFrame:
        """Some persons' master rows (current, or as of `day`), found through a key table, not an IN list."""
        with self.engine.begin() as conn:
            bulk = self._bulk(conn)
            keys = bulk.keys("lb_rows", ids.astype("string").drop_duplicates().to_frame("id_number"))
            if day is None:
                query = sa.select(*self._columns(person, columns)).where(bulk.in_keys(person, keys))
                frame = self._read(query, person, conn)
            else:
                pv = person_version
                query = sa.select(*self._columns(pv, columns)).where(
                    bulk.in_keys(pv, keys),
                    pv.c.valid_from <= day,
                    sa.or_(pv.c.valid_to.is_(None), pv.c.valid_to > day),
                    pv.c.removed == sa.false(),
                )
                frame = self._read(query, pv, conn)
            bulk.drop_temps()
        return frame

    # -- reads --------------------------------------------------------------------------------------------

    @staticmethod
    def _plain(column: sa.Column[Any]) -> sa.ColumnElement[Any]:
        """Select a date or flag without SQLAlchemy's per-value result processing; _typed converts in bulk."""
        if isinstance(column.type, sa.Date | sa.Boolean):
            return sa.type_coerce(column, sa.String).label(column.name)
        return column

    def _read(
        self, query: sa.Select[Any], table: sa.Table, conn: sa.Connection | None = None
    ) -> pd.DataFrame:
        """Run a select of `table`'s columns into a frame with the merge's dtypes.

        Bulk paths here too: COPY ... TO STDOUT parsed by Arrow on PostgreSQL; the DBAPI cursor in
        chunks of rows (no per-row Result objects) elsewhere.
        """
        if conn is None:
            with self.engine.connect() as own:
                return self._read(query, table, own)
        plain = query.with_only_columns(
            *(self._plain(c) if isinstance(c, sa.Column) else c for c in query.selected_columns),
            maintain_column_froms=True,
        )
        keys = [str(c.name) for c in plain.selected_columns]
        sql = str(plain.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
            return self._read_copy(conn, sql, keys, table)
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        parts = []
        try:
            cursor.execute(sql)
            while rows := cursor.fetchmany(self.chunk_rows):
                parts.append(_rows_arrow(rows, keys, table))
        finally:
            cursor.close()
        if not parts:
            return _typed(pd.DataFrame({k: pd.Series([], dtype=object) for k in keys}), table)
        arrow = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        return _typed(arrow.to_pandas(types_mapper=_PANDAS_TYPES.get, date_as_object=False), table)

    def _read_copy(self, conn: sa.Connection, sql: str, keys: list[str], table: sa.Table) -> pd.DataFrame:
        """PostgreSQL: COPY (query) TO STDOUT as CSV, parsed by Arrow with the SQL column types."""
        buffer = io.BytesIO()
        raw = conn.connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)") as copy:  # type: ignore[union-attr]
            for data in copy:
                buffer.write(data)
        self.stats["copy_out_statements"] += 1
        types = {k: _arrow_type(table.c[k].type) for k in keys}
        if buffer.tell() == 0:
            return _typed(pd.DataFrame({k: pd.Series([], dtype=object) for k in keys}), table)
        buffer.seek(0)
        parsed = pacsv.read_csv(
            buffer,
            read_options=pacsv.ReadOptions(column_names=keys, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
                true_values=["t"],
                false_values=["f"],
            ),
        )
        frame = parsed.to_pandas(types_mapper=_PANDAS_TYPES.get, date_as_object=False)
        return _typed(frame, table)

    @staticmethod
    def _columns(table: sa.Table, columns: Iterable[str]) -> list[sa.Column[Any]]:
        wanted = list(columns)
        unknown = [c for c in wanted if c not in table.c]
        if unknown:
            raise ValueError(f"table {table.name} has no column(s) {unknown}")
        return [table.c[c] for c in wanted]

    def read_master(self, columns: list[str] | None = None) -> pd.DataFrame:
        """The current master file (MASTER_COLUMNS, or the columns asked for), ordered by id_number."""
        cols = self._columns(person, MASTER_COLUMNS if columns is None else columns)
        return self._read(sa.select(*cols).order_by(person.c.id_number), person)

    def read_master_as_of(self, day: date, columns: list[str] | None = None) -> pd.DataFrame:
        """The master file as it stood on `day` (the versions valid then, tombstones excluded)."""
        pv = person_version
        cols = self._columns(pv, MASTER_COLUMNS if columns is None else columns)
        query = (
            sa.select(*cols)
            .where(
                pv.c.valid_from <= day,
                sa.or_(pv.c.valid_to.is_(None), pv.c.valid_to > day),
                pv.c.removed == sa.false(),
            )
            .order_by(pv.c.id_number)
        )
        return self._read(query, pv)

    def id_chain(self, id_number: str) -> pd.DataFrame:
        """Every ID change linked to this number, either way (old_id, new_id, source, batch_id, first_run)."""
        found = {id_number}
        rows = pd.DataFrame()
        while True:  # a few links at most: one query per hop
            ids = sorted(found)
            rows = self._read(
                sa.select(id_change).where(sa.or_(id_change.c.old_id.in_(ids), id_change.c.new_id.in_(ids))),
                id_change,
            )
            more = set(rows["old_id"].dropna()) | set(rows["new_id"].dropna())
            if more <= found:
                return rows.sort_values(["first_run", "old_id"]).reset_index(drop=True)
            found |= more

    def current_id(self, id_number: str) -> str:
        """The number a person is known by now, following old -> new ID changes."""
        chain = self.id_chain(id_number)
        now, seen = id_number, {id_number}
        step = dict(zip(chain["old_id"], chain["new_id"], strict=True))
        while now in step and step[now] not in seen:
            now = step[now]
            seen.add(now)
        return now

    def history(self, id_number: str) -> pd.DataFrame:
        """Every version of a person, across its ID changes, oldest first."""
        chain = self.id_chain(id_number)
        ids = sorted({id_number} | set(chain["old_id"]) | set(chain["new_id"]))
        pv = person_version
        cols = ["id_number", "version", "valid_from", "valid_to", "caused_by", "run_id", "removed"]
        cols += [c for c in MASTER_COLUMNS if c != "id_number"]
        query = sa.select(*self._columns(pv, cols)).where(pv.c.id_number.in_(ids))
        frame = self._read(query.order_by(pv.c.valid_from, pv.c.id_number, pv.c.version), pv)
        return frame.reset_index(drop=True)

    def current_hashes(self) -> pd.DataFrame:
        """id_number and record_hash of every current person (what an incremental merge compares)."""
        return self.read_master(["id_number", "record_hash"])

    def read_conflicts(self, status: str | None = None) -> pd.DataFrame:
        """The conflicts queue (all, or those with this status), with their lifecycle columns."""
        cols = self._columns(conflict, (*CONFLICT_FIELDS, *CONFLICT_STATE))
        query = sa.select(*cols).order_by(*(conflict.c[c] for c in CONFLICT_KEY))
        if status is not None:
            query = query.where(conflict.c.status == status)
        return self._read(query, conflict)

    def last_run_batches(self) -> dict[str, str | None] | None:
        """The batches the last merge used ({source: batch_id or None}); None before any merge."""
        with self.engine.connect() as conn:
            text = conn.execute(
                sa.select(run.c.batches)
                .where(run.c.mode.is_not(None))
                .order_by(run.c.master_written_at.desc(), run.c.run_id.desc())
                .limit(1)
            ).scalar_one_or_none()
        return None if text is None else dict(json.loads(text))

    def last_merge(self) -> dict[str, Any] | None:
        """The last merge: run_id, as_of, the batches it used and when it was written; None before any merge."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    sa.select(run.c.run_id, run.c.as_of, run.c.batches, run.c.master_written_at)
                    .where(run.c.mode.is_not(None))
                    .order_by(run.c.master_written_at.desc(), run.c.run_id.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
        if row is None:
            return None
        as_of = row["as_of"]
        return {
            "run_id": row["run_id"],
            "as_of": date.fromisoformat(as_of) if isinstance(as_of, str) else as_of,
            "batches": dict(json.loads(row["batches"] or "{}")),
            "written_at": row["master_written_at"],
        }

    def read_decisions(self, run_id: str) -> pd.DataFrame:
        """The decisions a run left in force, as the run evaluated them (period = its month).

        The versions opened by this run or an earlier one and not closed by either, where runs are
        ordered as the migration orders them (as_of, then write time); empty for an unknown run.
        """
        with self.engine.connect() as conn:
            runs = conn.execute(
                sa.select(run.c.run_id, run.c.as_of)
                .where(run.c.decisions_written_at.is_not(None))
                .order_by(run.c.as_of, run.c.decisions_written_at, run.c.run_id)
            ).all()
        names = [str(r) for r, _ in runs]
        if run_id not in names:
            return self._read(sa.select(*self._decision_columns()).where(sa.false()), decision_version)
        as_of = runs[names.index(run_id)][1]
        upto = names[: names.index(run_id) + 1]
        dv = decision_version
        query = sa.select(*self._decision_columns(f"{as_of}"[:7])).where(
            dv.c.run_id.in_(upto), sa.or_(dv.c.closed_run.is_(None), dv.c.closed_run.not_in(upto))
        )
        return self._read(query.order_by(dv.c.id_number, dv.c.service), dv)

    @staticmethod
    def _decision_columns(period: str = "") -> list[sa.ColumnElement[Any]]:
        dv = decision_version
        month = sa.literal(period, sa.String(7)).label("period")
        names = ("eligible", "amount", "reasons", "policy", "policy_version")
        return [dv.c.id_number, dv.c.service, month, *(dv.c[n] for n in names)]

    def counts(self) -> dict[str, Any]:
        """Sizes for the report: persons, open conflicts (and by type), decisions, runs."""
        with self.engine.connect() as conn:

            def count(table: sa.Table) -> int:
                return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())

            by_type = conn.execute(
                sa.select(conflict.c.conflict_type, sa.func.count())
                .where(conflict.c.status == "open")
                .group_by(conflict.c.conflict_type)
                .order_by(conflict.c.conflict_type)
            ).all()
            return {
                "persons": count(person),
                "conflicts": sum(int(n) for _, n in by_type),
                "conflicts_by_type": {str(t): int(n) for t, n in by_type},
                "decisions": int(
                    conn.execute(
                        sa.select(sa.func.count())
                        .select_from(decision_version)
                        .where(decision_version.c.valid_to.is_(None))
                    ).scalar_one()
                ),
                "runs": count(run),
            }

    def run_record(self, run_id: str) -> dict[str, Any] | None:
        """What the store knows about one run (sizes, mode, batches and write times)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(run).where(run.c.run_id == run_id)).mappings().first()
        return dict(row) if row else None

    def dispose(self) -> None:
        """Close pooled connections (tests and short-lived CLI calls)."""
        self.engine.dispose()
