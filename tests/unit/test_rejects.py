"""The reject file back to a department: its own headers and encoding, line numbers, codes and Chinese
reasons, formulas defused, a manifest like the partner files, written once per batch."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import date
from pathlib import Path

import pandas as pd
from batch_builders import holders, land_csv

from core.contracts import REASONS, load_contract
from core.settings import ROOT, Settings
from core.storage import Storage
from stages.exchange import write_pending_rejects, write_reject_file
from stages.ingest import stage_batch

AS_OF = date(2025, 6, 30)
HRSS = load_contract(ROOT / "schemas/sources/hrss.yaml")
HEADER = "公民身份号码,姓名,就业状态,养老保险类型,工伤保险生活护理费,更新时间"


def _hrss_batch(settings: Settings) -> list[str]:
    people = holders(8)
    lines = [HEADER] + [f"{h},王㵘,就业,职工,否,2025-06-01 08:00:00" for h in people[:6]]
    lines += [
        f"{people[6]},李䶮,在岗,职工,否,2025-06-01 08:00:00",  # line 8: unknown code; a rare character
        f'{people[7]},=HYPERLINK("x"),就业,职工,否,2025-13-01 08:00:00',  # line 9: bad date; a formula
    ]
    land_csv(settings, "hrss", "hrss-rej", lines, "gb18030")
    assert stage_batch(settings, "hrss", "hrss-rej", AS_OF).quarantined == 2
    return people


def test_hrss_reject_file_round_trips_in_gb18030_with_native_headers(settings: Settings) -> None:
    people = _hrss_batch(settings)
    made = write_reject_file(Storage(settings), HRSS, "hrss-rej", "run-1", AS_OF)
    assert made is not None and made.rows == 2
    data = made.path.read_bytes()
    assert "䶮".encode("gb18030") in data and "李䶮".encode() not in data  # GB18030, not UTF-8
    text = data.decode("gb18030")  # strict: every byte decodes
    assert text.split("\r\n")[0] == HEADER + ",源文件,行号,错误代码,错误原因"
    table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    assert table["公民身份号码"].tolist() == [people[6], people[7]]  # raw IDs: it goes back to their owner
    assert table["行号"].tolist() == ["8", "9"] and set(table["源文件"]) == {"hrss_persons_20250630.csv"}
    assert table["就业状态"].tolist() == ["在岗", "就业"]  # the department's own value, not a mapped one
    assert table["姓名"].tolist() == ["李䶮", '\'=HYPERLINK("x")']  # formula defused with a quote
    assert table["错误代码"].tolist() == ["CODE_UNKNOWN", "DATE_INVALID"]
    assert (
        table.loc[0, "错误原因"].startswith(REASONS["CODE_UNKNOWN"])
        and "就业状态" in table.loc[0, "错误原因"]
    )
    assert (
        table.loc[1, "错误原因"].startswith(REASONS["DATE_INVALID"])
        and "更新时间" in table.loc[1, "错误原因"]
    )
    manifest = json.loads(made.manifest.read_text(encoding="utf-8"))
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest() and manifest["bytes"] == len(data)
    assert (manifest["rows"], manifest["encoding"], manifest["id_mode"]) == (2, "gb18030", "raw")
    assert manifest["department"] == HRSS.department and manifest["batch_id"] == "hrss-rej"
    assert manifest["columns"] == [*HRSS.natives, "源文件", "行号", "错误代码", "错误原因"]


def test_reject_file_is_written_once_per_batch(settings: Settings) -> None:
    _hrss_batch(settings)
    storage = Storage(settings)
    first = write_reject_file(storage, HRSS, "hrss-rej", "run-1", AS_OF)
    assert first is not None
    sent, manifest = first.path.read_bytes(), first.manifest.read_bytes()
    retry = write_reject_file(storage, HRSS, "hrss-rej", "run-1", AS_OF)  # the same run, retried
    assert retry == first and first.path.read_bytes() == sent and first.manifest.read_bytes() == manifest
    stage_batch(settings, "hrss", "hrss-rej", AS_OF)  # re-staged: same quarantine
    assert write_reject_file(storage, HRSS, "hrss-rej", "run-2", AS_OF) is None  # a later run: already sent
    assert first.path.read_bytes() == sent and first.manifest.read_bytes() == manifest
    assert write_pending_rejects(storage, {"hrss": HRSS}, "run-2", AS_OF) == []
    assert [r.batch_id for r in write_pending_rejects(storage, {"hrss": HRSS}, "run-1", AS_OF)] == [
        "hrss-rej"
    ]


def test_a_batch_without_quarantine_or_staging_gets_no_reject_file(
    settings: Settings, tmp_path: Path
) -> None:
    people = holders(2)
    lines = [HEADER] + [f"{h},王㵘,就业,职工,否,2025-06-01 08:00:00" for h in people]
    land_csv(settings, "hrss", "hrss-clean", lines, "gb18030")
    assert stage_batch(settings, "hrss", "hrss-clean", AS_OF).quarantined == 0
    assert write_pending_rejects(Storage(settings), {"hrss": HRSS}, "run-1", AS_OF) == []
    assert not (Storage(settings).var / "outbox").exists()


def test_a_sql_batch_rejects_name_the_front_database_not_internal_parts(
    settings: Settings, tmp_path: Path
) -> None:
    from batch_builders import cdpf_row, land_sql

    cdpf = load_contract(ROOT / "schemas/sources/cdpf.yaml")
    people = holders(4)
    rows = [cdpf_row(h) for h in people[:3]] + [cdpf_row(people[3], CSRQ="2025-13-01")]  # row 4: a bad date
    land_sql(settings, "cdpf", "cdpf-rej", rows, tmp_path)
    assert stage_batch(settings, "cdpf", "cdpf-rej", AS_OF).quarantined == 1
    made = write_reject_file(Storage(settings), cdpf, "cdpf-rej", "run-1", AS_OF)
    assert made is not None
    raw = made.path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 with BOM for Excel
    table = pd.read_csv(made.path, dtype=str, encoding="utf-8-sig", keep_default_na=False)
    assert table[["源文件", "行号"]].values.tolist() == [["前置库 cdpf", "4"]]
    assert "part-" not in raw.decode("utf-8-sig")
