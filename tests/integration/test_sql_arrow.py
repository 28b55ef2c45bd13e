"""The Arrow readers land byte for byte what the row-by-row SQLAlchemy reader landed, on every backend."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from connectors.sql import pull_sql
from core.settings import SqlSource
from core.storage import Storage

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def front_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'front.sqlite'}"
    return str(request.getfixturevalue("pg_url" if request.param == "postgres" else "mysql_url"))


def _reference(engine: sa.Engine, table: sa.Table, chunk_rows: int) -> list[bytes]:
    """The parts the former reader wrote: SQLAlchemy rows -> pandas -> astype('string') -> parquet."""
    names = list(table.c.keys())
    schema = pa.schema([(n, pa.string()) for n in names])
    out = []
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(
            sa.select(table).order_by(table.c.ID)
        )
        for chunk in result.partitions():
            text = pd.DataFrame.from_records(chunk, columns=names).astype("string")
            sink = pa.BufferOutputStream()
            pq.write_table(pa.Table.from_pandas(text, schema=schema, preserve_index=False), sink)
            out.append(sink.getvalue().to_pybytes())
    return out


def test_arrow_path_lands_the_same_bytes(settings, front_url: str) -> None:
    engine = sa.create_engine(front_url)
    meta = sa.MetaData()
    table = sa.Table(
        "CJR_CJRZ",
        meta,
        sa.Column("ID", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("XM", sa.String(50)),
        sa.Column("SFZH", sa.String(18)),
        sa.Column("JE", sa.Numeric(10, 2)),
        sa.Column("N", sa.Integer),
        sa.Column("GXSJ", sa.DateTime),
        sa.Column("RQ", sa.Date),
    )
    meta.create_all(engine)
    rows = [
        {
            "ID": i,
            "XM": None if i % 7 == 0 else f"王䶮{i} ",
            "SFZH": f"11010119900101{i:04d}",
            "JE": None if i % 5 == 0 else Decimal(i) / 4,
            "N": None if i % 3 == 0 else i * 10,
            "GXSJ": datetime(2026, 10, 31, 8, 0, i % 60, (i * 1237) % 1_000_000 if i > 20 else 0),
            "RQ": date(2026, 1 + i % 12, 1),
        }
        for i in range(1, 46)
    ]
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
    config = SqlSource(transport="sql", contract="x", url=front_url, table="CJR_CJRZ", chunk_rows=20)
    storage = Storage(settings)
    landed = pull_sql(storage, "cdpf", config, date(2026, 10, 31), ["ID"])
    parts = sorted(landed.path.glob("part-*.parquet"))
    assert [p.read_bytes() for p in parts] == _reference(engine, table, 20)
    assert landed.manifest.rows == 45
    assert pq.read_table(parts[0]).column("XM")[1].as_py() == "王䶮2 "  # text untouched, not trimmed
    assert storage.watermark("cdpf") == "45"


def test_a_column_null_for_its_first_rows_still_lands(settings, front_url: str) -> None:
    """A sparse 前置库 column (empty for the first 1,500 rows, then text) is read as text throughout
    (on SQLite an all-text table: the ADBC path, whose driver would infer the empty column as integer)."""
    engine = sa.create_engine(front_url)
    meta = sa.MetaData()
    table = sa.Table(
        "CJR_CJRZ",
        meta,
        sa.Column("ID", sa.String(8), primary_key=True),
        sa.Column("BZ", sa.Text),
    )
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            table.insert(), [{"ID": f"{i:05d}", "BZ": None if i < 1500 else f"备注{i}"} for i in range(1600)]
        )
    config = SqlSource(transport="sql", contract="x", url=front_url, table="CJR_CJRZ", chunk_rows=1000)
    landed = pull_sql(Storage(settings), "cdpf", config, date(2026, 10, 31), ["ID"])
    frame = pd.concat(pd.read_parquet(p) for p in sorted(landed.path.glob("part-*.parquet")))
    assert frame["BZ"].isna().sum() == 1500 and (frame["BZ"].iloc[1500:] != "").all()
    assert frame["BZ"].iloc[-1] == "备注1599" and frame["ID"].iloc[-1] == "01599"


def test_an_all_text_table_lands_ordered_and_resumes(settings, front_url: str) -> None:
    """The usual 前置库 (every column TEXT; on MariaDB read through ConnectorX and ordered by DuckDB):
    rows land ordered by the keys across chunks, the same table lands the same batch again, nothing else
    is left in the landing (the sort's spill folder), and an incremental pull resumes from the bookmark."""
    engine = sa.create_engine(front_url)
    meta = sa.MetaData()
    table = sa.Table(
        "CJR_CJRZ", meta, sa.Column("SFZH", sa.Text), sa.Column("XM", sa.Text), sa.Column("GXSJ", sa.Text)
    )
    meta.create_all(engine)
    rows = [
        {"SFZH": f"11010119900101{i % 7:04d}", "XM": None if i % 5 == 0 else f"王䶮{i % 3}",
         "GXSJ": f"2026-10-31 08:00:{i % 4:02d}"}
        for i in range(30)
    ]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
    storage = Storage(settings)
    full = SqlSource(transport="sql", contract="x", url=front_url, table="CJR_CJRZ", chunk_rows=4)
    first = pull_sql(storage, "cdpf", full, date(2026, 10, 31), ["GXSJ", "SFZH"])
    frame = pd.concat(pd.read_parquet(p) for p in sorted(first.path.glob("part-*.parquet")))
    keys = list(zip(frame["GXSJ"], frame["SFZH"], strict=True))
    assert keys == sorted(keys) and len(frame) == 30 and frame["XM"].isna().sum() == 6
    assert sorted(p.name for p in first.path.iterdir()) == ["manifest.json"] + [
        f"part-{n:05d}.parquet" for n in range(1, 9)
    ]
    again = pull_sql(storage, "cdpf", full, date(2026, 10, 31), ["GXSJ", "SFZH"])
    assert (again.batch_id, again.new) == (first.batch_id, False)

    incremental = full.model_copy(
        update={"mode": "incremental", "watermark_column": "GXSJ", "key_columns": ["SFZH"]}
    )
    base = pull_sql(storage, "cdpf_delta", incremental, date(2026, 11, 1), [], now=datetime(2026, 11, 1))
    assert base.rows == 30
    with engine.begin() as conn:
        conn.execute(
            table.insert(), [{"SFZH": "110101199001019999", "XM": "新", "GXSJ": "2026-10-31 09:00:00"}]
        )
    delta = pull_sql(storage, "cdpf_delta", incremental, date(2026, 11, 2), [], now=datetime(2026, 11, 2))
    landed = pd.concat(pd.read_parquet(p) for p in delta.path.glob("part-*.parquet"))
    assert list(landed["XM"]) == ["新"]
    engine.dispose()
