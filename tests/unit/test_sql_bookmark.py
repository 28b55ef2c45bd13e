"""Held-out rows of an incremental pull (a watermark value beyond the run's clock) through staging: they
are quarantined with their reason and returned to the department, the good rows are accepted."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from batch_builders import cdpf_row, holders

from connectors.sql import pull_sql
from core.settings import Settings, SqlSource
from core.storage import Storage
from stages.ingest import HELD_OUT_ZH, stage_batch

AS_OF = date(2025, 6, 30)


def test_rows_dated_in_the_future_are_quarantined_with_their_reason(
    settings: Settings, tmp_path: Path
) -> None:
    people = holders(30)
    rows = [cdpf_row(h) for h in people[:29]] + [cdpf_row(people[29], GXSJ="9999-12-31 23:59:59")]
    url = f"sqlite:///{tmp_path / 'front.sqlite'}"
    engine = sa.create_engine(url)
    pd.DataFrame(rows).to_sql("CJR_CJRZ", engine, index=False)
    engine.dispose()
    config = SqlSource(
        transport="sql", contract="schemas/sources/cdpf.yaml", url=url, table="CJR_CJRZ", mode="incremental",
        watermark_column="GXSJ", key_columns=["SFZH"],
    )  # fmt: skip
    landed = pull_sql(Storage(settings), "cdpf", config, AS_OF, [], now=datetime(2025, 6, 30, 9, 0))
    assert landed.rows == 29 and landed.manifest.held_out[0].rows == 1

    result = stage_batch(settings, "cdpf", landed.batch_id, AS_OF)
    assert (result.status, result.rows, result.accepted, result.quarantined) == ("accepted", 30, 29, 1)
    quarantine = pd.read_parquet(result.path / "quarantine.parquet")
    assert quarantine["id_raw"].tolist() == [people[29]]
    assert quarantine["_source_file"].tolist() == ["held-out.parquet"]
    assert quarantine["reason_codes"].tolist() == ["DATE_INVALID"]
    assert HELD_OUT_ZH in quarantine["reasons_zh"].iloc[0]
    assert '"GXSJ":"9999-12-31 23:59:59"' in quarantine["raw"].iloc[0]
    accepted = pd.read_parquet(result.path / "accepted.parquet")
    assert sorted(accepted["id_number"]) == sorted(people[:29])
