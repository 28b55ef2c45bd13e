"""Incremental pulls from 前置库 tables on real PostgreSQL and MariaDB (and SQLite): the composite watermark."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from connectors.sql import pull_sql
from core.settings import SqlSource
from core.storage import Storage

pytestmark = pytest.mark.integration
T1 = datetime(2026, 10, 31, 8, 0, 0)


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def front_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'front.sqlite'}"
    return str(request.getfixturevalue("pg_url" if request.param == "postgres" else "mysql_url"))


def _table(engine: sa.Engine) -> sa.Table:
    meta = sa.MetaData()
    table = sa.Table(
        "CJR_CJRZ",
        meta,
        sa.Column("ID", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("XM", sa.String(50)),
        sa.Column("GXSJ", sa.DateTime),
    )
    meta.create_all(engine)
    return table


def _insert(engine: sa.Engine, table: sa.Table, ids: range | list[int], at: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"ID": i, "XM": f"王䶮{i}", "GXSJ": at} for i in ids])


def _landed_ids(storage: Storage, batch_id: str) -> list[int]:
    parts = sorted(storage.landing("cdpf", batch_id).glob("part-*.parquet"))
    if not parts:
        return []
    return [int(v) for v in pd.concat(pd.read_parquet(p) for p in parts)["ID"]]


def test_boundary_rows_are_neither_skipped_nor_duplicated(settings, front_url: str) -> None:
    engine = sa.create_engine(front_url)
    table = _table(engine)
    _insert(engine, table, range(100, 125), T1)  # 25 rows share one timestamp across 10-row chunks
    config = SqlSource(
        transport="sql", contract="x", url=front_url, table="CJR_CJRZ", mode="incremental",
        watermark_column="GXSJ", key_columns=["ID"], chunk_rows=10, overlap_seconds=300,
    )  # fmt: skip
    storage = Storage(settings)
    first = pull_sql(storage, "cdpf", config, date(2026, 10, 31), [])
    assert sorted(_landed_ids(storage, first.batch_id)) == list(range(100, 125))
    assert len(list(first.path.glob("part-*.parquet"))) == 3
    assert json.loads(storage.watermark("cdpf") or "{}")["key"] == "124"

    # Later commits: the same boundary timestamp with keys below and above the watermark key,
    # a late row 60 s behind the watermark (inside the overlap), and newer rows.
    _insert(engine, table, [50, 51, 130, 131], T1)
    _insert(engine, table, [60], T1 - timedelta(seconds=60))
    _insert(engine, table, range(200, 205), T1 + timedelta(minutes=5))
    second = pull_sql(storage, "cdpf", config, date(2026, 11, 1), [])
    assert sorted(_landed_ids(storage, second.batch_id)) == [50, 51, 60, 130, 131, 200, 201, 202, 203, 204]
    # the first pull is the whole table; later ones only changed rows, which the merge applies on top
    assert (first.manifest.delta, second.manifest.delta) == (False, True)

    third = pull_sql(storage, "cdpf", config, date(2026, 11, 2), [])
    assert _landed_ids(storage, third.batch_id) == []
    engine.dispose()


PULL_AND_MEASURE = """
import json, sys
from datetime import date
from connectors.sql import pull_sql
from core.settings import SqlSource, load_settings
from core.storage import Storage
settings = load_settings(var_dir=sys.argv[2])
config = SqlSource(transport="sql", contract="x", url=sys.argv[1], table="big", mode="incremental",
                   watermark_column="gxsj", key_columns=["id"], chunk_rows=50000)
landed = pull_sql(Storage(settings), "cdpf", config, date(2026, 11, 1), [])
# VmHWM is this program's own peak; ru_maxrss would also count the pytest process it was spawned from,
# since Linux carries the parent's high-water mark into the child across fork and exec.
hwm_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"rows": landed.rows, "max_rss_mib": hwm_kib / 1024}))
"""

MEMORY_CEILING_MIB = (
    400  # measured 332 MiB (130 MiB is the interpreter with pandas, pyarrow, SQLAlchemy, psycopg)
)


def test_million_row_table_streams_under_memory_ceiling(pg_url: str, tmp_path: Path) -> None:
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("CREATE TABLE big (id bigint PRIMARY KEY, sfzh text, xm text, cjlb text, gxsj timestamp)")
        )
        conn.execute(
            sa.text(
                "INSERT INTO big SELECT g, lpad(g::text, 18, '3'), '姓名' || g, (g % 7 + 1)::text,"
                " timestamp '2026-10-01' + (g / 1000) * interval '1 second' FROM generate_series(1, 1000000) g"
            )
        )
    engine.dispose()
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", PULL_AND_MEASURE, pg_url, str(tmp_path / "var")],
        capture_output=True, text=True, cwd=root, check=True,
    )  # fmt: skip
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["rows"] == 1_000_000
    print(f"1,000,000-row pull: peak RSS {figures['max_rss_mib']:.0f} MiB")
    assert figures["max_rss_mib"] < MEMORY_CEILING_MIB, figures


def _incremental(url: str, **extra: int) -> SqlSource:
    return SqlSource(
        transport="sql", contract="x", url=url, table="CJR_CJRZ", mode="incremental",
        watermark_column="GXSJ", key_columns=["ID"], chunk_rows=10, overlap_seconds=300, **extra,
    )  # fmt: skip


def test_a_row_dated_9999_neither_lands_nor_moves_the_bookmark(settings, front_url: str) -> None:
    engine = sa.create_engine(front_url)
    table = _table(engine)
    _insert(engine, table, range(100, 112), T1)
    _insert(engine, table, [666], datetime(9999, 12, 31, 23, 59, 59))  # poison
    _insert(engine, table, [667], T1 + timedelta(minutes=10))  # 10 min ahead of the run's clock
    storage = Storage(settings)
    config = _incremental(front_url, max_future_skew_seconds=300)
    first = pull_sql(storage, "cdpf", config, date(2026, 10, 31), [], now=T1)
    assert sorted(_landed_ids(storage, first.batch_id)) == list(range(100, 112))
    (held,) = first.manifest.held_out
    assert (held.name, held.rows, held.column) == ("held-out.parquet", 2, "GXSJ")
    held_rows = pd.read_parquet(first.path / "held-out.parquet")
    assert sorted(held_rows["ID"].astype(int)) == [666, 667]
    assert set(held_rows["_held_reason"].str.startswith("later than the run's clock + skew")) == {True}
    assert json.loads(storage.watermark("cdpf") or "{}") == {"ts": "2026-10-31 08:00:00.000000", "key": "111"}

    # a day later: new rows land; 667's time has come (it lands now), the 9999 row is still held out
    _insert(engine, table, range(200, 203), T1 + timedelta(hours=1))
    second = pull_sql(storage, "cdpf", config, date(2026, 11, 1), [], now=T1 + timedelta(days=1))
    assert sorted(_landed_ids(storage, second.batch_id)) == [200, 201, 202, 667]
    assert [h.rows for h in second.manifest.held_out] == [1]
    assert json.loads(storage.watermark("cdpf") or "{}")["ts"] == "2026-10-31 09:00:00.000000"
    _insert(engine, table, [300], T1 + timedelta(hours=2))
    third = pull_sql(storage, "cdpf", config, date(2026, 11, 2), [], now=T1 + timedelta(days=2))
    assert _landed_ids(storage, third.batch_id) == [300]
    engine.dispose()


def test_text_timestamps_of_mixed_precision_compare_as_times(settings, front_url: str) -> None:
    engine = sa.create_engine(front_url)
    meta = sa.MetaData()
    table = sa.Table(
        "CJR_CJRZ", meta, sa.Column("ID", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("XM", sa.String(50)), sa.Column("GXSJ", sa.String(32)),
    )  # fmt: skip
    meta.create_all(engine)
    stamps = {1: "2026-10-31 08:00:15", 2: "2026-10-31 08:00:15.500000", 3: "2026-10-31 08:00:15.25",
              4: "2026-10-31 08:00:14.999", 5: "not a time", 6: "2023-02-30 00:00:00"}  # fmt: skip
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"ID": i, "XM": "x", "GXSJ": t} for i, t in stamps.items()])
    storage = Storage(settings)
    config = _incremental(front_url)
    first = pull_sql(storage, "cdpf", config, date(2026, 10, 31), [], now=T1 + timedelta(days=1))
    assert sorted(_landed_ids(storage, first.batch_id)) == [1, 2, 3, 4]
    assert [h.rows for h in first.manifest.held_out] == [2]  # not timestamps: quarantined by staging
    assert json.loads(storage.watermark("cdpf") or "{}") == {"ts": "2026-10-31 08:00:15.500000", "key": "2"}
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"ID": 7, "XM": "x", "GXSJ": "2026-10-31 08:00:15.6"},
                                      {"ID": 8, "XM": "x", "GXSJ": "2026-10-31 08:00:16"}])  # fmt: skip
    second = pull_sql(storage, "cdpf", config, date(2026, 11, 1), [], now=T1 + timedelta(days=1))
    assert sorted(_landed_ids(storage, second.batch_id)) == [7, 8]
    assert json.loads(storage.watermark("cdpf") or "{}")["ts"] == "2026-10-31 08:00:16.000000"
    engine.dispose()
