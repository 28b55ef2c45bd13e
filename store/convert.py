"""Conversions between the merge's frames, Arrow and the store's SQL column types, done per column.

Shared by the facade (frames read back get the merge's dtypes) and the backends (the CSV that
PostgreSQL's COPY reads and writes, rows from a DBAPI cursor).
"""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa


def arrow(series: pd.Series, column: sa.Column[Any]) -> pa.Array:
    """A column as an Arrow array of the SQL column's type (for the CSV that COPY reads)."""
    kind = column.type
    if isinstance(kind, sa.Date):
        stamps = pd.to_datetime(series, errors="coerce").astype("datetime64[us]")
        return pa.Array.from_pandas(stamps).cast(pa.date32(), safe=False)
    if isinstance(kind, sa.Boolean):
        return pa.Array.from_pandas(series.astype("boolean"))
    if isinstance(kind, sa.Integer):
        return pa.Array.from_pandas(pd.to_numeric(series, errors="coerce").astype("Int64"))
    if isinstance(kind, sa.Float):
        return pa.Array.from_pandas(pd.to_numeric(series, errors="coerce").astype("Float64"))
    return pa.Array.from_pandas(series.astype("string")).cast(pa.large_string())


# SQL column type -> the Arrow type COPY ... TO output is parsed as (Boolean and Date first)
ARROW_TYPES: dict[type, pa.DataType] = {
    sa.Boolean: pa.bool_(),
    sa.Date: pa.date32(),
    sa.Integer: pa.int64(),
    sa.Float: pa.float64(),
}


def arrow_type(kind: sa.types.TypeEngine[Any]) -> pa.DataType:
    return next((t for s, t in ARROW_TYPES.items() if isinstance(kind, s)), pa.large_string())


PANDAS_TYPES = {
    pa.int64(): pd.Int64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
    pa.float64(): pd.Float64Dtype(),
    pa.large_string(): pd.StringDtype(),
}

CSV_OPTIONS = pacsv.WriteOptions(include_header=False, quoting_style="needed")


def csv_bytes(frame: pd.DataFrame, table: sa.Table) -> bytes:
    """Rows as PostgreSQL COPY CSV: every string quoted, so an unquoted empty field is exactly NULL."""
    arrays = [arrow(frame[name], table.c[name]) for name in frame.columns]
    buffer = io.BytesIO()
    pacsv.write_csv(pa.Table.from_arrays(arrays, names=list(frame.columns)), buffer, CSV_OPTIONS)
    return buffer.getvalue()


def rows_arrow(rows: list[tuple[Any, ...]], keys: list[str], table: sa.Table) -> pa.Table:
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
            arrays.append(pa.array(values, arrow_type(kind)))
    return pa.Table.from_arrays(arrays, names=keys)


def typed(frame: pd.DataFrame, table: sa.Table) -> pd.DataFrame:
    """Give a frame read back from SQL the dtypes the merge produces (dates, Int64, Float64, bools)."""
    out = {}
    for name in frame.columns:
        col = table.c[name]
        s = frame[name]
        if isinstance(col.type, sa.Date):
            out[col.name] = pd.to_datetime(s, errors="coerce").astype("datetime64[us]")
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
