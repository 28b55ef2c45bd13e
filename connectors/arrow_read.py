"""Read a 前置库 query as Arrow columns at the driver's speed, and turn chunks into the landed text.

PostgreSQL goes through ADBC (its driver streams COPY binary into Arrow), and so does an all-text
SQLite table (the usual 前置库: every column TEXT). MariaDB/MySQL, and SQLite tables with typed
columns, go through the DBAPI driver's streaming cursor (PyMySQL's SSCursor, sqlite3), rows turned
column-wise into Arrow arrays per chunk. Either way nothing holds more than about one chunk, so
memory stays flat.

The landed text must stay what the row-by-row SQLAlchemy reader landed (bookmarks and staging
compare it): text columns pass through as Arrow strings untouched; any other column goes through
SQLAlchemy's own result processor for its type and pandas' text conversion, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

Processor = Callable[[Any], Any] | None


def _adbc_batches(url: sa.URL, sql: str) -> Iterator[pa.RecordBatch]:
    import adbc_driver_postgresql.dbapi as pg

    conn = pg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            yield from cursor.fetch_record_batch()
    finally:
        conn.close()


def _sqlite_text_batches(url: sa.URL, query: sa.Select[Any], chunk_rows: int) -> Iterator[pa.Table]:
    """An all-text SQLite table through ADBC. Its driver infers each column's type from the first rows
    and fails on a column whose first rows are all NULL, so every column is read as ifnull(c, '') (text
    throughout) beside the flag c IS NULL, and the NULLs are put back from the flags: exact, no sentinel.
    """
    import adbc_driver_sqlite.dbapi as lite
    import pyarrow.compute as pc

    columns = list(query.selected_columns)
    typed = query.with_only_columns(
        *(sa.func.ifnull(c, "").label(f"v{i}") for i, c in enumerate(columns)),
        *(c.is_(None).label(f"n{i}") for i, c in enumerate(columns)),
    )
    sql = str(typed.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    missing = pa.scalar(None, pa.string())
    with lite.connect(url.database or ":memory:") as conn, conn.cursor() as cursor:
        cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(chunk_rows)})
        cursor.execute(sql)
        for batch in cursor.fetch_record_batch():
            n = len(columns)
            arrays = [
                pc.if_else(
                    pc.cast(batch.column(n + i), pa.bool_()), missing, batch.column(i).cast(pa.string())
                )
                for i in range(n)
            ]
            yield pa.Table.from_arrays(arrays, names=[c.name for c in columns])


def _dbapi_batches(engine: sa.Engine, sql: str, chunk_rows: int, names: list[str]) -> Iterator[pa.Table]:
    """Rows fetched chunk_rows at a time (PyMySQL's unbuffered cursor, sqlite3's stepping cursor) and
    turned column-wise into Arrow arrays."""
    raw = engine.raw_connection()
    try:
        driver = raw.driver_connection
        if engine.dialect.name == "sqlite":
            cursor = driver.cursor()  # type: ignore[union-attr]
        else:
            import pymysql.cursors

            cursor = driver.cursor(pymysql.cursors.SSCursor)  # type: ignore[union-attr]
        cursor.execute(sql)
        while rows := cursor.fetchmany(chunk_rows):
            yield pa.Table.from_arrays([_column(list(c)) for c in zip(*rows, strict=True)], names=names)
        cursor.close()
    finally:
        raw.close()


def _column(values: list[Any]) -> pa.Array:
    """Strings straight into an Arrow string array; other driver values (int, datetime, Decimal) by
    Arrow's inference, which gives the same Python values back in text_table."""
    try:
        return pa.array(values, type=pa.string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return pa.array(values)


def read_chunks(engine: sa.Engine, query: sa.Select[Any], chunk_rows: int) -> Iterator[pa.Table]:
    """The query's rows in chunks of exactly chunk_rows (the last one shorter), as driver-typed Arrow."""
    names = [c.name for c in query.selected_columns]
    sql = str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    backend = engine.url.get_backend_name()
    text_only = all(isinstance(c.type, sa.String) for c in query.selected_columns)
    if backend != "postgresql" and not (backend == "sqlite" and text_only):
        # already chunk_rows each; their inferred types may differ (decimal precision), so never joined
        yield from _dbapi_batches(engine, sql, chunk_rows, names)
        return
    batches = (
        _sqlite_text_batches(engine.url, query, chunk_rows)
        if backend == "sqlite"
        else (pa.Table.from_batches([b]) for b in _adbc_batches(engine.url, sql))
    )
    pending: list[pa.Table] = []
    size = 0
    for table in batches:
        pending.append(table.rename_columns(names))
        size += table.num_rows
        while size >= chunk_rows:
            whole = pa.concat_tables(pending)
            yield whole.slice(0, chunk_rows)
            rest = whole.slice(chunk_rows)
            pending, size = [rest], rest.num_rows
    if size:
        yield pa.concat_tables(pending)


def processors(engine: sa.Engine, table: sa.Table) -> dict[str, Processor]:
    """SQLAlchemy's result processor per column (e.g. SQLite's text DateTime to datetime); None if none.

    SQLite and PyMySQL hand over the very values SQLAlchemy processes; ADBC PostgreSQL already gives
    typed Arrow values (numeric as its text), which psycopg's processors are not made for.
    """
    if engine.dialect.name == "postgresql":
        return dict.fromkeys(table.c.keys())
    return {
        c.name: c.type.dialect_impl(engine.dialect).result_processor(engine.dialect, None) for c in table.c
    }


def raw_series(column: pa.ChunkedArray, processor: Processor) -> pd.Series:
    """The column as the Python values SQLAlchemy would have handed over, in a pandas Series."""
    values = column.to_pylist()
    if processor is not None:
        values = [processor(v) for v in values]
    return pd.Series(values)


def is_text(column: pa.ChunkedArray, processor: Processor) -> bool:
    return processor is None and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type))


def text_table(chunk: pa.Table, procs: dict[str, Processor], schema: pa.Schema) -> pa.Table:
    """The chunk as all-text columns, byte for byte what pandas' astype('string') of the rows gave."""
    arrays = []
    for name in chunk.column_names:
        column = chunk.column(name)
        if is_text(column, procs[name]):
            arrays.append(column.cast(pa.string()))
        else:
            text = raw_series(column, procs[name]).astype("string")
            arrays.append(pa.chunked_array([pa.array(text, type=pa.string(), from_pandas=True)]))
    return pa.Table.from_arrays(arrays, schema=schema)


def raw_frame(chunk: pa.Table, procs: dict[str, Processor]) -> pd.DataFrame:
    """The chunk as the frame pandas built from SQLAlchemy rows (incremental bookkeeping works on it)."""
    return pd.DataFrame(
        {
            name: (
                pd.Series(chunk.column(name).to_pylist(), dtype=object)
                if is_text(chunk.column(name), procs[name])
                else raw_series(chunk.column(name), procs[name])
            )
            for name in chunk.column_names
        }
    )


def text_schema(names: list[str]) -> pa.Schema:
    """All-string schema carrying the pandas metadata from_pandas wrote, so readers get StringDtype back."""
    empty = pd.DataFrame({n: pd.Series(dtype="string") for n in names})
    plain = pa.schema([(n, pa.string()) for n in names])
    return pa.Table.from_pandas(empty, schema=plain, preserve_index=False).schema
