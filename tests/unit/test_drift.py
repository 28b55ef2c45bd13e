"""Schema drift holds the batch with a clear report, for every transport's file shape; it never crashes
the stage and never drops rows silently: a missing, renamed or unexpected column, or a changed type."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
from batch_builders import cdpf_row, holders, land_csv, land_pages, land_sql, staged_summary

from core.contracts import load_contract
from core.settings import Settings
from core.storage import Storage
from stages.exchange import write_reject_file
from stages.ingest import stage_batch

ROOT = Path(__file__).resolve().parents[2]
AS_OF = date(2025, 6, 30)
EXTERNAL = re.compile(r"https?:|//|<(script|link|img|iframe)\b|\bsrc=|\bhref=|url\(|@import", re.I)
RAW_ID = re.compile(r"(?<![0-9A-Za-z*])\d{17}[0-9Xx](?![0-9A-Za-z*])")


def _renamed(row: dict[str, str], old: str, new: str) -> dict[str, str]:
    return {new if k == old else k: v for k, v in row.items()}


def _assert_held_for_drift(
    settings: Settings, source: str, batch_id: str, missing: list[str], unexpected: list[str]
) -> None:
    storage = Storage(settings)
    record = storage.batch(batch_id)
    assert record is not None and record["status"] == "held" and "schema drift" in record["note"]
    for column in (*missing, *unexpected):
        assert column in record["note"]
    summary = staged_summary(settings, source, batch_id)
    assert summary["verdict"] == "held"
    assert (summary["schema_drift"]["missing"], summary["schema_drift"]["unexpected"]) == (
        missing,
        unexpected,
    )
    out = storage.staged(source, batch_id)
    assert not (out / "accepted.parquet").exists() and not (out / "quarantine.parquet").exists()
    html = (out / "validation.html").read_text(encoding="utf-8")
    assert "结构变化" in html and "暂扣 held" in html
    for column in (*missing, *unexpected):
        assert column in html
    assert not EXTERNAL.search(html) and not RAW_ID.search(html)
    assert storage.last_accepted(source) is None  # nothing of it reaches the master
    contract = load_contract(ROOT / f"schemas/sources/{source}.yaml")
    assert write_reject_file(storage, contract, batch_id, "run-1", AS_OF) is None  # no row was read


@pytest.mark.parametrize(
    ("case", "missing", "unexpected"),
    [("missing", ["JGYH"], []), ("unexpected", [], ["BZ"]), ("renamed", ["XB"], ["XBDM"])],
)
def test_cdpf_column_drift_holds_the_batch(
    settings: Settings, tmp_path: Path, case: str, missing: list[str], unexpected: list[str]
) -> None:
    rows = [cdpf_row(h) for h in holders(3)]
    if case == "missing":
        rows = [{k: v for k, v in r.items() if k != "JGYH"} for r in rows]
    elif case == "unexpected":
        rows = [r | {"BZ": "备注"} for r in rows]
    else:
        rows = [_renamed(r, "XB", "XBDM") for r in rows]
    land_sql(settings, "cdpf", f"cdpf-drift-{case}", rows, tmp_path)
    result = stage_batch(settings, "cdpf", f"cdpf-drift-{case}", AS_OF)
    assert (result.status, result.rows, result.accepted, result.quarantined) == ("held", 3, 0, 0)
    _assert_held_for_drift(settings, "cdpf", f"cdpf-drift-{case}", missing, unexpected)


def test_hrss_renamed_header_holds_the_batch(settings: Settings) -> None:
    a, b = holders(2)
    lines = [
        "公民身份号码,名字,就业状态,养老保险类型,工伤保险生活护理费,更新时间",  # 姓名 renamed 名字
        f"{a},李䶮,就业,职工,否,2025-06-01 08:00:00",
        f"{b},王㵘,失业,城乡居民,是,2025-06-01 08:00:00",
    ]
    land_csv(settings, "hrss", "hrss-drift", lines, "gb18030")
    assert stage_batch(settings, "hrss", "hrss-drift", AS_OF).status == "held"
    _assert_held_for_drift(settings, "hrss", "hrss-drift", ["姓名"], ["名字"])


POLICE = load_contract(ROOT / "schemas/sources/police.yaml")


def _police_item(holder: str, **overrides: object) -> dict[str, object]:
    """Every contracted key (optional ones null), then the values of a living person."""
    item: dict[str, object] = {native: None for native in POLICE.natives}
    item |= {
        "gmsfhm": holder,
        "xm": "李䶮",
        "xbdm": "1",
        "csrq": holder[6:14],
        "hjdz_xzqhdm": holder[:6],
        "hkztdm": "0",
        "swrq": None,
        "gxsj": "2025-06-01 08:00:00",
    }
    return item | overrides


def test_police_page_with_a_new_and_a_missing_key_holds_the_batch(settings: Settings) -> None:
    items = [{k: v for k, v in _police_item(h).items() if k != "xbdm"} | {"hjdz": "杭州"} for h in holders(3)]
    land_pages(settings, "police", "police-drift", items)
    assert stage_batch(settings, "police", "police-drift", AS_OF).status == "held"
    _assert_held_for_drift(settings, "police", "police-drift", ["xbdm"], ["hjdz"])


def test_changed_type_of_a_sparse_column_holds_what_the_invalid_ratio_lets_through(
    settings: Settings,
) -> None:
    """Police start sending 死亡日期 as Chinese text: 25 of 200 rows (12.5 %) fail, under the 20 % invalid
    ratio, so only the column type gate catches it; the report names the column, its type and counts."""
    people = holders(200)
    items = [
        _police_item(h, hkztdm="1", swrq="2025年1月1日") if i < 25 else _police_item(h)
        for i, h in enumerate(people)
    ]
    land_pages(settings, "police", "police-type", items)
    result = stage_batch(settings, "police", "police-type", AS_OF)
    assert (result.status, result.accepted, result.quarantined) == ("held", 175, 25)
    summary = staged_summary(settings, "police", "police-type")
    gates = {g["gate"]: g for g in summary["gates"]}
    assert gates["invalid_ratio"]["passed"] and not gates["column_types"]["passed"]
    assert gates["column_types"]["value"] == 1.0
    assert "swrq (death_date, date) 25 of 25 values do not parse" in result.note
    assert "changed type" in result.note
    html = (Storage(settings).staged("police", "police-type") / "validation.html").read_text("utf-8")
    assert "swrq (death_date, date) 25 of 25" in html and "触发 tripped" in html
    assert not EXTERNAL.search(html) and not RAW_ID.search(html)
    assert Storage(settings).last_accepted("police") is None
    # the refused rows are not dropped: they are in quarantine and go back to the department
    contract = load_contract(ROOT / "schemas/sources/police.yaml")
    made = write_reject_file(Storage(settings), contract, "police-type", "run-1", AS_OF)
    assert made is not None and made.rows == 25


def test_recoded_column_is_a_type_change_and_a_few_bad_codes_are_not(
    settings: Settings, tmp_path: Path
) -> None:
    """XB recoded from 1/2 to 男/女 in every row trips the column gate; 4 unknown codes in 25 do not."""
    people = holders(25)
    land_sql(settings, "cdpf", "cdpf-recoded", [cdpf_row(h, XB="女") for h in people], tmp_path)
    held = stage_batch(settings, "cdpf", "cdpf-recoded", AS_OF)
    assert held.status == "held" and "XB (gender, code) 25 of 25 values do not parse" in held.note
    few = [cdpf_row(h, XB="9") if i < 4 else cdpf_row(h) for i, h in enumerate(people)]
    land_sql(settings, "cdpf", "cdpf-few-bad", few, tmp_path)
    fine = stage_batch(settings, "cdpf", "cdpf-few-bad", AS_OF)
    assert (fine.status, fine.quarantined) == ("accepted", 4)
    gates = {g["gate"]: g for g in staged_summary(settings, "cdpf", "cdpf-few-bad")["gates"]}
    assert gates["column_types"]["passed"] and gates["column_types"]["value"] == pytest.approx(4 / 25)
