"""Merge-result frames for master-store tests, and a store URL fixture over both backends.

The frames have the shape transforms.merge.MergeResult promises (docs: issue-5 interface): the
attribute columns, `sources` (one provenance character per attribute), the four batch columns and
record_hash over attributes + sources. Also imported by the kill-mid-merge subprocess (run with
this folder on PYTHONPATH), so it builds the same frames from the same arguments every time.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from transforms import merge
from transforms.ids import check_char
from transforms.merge import ATTRIBUTE_COLUMNS, CONFLICT_COLUMNS, coerce

# police: identity and 户籍; cdpf: certificate and needs; civil: assistance; hrss: employment
SOURCES = "P" * 6 + "C" * 8 + "M" * 5 + "H" * 3 + "P" + "C" * 3
BATCHES = {"cdpf": "cdpf-b1", "police": "police-b1", "civil": "civil-b1", "hrss": "hrss-b1"}
SURNAMES = np.array(list("王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗"))
GIVEN = np.array(["伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "䶮", "洋", "艳", "勇", "军"])


def ids(n: int, start: int = 0) -> pd.Series:
    """n valid, distinct 18-character ID numbers (checksums right), deterministic from `start`."""
    k = np.arange(start, start + n)
    born = pd.Timestamp("1950-01-01") + pd.to_timedelta(k // 900, unit="D")
    first17 = pd.Series(
        "330106" + born.strftime("%Y%m%d") + pd.Index(k % 900 + 100).astype(str), dtype="string"
    )
    return (first17 + check_char(first17)).astype("string")


def _hash_covers_sources() -> bool:
    probe = build_master(2, hashed=False)
    other = probe.assign(sources="-" * len(SOURCES))
    return bool((merge.record_hash(probe) != merge.record_hash(other)).any())


def record_hash(master: pd.DataFrame) -> pd.Series:
    """transforms.merge.record_hash once it covers `sources` (the interface); the same recipe locally until then."""
    if _hash_covers_sources():
        return merge.record_hash(master)
    hashed = pd.util.hash_pandas_object(master[[*ATTRIBUTE_COLUMNS, "sources"]], index=False)
    return pd.Series(hashed.to_numpy().view(np.int64), index=master.index, dtype="Int64")


def rehash(master: pd.DataFrame) -> pd.DataFrame:
    return master.assign(record_hash=record_hash(master))


def build_master(
    n: int, start: int = 0, batches: dict[str, str] | None = None, hashed: bool = True
) -> pd.DataFrame:
    """A master frame of n persons in the MergeResult.master column order."""
    b = batches or BATCHES
    k = np.arange(start, start + n)
    ident = ids(n, start)
    raw = {
        "id_number": ident,
        "name": pd.Series(SURNAMES[k % len(SURNAMES)]) + pd.Series(GIVEN[k % len(GIVEN)]),
        "gender": np.where(k % 2 == 0, "male", "female"),
        "birth_date": pd.Timestamp("1950-01-01") + pd.to_timedelta(k // 900, unit="D"),
        "hukou_county": np.where(k % 3 == 0, "330106", "330102"),
        "hukou_status": np.where(k % 17 == 0, "moved_out", "resident"),
        "death_date": pd.Series([pd.NaT] * n),
        "cert_number": ident + pd.Series(k % 7 + 1).astype(str) + pd.Series(k % 4 + 1).astype(str),
        "category": k % 7 + 1,
        "level": k % 4 + 1,
        "cert_status": np.where(k % 11 == 0, "expired", "active"),
        "cert_issued": pd.Timestamp("2018-05-01") + pd.to_timedelta(k % 365, unit="D"),
        "cert_valid_until": pd.Timestamp("2028-05-01") + pd.to_timedelta(k % 365, unit="D"),
        "needs_long_term_care": k % 5 == 0,
        "institutional_care": k % 13 == 0,
        "dibao": k % 4 == 0,
        "dibao_edge": k % 9 == 0,
        "tekun": k % 23 == 0,
        "orphan_support": np.zeros(n, dtype=bool),
        "dibao_standard": np.where(k % 4 == 0, 1150.0, np.nan),
        "employment": np.where(k % 3 == 0, "employed", "unemployed"),
        "pension_type": np.where(k % 2 == 0, "urban_employee", None),
        "work_injury_care": k % 29 == 0,
        "hukou_nature": np.where(k % 2 == 0, "rural", "urban"),
        "lower_limb": k % 6 == 3,
        "wheelchair_vehicles": np.where(k % 6 == 3, k % 2, 0),
        "able_to_work": k % 5 == 1,
    }
    frame = pd.DataFrame({c: coerce(pd.Series(raw[c]), kind) for c, kind in ATTRIBUTE_COLUMNS.items()})
    frame["sources"] = pd.Series(SOURCES, index=frame.index, dtype="string")
    for source in ("cdpf", "police", "civil", "hrss"):
        frame[f"{source}_batch"] = pd.Series(b[source], index=frame.index, dtype="string")
    frame["record_hash"] = record_hash(frame) if hashed else pd.Series(0, index=frame.index, dtype="Int64")
    return frame


def name_conflicts(master: pd.DataFrame, rows: list[int]) -> pd.DataFrame:
    """NAME_MISMATCH records (police vs cdpf) for the persons at these positions."""
    picked = master.iloc[rows]
    return (
        pd.DataFrame(
            {
                "id_number": picked["id_number"],
                "conflict_type": "NAME_MISMATCH",
                "source_a": "police",
                "value_a": picked["name"],
                "source_b": "cdpf",
                "value_b": picked["name"].str.slice(0, 1) + "某",
                "batch_a": picked["police_batch"],
                "batch_b": picked["cdpf_batch"],
                "department": "cdpf",
            }
        )
        .astype("string")[list(CONFLICT_COLUMNS)]
        .reset_index(drop=True)
    )


def no_conflicts() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype="string") for c in CONFLICT_COLUMNS})


def no_id_changes() -> pd.DataFrame:
    return pd.DataFrame(
        {c: pd.Series([], dtype="string") for c in ("old_id", "new_id", "source", "batch_id")}
    )


@dataclass
class Result:
    """Stands in for transforms.merge.MergeResult (master, conflicts, id_changes)."""

    master: pd.DataFrame
    conflicts: pd.DataFrame = field(default_factory=no_conflicts)
    id_changes: pd.DataFrame = field(default_factory=no_id_changes)


def second_merge(n: int) -> Result:
    """The day after `Result(build_master(n))`: a tenth changed, some gone, some new, a conflict moved."""
    first = build_master(n)
    master = first.copy()
    changed = np.arange(0, n, 10)
    master.loc[changed, "employment"] = "retired"
    master.loc[changed, "hrss_batch"] = "hrss-b2"
    master = rehash(master)
    gone = np.arange(5, n, 97)
    master = master.drop(index=gone)
    master = pd.concat([master, build_master(n // 50, start=n)], ignore_index=True)
    master = master.sort_values("id_number", kind="stable").reset_index(drop=True)
    return Result(master, name_conflicts(master, [3, 4]))


def first_merge(n: int) -> Result:
    master = build_master(n)
    return Result(master, name_conflicts(master, [1, 3]))


DAY1, DAY2, DAY3 = date(2026, 3, 1), date(2026, 4, 1), date(2026, 5, 1)


# -- store URLs on both backends ----------------------------------------------------------------------


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.sqlite),
        pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.integration]),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def new_store_url(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[], str]]:
    """Makes empty store databases: SQLite files in tmp_path, or throwaway PostgreSQL databases."""
    extra: list[tuple[sa.Engine, str]] = []
    count = 0

    def make() -> str:
        nonlocal count
        count += 1
        if backend == "sqlite":
            return f"sqlite:///{tmp_path}/store{count}.sqlite"
        first = sa.make_url(request.getfixturevalue("pg_url"))
        if count == 1:
            return first.render_as_string(hide_password=False)
        name = f"lianban_test_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(first.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        extra.append((admin, name))
        return first.set(database=name).render_as_string(hide_password=False)

    yield make
    for admin, name in extra:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


@pytest.fixture
def store_url(new_store_url: Callable[[], str]) -> str:
    return new_store_url()


def table_frame(url: str, table: str, order: str) -> pd.DataFrame:
    """A whole table read raw (for before/after comparisons that must not depend on the store's reads)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            frame = pd.read_sql(sa.text(f"SELECT * FROM {table} ORDER BY {order}"), conn)
    finally:
        engine.dispose()
    return frame


def state(url: str) -> dict[str, pd.DataFrame]:
    """Every master table except run (whose write times differ between two runs of the same merge)."""
    return {
        "person": table_frame(url, "person", "id_number"),
        "person_version": table_frame(url, "person_version", "id_number, version"),
        "conflict": table_frame(url, "conflict", "id_number, conflict_type, source_a, source_b"),
        "id_change": table_frame(url, "id_change", "old_id, new_id"),
    }


def assert_same_state(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)
