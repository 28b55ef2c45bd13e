"""Production PostgreSQL through psycopg 3: COPY in and out as CSV (parsed and written by Arrow),
temporary key tables dropped on commit, and fresh planner statistics after a bulk merge."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa

from store.backends.base import Backend, BulkSession, Writer
from store.convert import arrow_type, csv_bytes


class PostgresSession(BulkSession):
    """COPY ... FROM STDIN, one statement per insert; DELETE ... USING and UPDATE ... FROM by key."""

    @contextmanager
    def writer(self, table: sa.Table, columns: list[str]) -> Iterator[Writer]:
        names = ", ".join(self.quote(c) for c in columns)
        sql = f"COPY {self.quote(table.name)} ({names}) FROM STDIN (FORMAT csv)"
        raw = self.conn.connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(sql) as copy:  # type: ignore[union-attr]

            def write(part: pd.DataFrame) -> None:
                copy.write(csv_bytes(part, table))

            yield write

    def count(self, rows: int) -> None:
        self.stats["copy_statements"] += 1
        self.stats["copy_rows"] += rows

    def keys(self, name: str, frame: pd.DataFrame) -> sa.Table:
        table, columns = self.key_table(name, frame)
        self.conn.exec_driver_sql(f"CREATE TEMP TABLE {name} ({columns}) ON COMMIT DROP")
        self.insert(table, frame.astype("string"))
        self.conn.exec_driver_sql(f"ANALYZE {name}")
        return table

    def by_key(self, table: sa.Table, keys: sa.Table) -> list[sa.ColumnElement[bool]]:
        return [table.c[c.name] == c for c in keys.c]

    def drop_temps(self) -> None:
        """Nothing to do: the key tables are ON COMMIT DROP."""


class PostgresBackend(Backend):
    """PostgreSQL with the psycopg (3) driver, whose COPY the bulk paths use."""

    name = "postgresql"
    # persons written beyond which a merge refreshes the planner's statistics
    analyze_after_rows = 50_000

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.url)

    def session(self, conn: sa.Connection, chunk_rows: int, stats: Counter[str]) -> PostgresSession:
        return PostgresSession(conn, chunk_rows, stats)

    def read(
        self,
        conn: sa.Connection,
        sql: str,
        keys: list[str],
        table: sa.Table,
        chunk_rows: int,
        stats: Counter[str],
    ) -> pa.Table | None:
        """COPY (query) TO STDOUT as CSV, parsed by Arrow with the SQL column types."""
        buffer = io.BytesIO()
        raw = conn.connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)") as copy:  # type: ignore[union-attr]
            for data in copy:
                buffer.write(data)
        stats["copy_out_statements"] += 1
        if buffer.tell() == 0:
            return None
        buffer.seek(0)
        return pacsv.read_csv(
            buffer,
            read_options=pacsv.ReadOptions(column_names=keys, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={k: arrow_type(table.c[k].type) for k in keys},
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
                true_values=["t"],
                false_values=["f"],
            ),
        )

    def after_bulk_write(self, conn: sa.Connection, tables: list[sa.Table], rows: int) -> None:
        """After a bulk load autovacuum analyzes only later, and the next merge's key joins would be
        planned from stale statistics (full scans where a 1% merge needs index probes)."""
        if rows > self.analyze_after_rows:
            for table in tables:
                conn.exec_driver_sql(f"ANALYZE {table.name}")
