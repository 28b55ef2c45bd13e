"""The embedded default: a SQLite file under var/ (executemany on the raw cursor, temp key tables)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from core.storage import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE
from store.backends.base import Backend, BulkSession, Writer
from store.convert import rows_arrow


def driver_values(series: pd.Series, column: sa.Column[Any]) -> np.ndarray:
    """A column as the sqlite3 module's Python values (None for nulls), converted vectorised.

    The executemany path hands these straight to the driver, so it does here, once per column, what
    SQLAlchemy's bind processors would do once per value.
    """
    if isinstance(column.type, sa.Date):  # SQLAlchemy's SQLite storage format for Date: YYYY-MM-DD
        days = pd.to_datetime(series, errors="coerce").astype("datetime64[us]")
        text = pa.Array.from_pandas(days).cast(pa.date32(), safe=False).cast(pa.string())
        return np.asarray(text.to_numpy(zero_copy_only=False), dtype=object)
    if isinstance(column.type, sa.Boolean):
        ints = series.astype("boolean").astype("Int64")
        return ints.astype(object).where(ints.notna(), None).to_numpy(dtype=object)
    return series.astype(object).where(series.notna(), None).to_numpy(dtype=object)


class SqliteSession(BulkSession):
    """executemany of row tuples zipped from per-column arrays; temp tables dropped by drop_temps."""

    def __init__(self, conn: sa.Connection, chunk_rows: int, stats: Counter[str]) -> None:
        super().__init__(conn, chunk_rows, stats)
        self.temps: list[str] = []

    @contextmanager
    def writer(self, table: sa.Table, columns: list[str]) -> Iterator[Writer]:
        compiled = table.insert().compile(dialect=self.conn.dialect, column_keys=columns)
        order = list(compiled.positiontup or [])
        sql = str(compiled)

        def write(part: pd.DataFrame) -> None:
            values = [driver_values(part[name], table.c[name]).tolist() for name in order]
            # rows as tuples zipped in C, one at a time as the driver binds them: a third cheaper than an
            # object matrix turned into row lists, and no list of rows held
            cursor = self.conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            cursor.executemany(sql, zip(*values, strict=True))
            cursor.close()

        yield write

    def count(self, rows: int) -> None:
        self.stats["executemany_rows"] += rows

    def keys(self, name: str, frame: pd.DataFrame) -> sa.Table:
        table, columns = self.key_table(name, frame)
        self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{name}")
        self.conn.exec_driver_sql(f"CREATE TEMP TABLE {name} ({columns})")
        self.temps.append(name)
        self.insert(table, frame.astype("string"))
        return table

    def by_key(self, table: sa.Table, keys: sa.Table) -> list[sa.ColumnElement[bool]]:
        return [self.in_keys(table, keys)]

    def drop_temps(self) -> None:
        for name in self.temps:
            self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{name}")
        self.temps.clear()


class SqliteBackend(Backend):
    """A SQLite file (its directory created) in WAL mode with synchronous=NORMAL for bulk writes."""

    name = "sqlite"

    def engine(self) -> sa.Engine:
        parsed = sa.make_url(self.url)
        if parsed.database and parsed.database != ":memory:":
            database = Path(parsed.database)
            if not database.exists():  # the master file is personal data: owner only (SQLite's -wal follows)
                database.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
                database.touch(mode=PRIVATE_FILE_MODE)
        engine = sa.create_engine(self.url)

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine

    def after_bulk_write(self, conn: sa.Connection, tables: list[sa.Table], rows: int) -> None:
        """Nothing to do: SQLite plans the key probes from the primary keys, without statistics."""

    def session(self, conn: sa.Connection, chunk_rows: int, stats: Counter[str]) -> SqliteSession:
        return SqliteSession(conn, chunk_rows, stats)

    def read(
        self,
        conn: sa.Connection,
        sql: str,
        keys: list[str],
        table: sa.Table,
        chunk_rows: int,
        stats: Counter[str],
    ) -> pa.Table | None:
        """The DBAPI cursor in chunks of rows (no per-row Result objects), each chunk into Arrow."""
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        parts = []
        try:
            cursor.execute(sql)
            while rows := cursor.fetchmany(chunk_rows):
                parts.append(rows_arrow(rows, keys, table))
        finally:
            cursor.close()
        if not parts:
            return None
        return pa.concat_tables(parts) if len(parts) > 1 else parts[0]
