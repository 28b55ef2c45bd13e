"""Read a 前置库 query as Arrow columns at the driver's speed, and turn chunks into the landed text.

PostgreSQL goes through ADBC (its driver streams COPY binary into Arrow), an all-text SQLite table
(the usual 前置库: every column TEXT) through ADBC too, an all-text MariaDB/MySQL table through
ConnectorX (the binary protocol decoded into Arrow in Rust), ordered in the hub by DuckDB. MariaDB/MySQL
and SQLite tables with typed columns go through the DBAPI driver's streaming cursor (PyMySQL's SSCursor,
sqlite3), rows turned column-wise into Arrow arrays per chunk. Either way nothing holds more than about
one chunk (the MariaDB sort: a bounded DuckDB buffer, spilled to disk beyond it), so memory stays flat.

The landed text must stay what the row-by-row SQLAlchemy reader landed (bookmarks and staging
compare it): text columns pass through as Arrow strings untouched; any other column goes through
SQLAlchemy's own result processor for its type and pandas' text conversion, as before.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, sqlite

Processor = Callable[[Any], Any] | None
MARKER = "_lianban_first"  # the SQLite query's leading-row marker column (see _sqlite_text_batches)
SORT_MEMORY = "128MB"  # DuckDB's memory for ordering a MariaDB pull in the hub; the rest spills to disk


def _adbc_batches(url: sa.URL, sql: str) -> Iterator[pa.RecordBatch]:
    import adbc_driver_postgresql.dbapi as pg

    conn = pg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            yield from cursor.fetch_record_batch()
    finally:
        conn.close()


def _sqlite_text_batches(
    url: sa.URL, query: sa.Select[Any], keys: list[str], chunk_rows: int
) -> Iterator[pa.RecordBatch]:
    """An all-text SQLite table through ADBC. Its driver infers each column's type from its first batch
    and fails on a column whose first rows are all NULL, so the query is led by one row of '' in every
    column (ordered first by a marker column), which makes every column text; that row and the marker
    are dropped here. NULLs stay NULLs and no value is rewritten.
    """
    import adbc_driver_sqlite.dbapi as lite

    names = [c.name for c in query.selected_columns]
    led = sa.union_all(  # type: ignore[var-annotated]
        sa.select(sa.literal(0).label(MARKER), *(sa.literal("").label(n) for n in names)),
        query.order_by(None).with_only_columns(sa.literal(1).label(MARKER), *query.selected_columns),
    ).order_by(*(sa.column(n) for n in [MARKER, *keys]))
    sql = str(led.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    with lite.connect(url.database or ":memory:") as conn, conn.cursor() as cursor:
        cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(chunk_rows)})
        cursor.execute(sql)
        first = True
        for batch in cursor.fetch_record_batch():
            if first:
                if batch.column(0)[0].as_py() != 0:  # the compound's ORDER BY puts it first
                    raise RuntimeError("the leading text row of the SQLite query did not come first")
                batch, first = batch.slice(1), False
            yield pa.RecordBatch.from_arrays([c.cast(pa.string()) for c in batch.columns[1:]], names=names)


def _mariadb_text_batches(
    url: sa.URL, query: sa.Select[Any], keys: list[str], chunk_rows: int, spill: Path
) -> Iterator[pa.RecordBatch]:
    """An all-text MariaDB/MySQL table through ConnectorX (binary protocol into Arrow, in Rust), ordered
    in the hub by DuckDB, out of core: MariaDB sorts a table of TEXT columns by row id and then reads
    every row back at random (a 1.32 million-row 前置库 table: about 25 s of the server's CPU), while
    the scan alone costs it about one second. The order is the query's order by, then every column,
    bytewise with NULLs first: the same rows always land in the same order, whatever the server's
    collation. DuckDB keeps at most SORT_MEMORY in memory and spills the rest under `spill`.
    """
    import connectorx as cx
    import duckdb

    names = [c.name for c in query.selected_columns]
    sql = str(query.order_by(None).compile(dialect=mysql.dialect(), compile_kwargs={"literal_binds": True}))
    uri = url.set(drivername="mysql", query={}).render_as_string(hide_password=False)
    stream = cx.read_sql(uri, sql, return_type="arrow_stream", batch_size=chunk_rows)
    order = [duckdb.ColumnExpression(n).asc().nulls_first() for n in dict.fromkeys([*keys, *names])]
    db = duckdb.connect(config={"memory_limit": SORT_MEMORY, "temp_directory": str(spill)})
    try:
        yield from db.from_arrow(stream).sort(*order).to_arrow_reader(chunk_rows)
    finally:
        db.close()
        shutil.rmtree(spill, ignore_errors=True)


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


def read_chunks(
    engine: sa.Engine, query: sa.Select[Any], keys: list[str], chunk_rows: int, spill: Path
) -> Iterator[pa.Table]:
    """The query's rows, ordered by `keys`, in chunks of exactly chunk_rows (the last one shorter), as
    driver-typed Arrow. `spill`: a private folder (created and removed here) for a sort kept out of core.

    `query` is unordered; every backend orders it by `keys`: the server (SQLite, PostgreSQL, typed
    MariaDB tables) or the hub (all-text MariaDB tables, see _mariadb_text_batches).
    """
    names = [c.name for c in query.selected_columns]
    ordered = query.order_by(*(query.selected_columns[k] for k in keys))
    backend = engine.url.get_backend_name()
    text_only = all(isinstance(c.type, sa.String) for c in query.selected_columns)
    if not text_only and backend != "postgresql":
        # already chunk_rows each; their inferred types may differ (decimal precision), so never joined
        sql = str(ordered.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
        yield from _dbapi_batches(engine, sql, chunk_rows, names)
        return
    if backend == "sqlite":
        batches = _sqlite_text_batches(engine.url, query, keys, chunk_rows)
    elif backend == "postgresql":
        sql = str(ordered.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
        batches = _adbc_batches(engine.url, sql)
    else:
        batches = _mariadb_text_batches(engine.url, query, keys, chunk_rows, spill)
    pending: list[pa.RecordBatch] = []
    size = 0
    for batch in batches:
        pending.append(batch)
        size += batch.num_rows
        while size >= chunk_rows:
            whole = pa.Table.from_batches(pending).rename_columns(names)
            yield whole.slice(0, chunk_rows)
            rest = whole.slice(chunk_rows)
            pending, size = rest.to_batches(), rest.num_rows
    if size:
        yield pa.Table.from_batches(pending).rename_columns(names)


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
