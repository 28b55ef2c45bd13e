"""The small interface each database implements for the store: an engine, bulk writes inside one open
transaction, and bulk reads into Arrow. The facade (store/facade.py) holds every rule of the master
file and asks the backend only how to move many rows (as Splink does per backend).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

Writer = Callable[[pd.DataFrame], None]


class BulkSession(ABC):
    """Bulk writes on one open transaction; temporary key tables for joins, deletes and updates by key."""

    def __init__(self, conn: sa.Connection, chunk_rows: int, stats: Counter[str]) -> None:
        self.conn = conn
        self.chunk_rows = chunk_rows
        self.stats = stats

    def quote(self, name: str) -> str:
        return str(self.conn.dialect.identifier_preparer.quote(name))

    def insert(self, table: sa.Table, frame: pd.DataFrame) -> None:
        """Insert every row of the frame (columns named as in the table), chunk by chunk."""
        unknown = [c for c in frame.columns if c not in table.c]
        if unknown:
            raise ValueError(f"table {table.name} has no column(s) {unknown}")
        if frame.empty:
            return
        with self.writer(table, list(frame.columns)) as write:
            for start in range(0, len(frame), self.chunk_rows):
                self.write_chunk(table, write, frame.iloc[start : start + self.chunk_rows])
        self.count(len(frame))

    def write_chunk(self, table: sa.Table, write: Writer, part: pd.DataFrame) -> None:
        """Send one chunk of rows (the kill-mid-merge test wraps this to stop inside the transaction)."""
        write(part)

    @abstractmethod
    def writer(self, table: sa.Table, columns: list[str]) -> AbstractContextManager[Writer]:
        """A function that sends chunks of rows of `columns` into `table`, open for one insert."""

    @abstractmethod
    def count(self, rows: int) -> None:
        """Record in `stats` the rows one insert sent (tests assert which bulk path was taken)."""

    @abstractmethod
    def keys(self, name: str, frame: pd.DataFrame) -> sa.Table:
        """A temporary table holding a set of keys, for joins, deletes and updates by key."""

    def key_table(self, name: str, frame: pd.DataFrame) -> tuple[sa.Table, str]:
        """The key table for `frame`'s columns, and the column list of its CREATE TABLE: every column a
        VARCHAR(64) key, together the primary key (each backend creates it as its temporaries need)."""
        columns = [sa.Column(c, sa.String(64), primary_key=True) for c in frame.columns]
        table = sa.Table(name, sa.MetaData(), *columns)
        defs = ", ".join(f"{self.quote(c)} VARCHAR(64) NOT NULL" for c in frame.columns)
        pk = ", ".join(self.quote(c) for c in frame.columns)
        return table, f"{defs}, PRIMARY KEY ({pk})"

    def in_keys(self, table: sa.Table, keys: sa.Table) -> sa.ColumnElement[bool]:
        """`key IN (SELECT key FROM keys)`: SQLite probes the table's primary key per key (a join or EXISTS may scan it)."""
        names = [c.name for c in keys.c]
        if len(names) == 1:
            return table.c[names[0]].in_(sa.select(keys.c[names[0]]))
        return sa.tuple_(*(table.c[n] for n in names)).in_(sa.select(*keys.c))

    @abstractmethod
    def by_key(self, table: sa.Table, keys: sa.Table) -> list[sa.ColumnElement[bool]]:
        """The condition that picks `table`'s rows whose key is in `keys`, for DELETE and UPDATE."""

    def delete(self, table: sa.Table, keys: sa.Table) -> int:
        """DELETE the rows whose key is in `keys`."""
        return int(self.conn.execute(table.delete().where(*self.by_key(table, keys))).rowcount)

    def update(
        self, table: sa.Table, keys: sa.Table, where: sa.ColumnElement[bool], values: dict[str, Any]
    ) -> int:
        """UPDATE the rows whose key is in `keys` and that match `where`."""
        statement = table.update().where(*self.by_key(table, keys), where).values(**values)
        return int(self.conn.execute(statement).rowcount)

    @abstractmethod
    def drop_temps(self) -> None:
        """Drop the temporary key tables this session made (where the database does not on commit)."""


class Backend(ABC):
    """One database: how the store connects, writes and reads in bulk."""

    name: ClassVar[str]

    def __init__(self, url: str) -> None:
        self.url = url

    @abstractmethod
    def engine(self) -> sa.Engine:
        """A new engine for the store's database."""

    @abstractmethod
    def session(self, conn: sa.Connection, chunk_rows: int, stats: Counter[str]) -> BulkSession:
        """Bulk writes on the transaction `conn` holds open."""

    @abstractmethod
    def read(
        self,
        conn: sa.Connection,
        sql: str,
        keys: list[str],
        table: sa.Table,
        chunk_rows: int,
        stats: Counter[str],
    ) -> pa.Table | None:
        """The rows of a compiled select (columns `keys` of `table`) as Arrow columns of the SQL
        types; None when there are none."""

    @abstractmethod
    def after_bulk_write(self, conn: sa.Connection, tables: list[sa.Table], rows: int) -> None:
        """Called before a merge commits `rows` written into `tables` (refresh planner statistics)."""
