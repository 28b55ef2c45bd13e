"""`hub bench-pull`: the SQL transport's throughput on the sandbox's cdpf 前置库 table, in rows/s.

The table is read from the sandbox's SQLite 前置库 as generated, or first copied (all TEXT, as the
department keeps it) into the PostgreSQL or MariaDB database named by --url, which should be a
throwaway one: the copy replaces any CJR_CJRZ table there. Then one full pull is timed, with the
peak resident memory of the process while it ran (flat: the pull streams chunks to parquet parts),
and the process's CPU seconds (all its threads; not the database server's): on a shared machine the
wall time mostly measures the other processes, rows per CPU second does not.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from bench.cycle import PeakRss
from core.settings import Settings, SqlSource
from core.storage import Storage, write_json_atomic

TABLE = "CJR_CJRZ"


def _sqlite_batches(path: Path) -> Iterator[pa.RecordBatch]:
    import adbc_driver_sqlite.dbapi as lite

    with lite.connect(str(path)) as conn, conn.cursor() as cursor:
        cursor.execute(f'SELECT * FROM "{TABLE}"')  # noqa: S608 - the sandbox's own table name, a constant
        yield from cursor.fetch_record_batch()


def copy_table(source: Path, url: str) -> int:
    """Copy the sandbox's cdpf table into the server database at `url` as TEXT columns; returns rows."""
    engine = sa.create_engine(url)
    with sa.create_engine(f"sqlite:///{source}").connect() as conn:
        names = list(sa.Table(TABLE, sa.MetaData(), autoload_with=conn).c.keys())
    meta = sa.MetaData()
    table = sa.Table(TABLE, meta, *(sa.Column(n, sa.Text) for n in names))
    meta.drop_all(engine)
    meta.create_all(engine)
    rows = 0
    if engine.url.get_backend_name() == "postgresql":
        import adbc_driver_postgresql.dbapi as pg

        uri = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with pg.connect(uri) as conn, conn.cursor() as cursor:
            for batch in _sqlite_batches(source):
                batch = pa.RecordBatch.from_arrays([c.cast(pa.string()) for c in batch.columns], names=names)
                rows += cursor.adbc_ingest(TABLE, batch, mode="append")
            conn.commit()
        return rows
    with engine.begin() as conn:
        for batch in _sqlite_batches(source):
            conn.execute(table.insert(), batch.to_pylist())
            rows += batch.num_rows
    return rows


def run_bench_pull(settings: Settings, url: str | None = None, chunk_rows: int = 50_000) -> dict[str, Any]:
    """Time one full pull of the sandbox's cdpf table (from SQLite, or from a copy at `url`)."""
    from connectors.sql import pull_sql

    source = Storage(settings).sandbox / "frontdb_cdpf.sqlite"
    if not source.exists():
        raise RuntimeError(f"{source}: no sandbox cdpf 前置库; run `hub sandbox init` first")
    copied = None
    if url:
        started = time.perf_counter()
        copy_table(source, url)
        copied = time.perf_counter() - started
    front = url or f"sqlite:///{source}"
    config = SqlSource(transport="sql", contract="x", url=front, table=TABLE, chunk_rows=chunk_rows)
    scratch = Path(tempfile.mkdtemp(prefix="bench-pull-", dir=settings.var_dir))
    try:
        storage = Storage(settings.model_copy(update={"var_dir": scratch}))
        with PeakRss() as rss:
            started, cpu = time.perf_counter(), time.process_time()
            landed = pull_sql(storage, "cdpf", config, date.today(), ["GXSJ", "SFZH"])
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        rows = landed.manifest.rows
        landed_bytes = sum(p.stat().st_size for p in landed.path.glob("part-*.parquet"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    figures = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "backend": sa.make_url(front).get_backend_name(),
        "rows": rows,
        "seconds": seconds,
        "rows_per_second": rows / seconds if seconds else None,
        "cpu_seconds": cpu,
        "rows_per_cpu_second": rows / cpu if cpu else None,
        "peak_rss_mib": rss.peak / 2**20,
        "landed_bytes": landed_bytes,
        "chunk_rows": chunk_rows,
        "copy_seconds": copied,
    }
    out = settings.var_dir / "bench" / f"bench-pull-{figures['backend']}-{rows}.json"
    write_json_atomic(out, figures)
    return {**figures, "json": str(out)}
