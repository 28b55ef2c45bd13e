"""The master file store (一人一档): persons, conflicts, decisions and runs, in one SQL database.

SQLAlchemy 2 Core only, no backend-specific SQL, so the embedded default (a SQLite file under var/)
and production PostgreSQL share this code. A merge replaces the whole current master and its
conflicts in one transaction, so a run killed half-way leaves the previous master intact, and a
retried run writes exactly what a clean run writes.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from transforms.merge import CONFLICT_COLUMNS

log = logging.getLogger(__name__)

_meta = sa.MetaData()

person = sa.Table(
    "person",
    _meta,
    sa.Column("id_number", sa.String(18), primary_key=True),
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
    sa.Column("cdpf_batch", sa.String(128)),
    sa.Column("police_batch", sa.String(128)),
    sa.Column("civil_batch", sa.String(128)),
    sa.Column("hrss_batch", sa.String(128)),
    sa.Column("name_source", sa.String(8)),
    sa.Column("record_hash", sa.BigInteger),
    sa.Column("run_id", sa.String(64), nullable=False),
)

conflict = sa.Table(
    "conflict",
    _meta,
    sa.Column("id_number", sa.String(18), primary_key=True),
    sa.Column("conflict_type", sa.String(32), primary_key=True),
    sa.Column("source_a", sa.String(16), primary_key=True),
    sa.Column("source_b", sa.String(16), primary_key=True),
    sa.Column("value_a", sa.String(128)),
    sa.Column("value_b", sa.String(128)),
    sa.Column("batch_a", sa.String(128)),
    sa.Column("batch_b", sa.String(128)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Index("ix_conflict_type", "conflict_type"),
)

decision = sa.Table(
    "decision",
    _meta,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("id_number", sa.String(18), primary_key=True),
    sa.Column("service", sa.String(64), primary_key=True),
    sa.Column("period", sa.String(7), nullable=False),
    sa.Column("eligible", sa.Boolean, nullable=False),
    sa.Column("amount", sa.Float, nullable=False),
    sa.Column("reasons", sa.String(256), nullable=False),
    sa.Column("policy", sa.String(64), nullable=False),
    sa.Column("policy_version", sa.String(32), nullable=False),
)

run = sa.Table(
    "run",
    _meta,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("as_of", sa.Date),
    sa.Column("persons", sa.Integer),
    sa.Column("conflicts", sa.Integer),
    sa.Column("decisions", sa.Integer),
    sa.Column("master_written_at", sa.String(32)),
    sa.Column("decisions_written_at", sa.String(32)),
)


def _written_at() -> str:
    """Audit timestamp of a write (when it happened, not what the run stands for)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


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


def _driver_values(series: pd.Series, column: sa.Column[Any], dialect: sa.Dialect) -> list[Any]:
    """A column as DBAPI-native Python values (None for nulls), converted vectorised.

    The bulk path hands these straight to the driver's executemany, so it does here, once per
    column, what SQLAlchemy's bind processors would do once per value.
    """
    if isinstance(column.type, sa.Date):
        days = pd.to_datetime(series, errors="coerce")
        if dialect.name == "sqlite":  # SQLAlchemy's SQLite storage format for Date
            text = days.dt.strftime("%Y-%m-%d").astype(object)
            return text.where(days.notna(), None).tolist()
        return days.dt.date.astype(object).where(days.notna(), None).tolist()
    if isinstance(column.type, sa.Boolean) and dialect.name == "sqlite":
        ints = series.astype("boolean").astype("Int64")
        return ints.astype(object).where(ints.notna(), None).tolist()
    return series.astype(object).where(series.notna(), None).tolist()


def _bulk_insert(
    conn: sa.Connection, table: sa.Table, frame: pd.DataFrame, extra: dict[str, Any], size: int
) -> None:
    """INSERT every row of the frame through the driver's executemany, `size` rows per call."""
    names = [c.name for c in table.columns if c.name not in extra]
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise ValueError(f"table {table.name}: frame lacks column(s) {missing}; expected {names}")
    keys = [*names, *extra]
    compiled = table.insert().compile(dialect=conn.dialect, column_keys=keys)
    order = list(compiled.positiontup or []) if compiled.positional else keys
    for start in range(0, len(frame), size):
        part = frame.iloc[start : start + size]
        values = {n: _driver_values(part[n], table.c[n], conn.dialect) for n in names}
        values.update({k: [v] * len(part) for k, v in extra.items()})
        columns = [values[k] for k in order]
        if compiled.positional:
            params: list[Any] = list(zip(*columns, strict=True))
        else:
            params = [dict(zip(order, row, strict=True)) for row in zip(*columns, strict=True)]
        if params:
            conn.exec_driver_sql(str(compiled), params)


def _typed(frame: pd.DataFrame, table: sa.Table) -> pd.DataFrame:
    """Give a frame read back from SQL the dtypes the writers produced (dates, Int64, Float64, bools)."""
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


class MasterStore:
    """The master file, its conflicts queue, the decisions of each run and the run records."""

    def __init__(self, url: str, chunk_rows: int = 20_000) -> None:
        self.url = url
        self.chunk_rows = chunk_rows
        self.engine = _engine(url)
        _meta.create_all(self.engine)

    def _insert(
        self, conn: sa.Connection, table: sa.Table, frame: pd.DataFrame, extra: dict[str, Any]
    ) -> None:
        _bulk_insert(conn, table, frame, extra, self.chunk_rows)

    def _touch_run(self, conn: sa.Connection, run_id: str, values: dict[str, Any]) -> None:
        updated = conn.execute(run.update().where(run.c.run_id == run_id).values(**values))
        if updated.rowcount == 0:
            conn.execute(run.insert().values(run_id=run_id, **values))

    def replace(
        self, master: pd.DataFrame, conflicts: pd.DataFrame, run_id: str, as_of: date | None = None
    ) -> None:
        """Swap in a whole new master and conflicts queue in ONE transaction (all or nothing)."""
        started = datetime.now(UTC)
        with self.engine.begin() as conn:
            conn.execute(conflict.delete())
            conn.execute(person.delete())
            self._insert(conn, person, master, {"run_id": run_id})
            self._insert(conn, conflict, conflicts, {"run_id": run_id})
            values: dict[str, Any] = {
                "persons": len(master),
                "conflicts": len(conflicts),
                "master_written_at": _written_at(),
            }
            if as_of is not None:
                values["as_of"] = as_of
            self._touch_run(conn, run_id, values)
        log.info(
            "master store: %d persons, %d conflicts written for %s in %.2f s",
            len(master),
            len(conflicts),
            run_id,
            (datetime.now(UTC) - started).total_seconds(),
        )

    def write_decisions(self, decisions: pd.DataFrame, run_id: str) -> None:
        """Replace the decisions of one run (a retried run writes the same rows, never twice)."""
        with self.engine.begin() as conn:
            conn.execute(decision.delete().where(decision.c.run_id == run_id))
            self._insert(conn, decision, decisions, {"run_id": run_id})
            self._touch_run(
                conn, run_id, {"decisions": len(decisions), "decisions_written_at": _written_at()}
            )
        log.info("master store: %d decisions written for %s", len(decisions), run_id)

    @staticmethod
    def _plain(column: sa.Column[Any]) -> sa.ColumnElement[Any]:
        """Select a date or flag without SQLAlchemy's per-value result processing; _typed converts in bulk."""
        if isinstance(column.type, sa.Date | sa.Boolean):
            return sa.type_coerce(column, sa.String).label(column.name)
        return column

    def _read(self, query: sa.Select[Any], table: sa.Table) -> pd.DataFrame:
        with self.engine.connect() as conn:
            result = conn.execute(query)
            keys = list(result.keys())
            rows = result.all()
        # column-wise construction: pandas probing each Row object is the slow part otherwise
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in keys]
        frame = pd.DataFrame(
            {k: pd.Series(list(v), dtype=object) for k, v in zip(keys, columns, strict=True)}
        )
        return _typed(frame, table)

    def read_master(self, columns: list[str] | None = None) -> pd.DataFrame:
        """The current master file (or some of its columns), ordered by id_number, without run_id."""
        wanted = [c.name for c in person.columns if c.name != "run_id"] if columns is None else columns
        unknown = sorted(set(wanted) - set(person.c.keys()))
        if unknown:
            raise ValueError(f"table person has no column(s) {unknown}")
        cols = [self._plain(person.c[name]) for name in wanted]
        return self._read(sa.select(*cols).order_by(person.c.id_number), person)

    def read_conflicts(self) -> pd.DataFrame:
        """The current conflicts queue in the merge's column order."""
        cols = [self._plain(conflict.c[n]) for n in CONFLICT_COLUMNS]
        query = sa.select(*cols).order_by(
            conflict.c.id_number, conflict.c.conflict_type, conflict.c.source_a, conflict.c.source_b
        )
        return self._read(query, conflict)

    def read_decisions(self, run_id: str) -> pd.DataFrame:
        """The decisions of one run, ordered by id_number and service."""
        cols = [self._plain(c) for c in decision.columns if c.name != "run_id"]
        query = (
            sa.select(*cols)
            .where(decision.c.run_id == run_id)
            .order_by(decision.c.id_number, decision.c.service)
        )
        return self._read(query, decision)

    def counts(self) -> dict[str, Any]:
        """Sizes for the report: persons, conflicts (and by type), decisions, runs."""
        with self.engine.connect() as conn:

            def count(table: sa.Table) -> int:
                return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())

            by_type = conn.execute(
                sa.select(conflict.c.conflict_type, sa.func.count())
                .group_by(conflict.c.conflict_type)
                .order_by(conflict.c.conflict_type)
            ).all()
            return {
                "persons": count(person),
                "conflicts": count(conflict),
                "conflicts_by_type": {str(t): int(n) for t, n in by_type},
                "decisions": count(decision),
                "runs": count(run),
            }

    def run_record(self, run_id: str) -> dict[str, Any] | None:
        """What the store knows about one run (sizes and write times)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(run).where(run.c.run_id == run_id)).mappings().first()
        return dict(row) if row else None

    def dispose(self) -> None:
        """Close pooled connections (tests and short-lived CLI calls)."""
        self.engine.dispose()
