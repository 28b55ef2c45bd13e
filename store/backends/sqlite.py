"""The embedded default: a SQLite file under var/ (rows staged by ADBC bulk ingest, temp key tables)."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from core.storage import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, process_running
from store.backends.base import Backend, BulkSession, Writer
from store.convert import arrow, rows_arrow

# scratch files beside the store, and the schema names they are attached under
STAGE_PREFIX = ".lb-stage-"
STAGE_SCHEMA = "lb_stage_"


def staged_arrow(frame: pd.DataFrame, table: sa.Table) -> pa.Table:
    """Rows as Arrow columns holding what SQLAlchemy would store in SQLite: dates as YYYY-MM-DD text
    (its storage format for Date), flags as 0/1, the rest as their SQL type (store.convert.arrow)."""
    arrays = []
    for name in frame.columns:
        values = arrow(frame[name], table.c[name])
        if pa.types.is_date(values.type):
            values = values.cast(pa.string())
        elif pa.types.is_boolean(values.type):
            values = values.cast(pa.int64())
        elif pa.types.is_large_string(values.type):
            values = values.cast(pa.string())
        arrays.append(values)
    return pa.Table.from_arrays(arrays, names=list(frame.columns))


class SqliteSession(BulkSession):
    """Rows staged through ADBC's bulk ingest, then one INSERT ... SELECT in this transaction.

    The sqlite3 module binds every value from a Python object (four times the bulk-ingest floor
    of `hub bench`); ADBC binds Arrow columns in C but opens its own connection, which cannot join
    this transaction. So the rows go into a scratch SQLite file beside the store (no journal, no
    fsync: it is thrown away), which this connection attaches and copies from in C. The file is
    unlinked as soon as it is attached (the open handle keeps it readable), so a process killed
    after that leaves nothing (one killed while staging leaves its file to sweep_scratch); the pool
    detaches it when the connection comes back (SqliteBackend).
    """

    def __init__(self, conn: sa.Connection, chunk_rows: int, stats: Counter[str], scratch: Path) -> None:
        super().__init__(conn, chunk_rows, stats)
        self.scratch = scratch
        self.staged = 0  # scratch files attached (SQLite attaches at most 10 per connection)
        self.temps: list[str] = []

    @contextmanager
    def writer(self, table: sa.Table, columns: list[str]) -> Iterator[Writer]:
        import adbc_driver_sqlite.dbapi as lite

        prefix = f"{STAGE_PREFIX}{os.getpid()}-"  # whose it is (sweep_scratch)
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".sqlite", dir=self.scratch)  # 0600
        os.close(fd)
        path = Path(name)
        try:
            with lite.connect(name, autocommit=True) as adbc, adbc.cursor() as cursor:
                cursor.execute("PRAGMA journal_mode=OFF")
                cursor.fetchall()
                cursor.execute("PRAGMA synchronous=OFF")
                made = False

                def write(part: pd.DataFrame) -> None:
                    nonlocal made
                    cursor.adbc_ingest("rows", staged_arrow(part, table), mode="append" if made else "create")
                    made = True

                yield write
            schema = f"{STAGE_SCHEMA}{self.staged}"
            self.conn.exec_driver_sql(f"ATTACH DATABASE ? AS {self.quote(schema)}", (name,))
        finally:
            path.unlink(missing_ok=True)
        self.staged += 1
        names = ", ".join(self.quote(c) for c in columns)
        source = f"SELECT {names} FROM {self.quote(schema)}.rows"  # noqa: S608 - quoted table and column names
        self.conn.exec_driver_sql(f"INSERT INTO {self.quote(table.name)} ({names}) {source}")

    def count(self, rows: int) -> None:
        self.stats["ingest_rows"] += rows

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


def sweep_scratch(folder: Path) -> None:
    """Delete the scratch files of processes that are gone (killed while staging rows: personal data)."""
    for path in folder.glob(f"{STAGE_PREFIX}*.sqlite"):
        pid = path.name.removeprefix(STAGE_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not process_running(int(pid)):
            path.unlink(missing_ok=True)


class SqliteBackend(Backend):
    """A SQLite file (its directory created) in WAL mode with synchronous=NORMAL for bulk writes."""

    name = "sqlite"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        parsed = sa.make_url(url)
        self.database = Path(parsed.database) if parsed.database not in (None, "", ":memory:") else None
        # the staged rows are personal data too: beside the store, whose folder is the owner's
        self.scratch = self.database.parent if self.database else Path(tempfile.gettempdir())

    def engine(self) -> sa.Engine:
        if self.database is not None and not self.database.exists():
            # the master file is personal data: owner only (SQLite's -wal follows)
            self.database.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
            self.database.touch(mode=PRIVATE_FILE_MODE)
        if self.database is not None:
            sweep_scratch(self.scratch)
        engine = sa.create_engine(self.url)

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @sa.event.listens_for(engine, "checkin")
        def _detach(dbapi_conn: Any, _record: Any) -> None:
            """Let go of the scratch files a session attached (SQLite refuses DETACH inside a transaction)."""
            if dbapi_conn is None:
                return
            attached = [row[1] for row in dbapi_conn.execute("PRAGMA database_list")]
            for schema in attached:
                if schema.startswith(STAGE_SCHEMA):
                    dbapi_conn.execute(f'DETACH DATABASE "{schema}"')

        return engine

    def after_bulk_write(self, conn: sa.Connection, tables: list[sa.Table], rows: int) -> None:
        """Nothing to do: SQLite plans the key probes from the primary keys, without statistics."""

    def session(self, conn: sa.Connection, chunk_rows: int, stats: Counter[str]) -> SqliteSession:
        return SqliteSession(conn, chunk_rows, stats, self.scratch)

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
