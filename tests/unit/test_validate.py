"""stage_batch end to end on hand-built landing directories: split, reason codes, masking, verdicts."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from batch_builders import cdpf_row, check, land, land_sql

from core.contracts import REASONS, load_contract
from core.masking import mask_id
from core.settings import Settings, load_settings
from core.storage import Storage, sync_gx_context
from stages.exchange import write_reject_file
from stages.ingest import stage_batch
from transforms.validate import SuiteError, duplicate_rows, load_suite, run_suite

ROOT = Path(__file__).resolve().parents[2]
AS_OF = date(2025, 6, 30)
ID_PATTERN = re.compile(r"(?<![\d.])(\d{15}|\d{17}[\dXx])")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(var_dir=tmp_path)


A, C, D = (check(f"33011{i}1980010100{i}") for i in (2, 4, 6))  # 330112/330114: new districts
B = check("33011319800101005")  # 330113 临平区 (2021); ends in X
E = "11010519491231002X"


def cdpf_rows() -> list[dict[str, str]]:
    return [
        cdpf_row(A),  # line 1: clean, new county code
        cdpf_row(B, SFZH=" '" + B.lower()),  # line 2: repairable ID (cert number clean)
        cdpf_row(C, SFZH=C[:17] + ("0" if C[17] != "0" else "1")),  # line 3: ID_CHECKSUM
        cdpf_row(A),  # line 4: exact duplicate of line 1
        cdpf_row(D, CJRZH=D + "21"),  # line 5: category digit 2 but CJLB 1 -> CERT_MISMATCH
        cdpf_row(D, CJRZH=E + "11"),  # line 6: certificate of another person -> CERT_MISMATCH
        cdpf_row(E, XB="9", YXQZ="2030-02-30"),  # line 7: CODE_UNKNOWN + DATE_INVALID
        cdpf_row(E, XM=""),  # line 8: FIELD_MISSING
        cdpf_row(E, SFZH="3.30106E+17"),  # line 9: ID_SPREADSHEET_DAMAGED
        cdpf_row(E, GXSJ="2025-06-02 09:00:00"),  # line 10: clean (same person, later update: merge's job)
        cdpf_row(A, CJRZH=A + "81"),  # line 11: category 8 in the certificate number -> CERT_MISMATCH
    ]


def staged(settings: Settings, source: str, batch_id: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    out = Storage(settings).staged(source, batch_id)
    validation = json.loads((out / "validation.json").read_text(encoding="utf-8"))
    return pd.read_parquet(out / "accepted.parquet"), pd.read_parquet(out / "quarantine.parquet"), validation


def test_cdpf_batch_is_split_with_reason_codes(settings: Settings, tmp_path: Path) -> None:
    land_sql(settings, "cdpf", "cdpf-20250630-a", cdpf_rows(), tmp_path)
    result = stage_batch(
        settings, "cdpf", "cdpf-20250630-a", AS_OF, max_invalid_ratio=0.9
    )  # defects on purpose

    accepted, quarantine, validation = staged(settings, "cdpf", "cdpf-20250630-a")
    assert B.endswith("X")
    assert (result.rows, result.accepted, result.quarantined) == (11, 3, 8)
    assert accepted["_source_line"].tolist() == [1, 2, 10]
    assert accepted["id_number"].tolist() == [A, B, E]  # B repaired: spaces, apostrophe, lowercase x
    assert set(accepted["_batch_id"]) == {"cdpf-20250630-a"}
    assert list(accepted.columns) == [
        c.name for c in load_contract(ROOT / "schemas/sources/cdpf.yaml").columns
    ] + [
        "_batch_id",
        "_source_file",
        "_source_line",
        "_id_upgraded_from15",
        "_id_flags",
    ]
    assert not accepted["_id_upgraded_from15"].any()
    assert str(accepted["needs_long_term_care"].dtype) == "bool"
    assert str(accepted["category"].dtype) == "Int64"
    assert "_id_fix" not in accepted.columns

    by_line = dict(zip(quarantine["_source_line"], quarantine["reason_codes"], strict=True))
    assert by_line == {
        3: "ID_CHECKSUM",
        4: "DUPLICATE_ROW",
        5: "CERT_MISMATCH",
        6: "CERT_MISMATCH",
        7: "CODE_UNKNOWN;DATE_INVALID",
        8: "FIELD_MISSING",
        9: "ID_SPREADSHEET_DAMAGED",
        11: "CERT_MISMATCH",
    }
    assert list(quarantine.columns) == [
        "_batch_id",
        "_source_file",
        "_source_line",
        "id_raw",
        "reason_codes",
        "reasons_zh",
        "raw",
    ]
    row9 = quarantine.set_index("_source_line").loc[9]
    assert row9["id_raw"] == "3.30106E+17"
    assert json.loads(row9["raw"])["SFZH"] == "3.30106E+17"
    assert json.loads(row9["raw"])["XM"] == "李䶮"
    zh = quarantine.set_index("_source_line")["reasons_zh"]
    assert zh[8] == "必填字段为空(姓名 XM)"
    assert "性别 XB" in zh[7] and "有效期至 YXQZ" in zh[7]
    assert zh[5].startswith("残疾人证号前18位")

    assert validation["reason_counts"] == {
        "DUPLICATE_ROW": 1,
        "ID_SPREADSHEET_DAMAGED": 1,
        "ID_CHECKSUM": 1,
        "FIELD_MISSING": 1,
        "CODE_UNKNOWN": 1,
        "DATE_INVALID": 1,
        "CERT_MISMATCH": 3,
    }
    assert validation["id_fixes"] == {"SPACES": 1, "APOSTROPHE": 1, "LOWER_X": 1}
    assert validation["gx"]["evaluated"] == len(
        load_suite(ROOT / "gx/expectations/cdpf.json", set(accepted.columns))["expectations"]
    )
    (gx_result,) = (settings.var_dir / validation["gx"]["stored"]).glob("*/*.json")  # GX's own, kept
    assert json.loads(gx_result.read_text("utf-8"))["statistics"]["evaluated_expectations"] == len(
        validation["gx"]["results"]
    )

    record = Storage(settings).batch("cdpf-20250630-a")
    assert record is not None
    assert (record["status"], record["accepted_rows"], record["quarantined_rows"]) == ("accepted", 3, 8)


def test_validation_json_carries_no_unmasked_id(settings: Settings, tmp_path: Path) -> None:
    land_sql(settings, "cdpf", "cdpf-20250630-m", cdpf_rows(), tmp_path)
    stage_batch(settings, "cdpf", "cdpf-20250630-m", AS_OF)
    text = (Storage(settings).staged("cdpf", "cdpf-20250630-m") / "validation.json").read_text(
        encoding="utf-8"
    )
    assert not ID_PATTERN.search(text), ID_PATTERN.search(text)
    for number in (A, B, C, D, E):
        assert number not in text and number[:17] not in text
    assert f'"{A[:6]}**********{A[-2:]}81"' in text  # the bad certificate number, masked (first 6 + last 4)
    stored = settings.var_dir / json.loads(text)["gx"]["stored"]
    (gx_result,) = stored.glob("*/*.json")  # GX's own result: positions and counts, no values
    gx_text = gx_result.read_text(encoding="utf-8")
    assert '"unexpected_index_list"' in gx_text
    assert not ID_PATTERN.search(gx_text), ID_PATTERN.search(gx_text)


def test_restaging_is_idempotent(settings: Settings, tmp_path: Path) -> None:
    land_sql(settings, "cdpf", "cdpf-20250630-i", cdpf_rows(), tmp_path)
    first = stage_batch(settings, "cdpf", "cdpf-20250630-i", AS_OF)
    accepted1, quarantine1, _ = staged(settings, "cdpf", "cdpf-20250630-i")
    second = stage_batch(settings, "cdpf", "cdpf-20250630-i", AS_OF)
    accepted2, quarantine2, _ = staged(settings, "cdpf", "cdpf-20250630-i")
    assert (first.status, first.accepted, first.quarantined) == (
        second.status,
        second.accepted,
        second.quarantined,
    )
    pd.testing.assert_frame_equal(accepted1, accepted2)
    pd.testing.assert_frame_equal(quarantine1, quarantine2)
    assert sorted(p.name for p in Storage(settings).staged("cdpf", "cdpf-20250630-i").iterdir()) == [
        "accepted.parquet",
        "quarantine.parquet",
        "validation.html",
        "validation.json",
    ]


def test_high_invalid_ratio_holds_the_batch(settings: Settings, tmp_path: Path) -> None:
    rows = [cdpf_row(A)] + [cdpf_row(E, XB="0", GXSJ=f"2025-06-01 08:00:{i:02d}") for i in range(4)]
    land_sql(settings, "cdpf", "cdpf-20250630-h", rows, tmp_path)
    result = stage_batch(settings, "cdpf", "cdpf-20250630-h", AS_OF)
    assert (result.status, result.accepted, result.quarantined) == ("held", 1, 4)
    record = Storage(settings).batch("cdpf-20250630-h")
    assert record is not None and record["status"] == "held" and "80.0%" in record["note"]
    assert Storage(settings).last_accepted("cdpf") is None


def test_schema_drift_holds_the_batch_with_a_note(settings: Settings, tmp_path: Path) -> None:
    rows = [{k: v for k, v in cdpf_row(A).items() if k != "JGYH"} | {"BZ": "x"}]
    land_sql(settings, "cdpf", "cdpf-20250630-d", rows, tmp_path)
    result = stage_batch(settings, "cdpf", "cdpf-20250630-d", AS_OF)
    assert result.status == "held" and result.accepted == 0
    assert "JGYH" in result.note and "BZ" in result.note
    validation = json.loads(
        (Storage(settings).staged("cdpf", "cdpf-20250630-d") / "validation.json").read_text(encoding="utf-8")
    )
    assert validation["schema_drift"]["missing"] == ["JGYH"]
    assert validation["schema_drift"]["unexpected"] == ["BZ"]
    assert not (Storage(settings).staged("cdpf", "cdpf-20250630-d") / "accepted.parquet").exists()
    record = Storage(settings).batch("cdpf-20250630-d")
    assert record is not None and record["status"] == "held" and "schema drift" in record["note"]


def test_hrss_csv_batch(settings: Settings) -> None:
    lines = [
        "公民身份号码,姓名,就业状态,养老保险类型,工伤保险生活护理费,更新时间",
        f"{A},李䶮,就业,职工,否,2025-06-01 08:00:00",
        f"{B},王㵘,失业,城乡居民,是,2025-06-01 08:00:00",
        f"{A},李䶮,就业,职工,否,2025-06-01 08:00:00",  # duplicate: line 4
        f"{C[:17]},张三,待业,职工,否,2025-06-01 08:00:00",  # 17 digits and an unknown code: line 5
        f"{D},赵四,就业,职工,否,",  # missing updated_at: line 6
    ]
    data = ("\r\n".join(lines) + "\r\n").encode("gb18030")
    land(
        settings,
        "hrss",
        "hrss-20250630-a",
        "folder",
        {"hrss_persons_20250630.csv": data},
        {"hrss_persons_20250630.csv": 5},
    )
    result = stage_batch(settings, "hrss", "hrss-20250630-a", AS_OF)
    assert (result.status, result.accepted, result.quarantined) == ("held", 2, 3)  # 60 % invalid
    accepted, quarantine, validation = staged(settings, "hrss", "hrss-20250630-a")
    assert accepted["name"].tolist() == ["李䶮", "王㵘"]
    assert accepted["work_injury_care"].tolist() == [False, True]
    assert dict(zip(quarantine["_source_line"], quarantine["reason_codes"], strict=True)) == {
        4: "DUPLICATE_ROW",
        5: "ID_FORMAT;CODE_UNKNOWN",
        6: "FIELD_MISSING",
    }
    assert quarantine["_source_file"].unique().tolist() == ["hrss_persons_20250630.csv"]
    assert validation["reason_counts"]["DUPLICATE_ROW"] == 1


def test_suites_load_and_match_their_contracts() -> None:
    for source in ("cdpf", "civil", "hrss", "police"):
        contract = load_contract(ROOT / "schemas" / "sources" / f"{source}.yaml")
        doc = load_suite(ROOT / "gx" / "expectations" / f"{source}.json", set(contract.names))
        not_null = {
            e["kwargs"]["column"]
            for e in doc["expectations"]
            if e["type"] == "expect_column_values_to_not_be_null"
        }
        assert {c.name for c in contract.columns if c.required} <= not_null
        assert all(
            e["meta"]["reason_code"] in REASONS and e["meta"]["reason_zh"] for e in doc["expectations"]
        )
        valid_ids = [
            e for e in doc["expectations"] if e["type"] == "expect_column_values_to_be_valid_id_number"
        ]
        assert [e["kwargs"]["column"] for e in valid_ids] == ["id_number"]
    cdpf = json.loads((ROOT / "gx" / "expectations" / "cdpf.json").read_text(encoding="utf-8"))
    assert any(e["kwargs"].get("regex") == "^[0-9]{17}[0-9X][1-7][1-4]$" for e in cdpf["expectations"])


def test_importing_validate_does_not_import_great_expectations() -> None:
    code = "import sys, transforms.validate; assert 'great_expectations' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_civil_batch_checks_float_and_codes(settings: Settings, tmp_path: Path) -> None:
    row = {
        "SFZH": A,
        "XM": "李䶮",
        "JZLX": "01",
        "XZQH": "330112",
        "DBBZ": "1150",
        "KSRQ": "20240101",
        "JSRQ": "",
        "ZT": "1",
        "GXSJ": "2025-06-01 08:00:00",
    }
    rows = [row, row | {"JZLX": "04"}, row | {"SFZH": B, "DBBZ": "-5"}, row | {"SFZH": C, "DBBZ": ""}]
    rows += [row | {"SFZH": E, "JSRQ": "20241231", "ZT": "0"}, row | {"SFZH": D, "JZLX": "02"}]
    rows += [row | {"SFZH": D, "JZLX": "02"}]  # line 7: duplicate of line 6
    rows += [row | {"GXSJ": f"2025-06-02 08:00:0{i}"} for i in range(8)]  # keeps the invalid ratio at 20 %
    land_sql(settings, "civil", "civil-20250630-a", rows, tmp_path)
    result = stage_batch(settings, "civil", "civil-20250630-a", AS_OF)
    accepted, quarantine, _ = staged(settings, "civil", "civil-20250630-a")
    assert (result.status, result.accepted, result.quarantined) == ("accepted", 12, 3)
    assert dict(zip(quarantine["_source_line"], quarantine["reason_codes"], strict=True)) == {
        3: "FIELD_INVALID",  # a negative 低保 standard, caught by the suite
        4: "FIELD_MISSING",
        7: "DUPLICATE_ROW",
    }
    assert accepted["assistance_type"].tolist()[:2] == ["dibao", "orphan"]
    assert str(accepted["dibao_standard"].dtype) == "Float64"
    assert str(accepted["end_date"].dtype) == "datetime64[us]" and accepted["end_date"].isna().sum() == 11


def test_police_pages_batch(settings: Settings) -> None:
    item = {
        "gmsfhm": A,
        "xm": "李䶮",
        "xbdm": "1",
        "csrq": "19800101",
        "hjdz_xzqhdm": "330112",
        "hkztdm": "0",
        "swrq": None,
        "gxsj": "2025-06-01 08:00:00",
    }
    items = [
        item,
        item | {"gmsfhm": B, "hkztdm": "1", "swrq": "20250101"},
        item | {"gmsfhm": C, "hkztdm": "9"},
        item | {"gmsfhm": D},
        item | {"gmsfhm": E},
    ]
    pages = {
        "page-00001.json": json.dumps(
            {"page": 1, "page_size": 3, "total": 5, "total_pages": 2, "items": items[:3]}
        ).encode(),
        "page-00002.json": json.dumps(
            {"page": 2, "page_size": 3, "total": 5, "total_pages": 2, "items": items[3:]}
        ).encode(),
    }
    land(settings, "police", "police-20250630-a", "rest", pages, {"page-00001.json": 3, "page-00002.json": 2})
    result = stage_batch(settings, "police", "police-20250630-a", AS_OF)
    accepted, quarantine, _ = staged(settings, "police", "police-20250630-a")
    assert (result.status, result.accepted, result.quarantined) == ("accepted", 4, 1)
    assert quarantine[["_source_file", "_source_line", "reason_codes"]].values.tolist() == [
        ["page-00001.json", 3, "CODE_UNKNOWN"]
    ]
    assert accepted["hukou_status"].tolist() == ["normal", "dead", "normal", "normal"]
    assert accepted["death_date"].notna().tolist() == [False, True, False, False]
    assert accepted["_source_line"].tolist() == [1, 2, 1, 2]


def _clean_batch(settings: Settings, tmp_path: Path, batch_id: str, persons: int) -> None:
    holders = [check(f"33010619800{1 + i // 28:01d}{1 + i % 28:02d}001") for i in range(persons)]
    land_sql(settings, "cdpf", batch_id, [cdpf_row(h) for h in holders], tmp_path)


def test_volume_gate_trips_above_its_threshold_and_release_is_explicit(
    settings: Settings, tmp_path: Path
) -> None:
    assert settings.gates.max_volume_change == 0.3
    storage = Storage(settings)
    _clean_batch(settings, tmp_path, "cdpf-1", 10)
    assert stage_batch(settings, "cdpf", "cdpf-1", AS_OF).status == "accepted"
    _clean_batch(settings, tmp_path, "cdpf-2", 13)  # +30%: at the threshold, not above it
    assert stage_batch(settings, "cdpf", "cdpf-2", AS_OF).status == "accepted"
    _clean_batch(settings, tmp_path, "cdpf-3", 6)  # -53.8% against cdpf-2
    held = stage_batch(settings, "cdpf", "cdpf-3", AS_OF)
    assert held.status == "held"
    record = storage.batch("cdpf-3")
    assert record is not None and "-53.8%" in record["note"] and "cdpf-2" in record["note"]
    assert storage.last_accepted("cdpf")["batch_id"] == "cdpf-2"  # type: ignore[index]
    assert stage_batch(settings, "cdpf", "cdpf-3", AS_OF).status == "held"  # re-staging holds it again
    released = storage.release("cdpf-3", who="tester")
    assert released["status"] == "accepted" and "released by tester" in released["note"]
    assert storage.last_accepted("cdpf")["batch_id"] == "cdpf-3"  # type: ignore[index]
    with pytest.raises(ValueError, match="not held"):
        storage.release("cdpf-3", who="tester")


def test_cancellations_rise_holds_the_batch_and_master_keeps_the_last_good_one(
    settings: Settings, tmp_path: Path
) -> None:
    """The cdpf contract counts cancelled certificates; a jump past 1.5x + floor holds the batch."""
    settings.gates.event_rise_floor = 2
    storage = Storage(settings)
    holders = [check(f"33010619800{1 + i // 28:01d}{1 + i % 28:02d}001") for i in range(40)]
    first = [cdpf_row(h, ZZZT="2" if i < 4 else "1") for i, h in enumerate(holders)]  # 4 cancelled
    land_sql(settings, "cdpf", "cdpf-ev-1", first, tmp_path)
    assert stage_batch(settings, "cdpf", "cdpf-ev-1", AS_OF).status == "accepted"
    second = [cdpf_row(h, ZZZT="2" if i < 8 else "1") for i, h in enumerate(holders)]  # 8 = 4 x 1.5 + 2
    land_sql(settings, "cdpf", "cdpf-ev-2", second, tmp_path)
    assert stage_batch(settings, "cdpf", "cdpf-ev-2", AS_OF).status == "accepted"
    third = [cdpf_row(h, ZZZT="2" if i < 15 else "1") for i, h in enumerate(holders)]  # 15 > 8 x 1.5 + 2
    land_sql(settings, "cdpf", "cdpf-ev-3", third, tmp_path)
    held = stage_batch(settings, "cdpf", "cdpf-ev-3", AS_OF)
    assert held.status == "held" and "cancellations" in held.note and "cdpf-ev-2" in held.note
    summary = json.loads((storage.staged("cdpf", "cdpf-ev-3") / "validation.json").read_text("utf-8"))
    assert summary["events"] == {"cancellations": 15}
    assert [g["gate"] for g in summary["gates"] if not g["passed"]] == ["cancellations_rise"]
    assert storage.last_accepted("cdpf")["batch_id"] == "cdpf-ev-2"  # type: ignore[index]


_EXTERNAL = re.compile(
    r"https?:|//|<(script|link|img|iframe|object|embed)\b|\bsrc=|\bhref=|url\(|@import", re.I
)
_RAW_ID = re.compile(r"(?<![0-9A-Za-z*])\d{17}[0-9Xx](?![0-9A-Za-z*])")


@pytest.mark.parametrize("case", ["accepted", "quarantined", "drift"])
def test_validation_html_is_offline_and_masked(settings: Settings, tmp_path: Path, case: str) -> None:
    """Each batch gets a validation.html an auditor can open with no network and no raw ID in it."""
    rows = cdpf_rows() if case != "accepted" else [cdpf_row(A), cdpf_row(B), cdpf_row(E)]
    if case == "drift":
        rows = [{k if k != "XB" else "XB_NEW": v for k, v in r.items()} for r in rows]
    land_sql(settings, "cdpf", f"cdpf-html-{case}", rows, tmp_path)
    result = stage_batch(settings, "cdpf", f"cdpf-html-{case}", AS_OF)
    html = (Storage(settings).staged("cdpf", f"cdpf-html-{case}") / "validation.html").read_text("utf-8")
    assert result.status == {"accepted": "accepted", "quarantined": "held", "drift": "held"}[case]
    assert not _EXTERNAL.search(html), _EXTERNAL.search(html)
    assert not _RAW_ID.search(html)
    assert "数据校验报告" in html and f"cdpf-html-{case}" in html
    if case == "quarantined":
        assert "CERT_MISMATCH" in html and "残疾人证号与公民身份号码" in html
        assert "invalid_ratio" in html and "触发 tripped" in html  # 8 of 11 rows: the gate holds it
        assert mask_id(A + "81") in html  # the unexpected certificate number, masked
    if case == "drift":
        assert "XB_NEW" in html and "暂扣 held" in html


def _reject_csv(settings: Settings, source: str, batch_id: str, encoding: str) -> pd.DataFrame:
    made = write_reject_file(
        Storage(settings), load_contract(ROOT / f"schemas/sources/{source}.yaml"), batch_id, "run-1", AS_OF
    )
    assert made is not None and made.path.name == f"rejects_{batch_id}.csv"
    manifest = json.loads(made.manifest.read_text("utf-8"))
    assert (
        manifest["rows"] == made.rows
        and manifest["sha256"] == hashlib.sha256(made.path.read_bytes()).hexdigest()
    )
    return pd.read_csv(made.path, encoding=encoding, dtype=str, keep_default_na=False)


def test_reject_file_goes_back_in_the_departments_own_shape(settings: Settings, tmp_path: Path) -> None:
    rows = [*cdpf_rows(), cdpf_row(E, XM="=HYPERLINK(1)", XB="9")]  # line 12: a formula in a refused row
    land_sql(settings, "cdpf", "cdpf-rej", rows, tmp_path)
    stage_batch(settings, "cdpf", "cdpf-rej", AS_OF)
    table = _reject_csv(settings, "cdpf", "cdpf-rej", "utf-8")
    natives = load_contract(ROOT / "schemas/sources/cdpf.yaml").natives
    assert list(table.columns) == [*natives, "源文件", "行号", "错误代码", "错误原因"]
    assert table["行号"].astype(int).tolist() == [3, 4, 5, 6, 7, 8, 9, 11, 12]
    by_line = dict(zip(table["行号"].astype(int), table["错误代码"], strict=True))
    assert by_line[3] == "ID_CHECKSUM" and by_line[7] == "CODE_UNKNOWN,DATE_INVALID"
    assert table.loc[table["行号"] == "9", "SFZH"].item() == "3.30106E+17"  # as the department sent it
    assert "公民身份号码校验码错误" in table.loc[table["行号"] == "3", "错误原因"].item()
    assert table.loc[table["行号"] == "12", "XM"].item() == "'=HYPERLINK(1)"
    again = write_reject_file(
        Storage(settings), load_contract(ROOT / "schemas/sources/cdpf.yaml"), "cdpf-rej", "run-2", AS_OF
    )
    assert again is None  # once per batch


def test_hrss_reject_file_is_gb18030_with_chinese_headers(settings: Settings) -> None:
    test_hrss_csv_batch(settings)
    table = _reject_csv(settings, "hrss", "hrss-20250630-a", "gb18030")
    assert list(table.columns[:2]) == ["公民身份号码", "姓名"]
    assert table[["行号", "错误代码"]].values.tolist() == [
        ["4", "DUPLICATE_ROW"],
        ["5", "ID_FORMAT,CODE_UNKNOWN"],
        ["6", "FIELD_MISSING"],
    ]
    assert table.loc[1, "姓名"] == "张三" and table.loc[1, "就业状态"] == "待业"


def test_no_reject_file_without_quarantined_rows(settings: Settings, tmp_path: Path) -> None:
    land_sql(settings, "cdpf", "cdpf-clean", [cdpf_row(A), cdpf_row(B)], tmp_path)
    stage_batch(settings, "cdpf", "cdpf-clean", AS_OF)
    contract = load_contract(ROOT / "schemas/sources/cdpf.yaml")
    assert write_reject_file(Storage(settings), contract, "cdpf-clean", "run-1", AS_OF) is None


# -- the suite's custom expectations through the stage ------------------------------------------------


def test_birth_and_gender_disagreeing_with_the_id_warn_but_keep_the_row(
    settings: Settings, tmp_path: Path
) -> None:
    """The merge turns such a disagreement into a BIRTH_MISMATCH / GENDER_MISMATCH conflict for the
    department's work list, so validation must keep the row: a GX "warning", counted, not quarantined."""
    rows = [cdpf_row(A), cdpf_row(C, CSRQ="1980-01-02"), cdpf_row(D, XB="1")]  # C, D: even sex digit
    land_sql(settings, "cdpf", "cdpf-warn", rows, tmp_path)
    result = stage_batch(settings, "cdpf", "cdpf-warn", AS_OF)
    accepted, quarantine, validation = staged(settings, "cdpf", "cdpf-warn")
    assert (result.status, result.accepted, result.quarantined) == ("accepted", 3, 0)
    assert accepted["id_number"].tolist() == [A, C, D] and quarantine.empty
    entries = {r["type"]: r for r in validation["gx"]["results"]}
    agree = entries["expect_id_to_agree_with_birth_and_gender"]
    assert agree == {
        "type": "expect_id_to_agree_with_birth_and_gender",
        "column": "id_number, birth_date, gender",
        "severity": "warning",
        "reason_code": "ID_FIELDS_DISAGREE",
        "reason_zh": REASONS["ID_FIELDS_DISAGREE"],
        "success": False,
        "failing_rows": 2,
        "refused_before": 0,
        "refused_before_codes": {},
        "not_checked": 0,
        "explained_nulls": 0,
        "gx_success": False,
        "unexpected_count": 2,
        "unexpected_percent": round(200 / 3, 4),
        "rows_flagged": 0,
        "sample": [mask_id(C), mask_id(D)],
    }
    holder = entries["expect_certificate_to_match_holder"]
    assert (holder["severity"], holder["success"], holder["rows_flagged"]) == ("error", True, 0)
    assert validation["reason_counts"] == {}


def test_an_unknown_county_code_is_a_warning_never_a_rejection(settings: Settings, tmp_path: Path) -> None:
    """python-stdnum's table plus the config's county_codes_added say which codes are known; an ID
    with any other code is counted under ID_COUNTY_UNKNOWN and its row is kept."""
    unknown = check("33019919800101003")  # 330199: no such county
    rows = [cdpf_row(A), cdpf_row(B), cdpf_row(unknown)]  # A: 330112 (2017), B: 330113 (2021, config)
    assert "330113" in settings.county_codes_added
    for batch_id, config, flagged in (
        ("cdpf-county", settings, [unknown]),
        ("cdpf-county-bare", settings.model_copy(update={"county_codes_added": []}), [B, unknown]),
    ):
        land_sql(config, "cdpf", batch_id, rows, tmp_path)
        result = stage_batch(config, "cdpf", batch_id, AS_OF)
        accepted, quarantine, validation = staged(config, "cdpf", batch_id)
        assert (result.status, result.accepted, result.quarantined) == ("accepted", 3, 0)
        assert accepted["id_number"].tolist() == [A, B, unknown] and quarantine.empty
        entry = next(
            r
            for r in validation["gx"]["results"]
            if r["type"] == "expect_column_values_to_have_known_county_code"
        )
        assert (entry["severity"], entry["reason_code"], entry["success"]) == (
            "warning",
            "ID_COUNTY_UNKNOWN",
            False,
        )
        assert (entry["unexpected_count"], entry["rows_flagged"]) == (len(flagged), 0)
        assert entry["sample"] == [mask_id(i) for i in flagged]
        assert validation["reason_counts"] == {}


def test_valid_id_expectation_judges_against_the_batch_date(settings: Settings, tmp_path: Path) -> None:
    """A birth date after the batch's as-of date is invalid for that batch, whatever today is; the
    stage's standardise step says ID_BIRTH_FUTURE and the suite agrees (ID_INVALID is not added)."""
    born = check("33010620250701001")  # born the day after AS_OF
    land_sql(settings, "cdpf", "cdpf-future", [cdpf_row(A), cdpf_row(born)], tmp_path)
    result = stage_batch(settings, "cdpf", "cdpf-future", AS_OF, max_invalid_ratio=0.9)
    _, quarantine, validation = staged(settings, "cdpf", "cdpf-future")
    assert (result.accepted, result.quarantined) == (1, 1)
    assert quarantine["reason_codes"].tolist() == ["ID_BIRTH_FUTURE"]
    land_sql(settings, "cdpf", "cdpf-later", [cdpf_row(A), cdpf_row(born)], tmp_path)
    later = stage_batch(settings, "cdpf", "cdpf-later", date(2025, 7, 1))
    assert (later.accepted, later.quarantined) == (2, 0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"meta": {"reason_code": "NOPE", "reason_zh": "x"}}, "meta.reason_code 'NOPE' is not one of"),
        ({"meta": {"reason_code": "FIELD_MISSING"}}, "meta.reason_zh"),
        ({"kwargs": {"column": "nope"}}, "column(s) ['nope'] not among the canonical columns"),
        ({"severity": "fatal"}, "severity 'fatal' is not one of"),
        ({"meta": {"reason_code": "FIELD_MISSING", "reason_zh": "x", "field": "name"}}, "meta.field 'name'"),
    ],
)
def test_a_malformed_suite_is_refused_with_file_and_position(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    contract = load_contract(ROOT / "schemas/sources/cdpf.yaml")
    doc = json.loads((ROOT / "gx" / "expectations" / "cdpf.json").read_text(encoding="utf-8"))
    doc["expectations"][1] |= change
    path = tmp_path / "cdpf.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(SuiteError) as err:
        load_suite(path, set(contract.names))
    assert str(err.value).startswith(f"{path}: expectations[1] (")
    assert message in str(err.value)


def test_an_unknown_expectation_type_fails_loudly(tmp_path: Path) -> None:
    """GX drops an expectation it cannot build; the stage must not run a suite with a rule missing."""
    doc = {
        "name": "t",
        "expectations": [
            {
                "type": "expect_column_values_to_be_valid_id_numbr",
                "kwargs": {"column": "id_number"},
                "meta": {},
            }
        ],
    }
    frame = pd.DataFrame({"id_number": pd.Series(["1"], dtype="string")})
    with pytest.raises(SuiteError, match=r"expectations\[0\] \(expect_column_values_to_be_valid_id_numbr\)"):
        run_suite(frame, doc, tmp_path / "t.json", sync_gx_context(tmp_path / "gx"))


def test_a_delta_batch_is_not_held_for_being_small(settings: Settings, tmp_path: Path) -> None:
    """SQL incremental / REST change-feed batches carry only changed rows; the volume gate must not hold them."""
    holders = [check(f"33010619800{1 + i // 28:01d}{1 + i % 28:02d}001") for i in range(40)]
    land_sql(settings, "cdpf", "cdpf-full", [cdpf_row(h) for h in holders], tmp_path)
    assert stage_batch(settings, "cdpf", "cdpf-full", AS_OF).status == "accepted"
    for batch_id, delta in (("cdpf-small-full", False), ("cdpf-delta", True)):
        land_sql(settings, "cdpf", batch_id, [cdpf_row(h) for h in holders[:2]], tmp_path)
        manifest_path = Storage(settings).landing("cdpf", batch_id) / "manifest.json"
        manifest = json.loads(manifest_path.read_text("utf-8"))
        manifest_path.write_text(json.dumps({**manifest, "delta": delta}), "utf-8")
        expected = "accepted" if delta else "held"  # 2 rows against 40: -95%
        assert stage_batch(settings, "cdpf", batch_id, AS_OF).status == expected, batch_id


def test_check_results_count_rows_the_standardiser_refused(settings: Settings, tmp_path: Path) -> None:
    """An ID refused by the standardiser reaches GX as a null: the ID check must still report it failing
    (not "pass, 0"), and the not-null check must not fail on a null it did not flag."""
    bad = A[:17] + ("0" if A[17] != "0" else "1")  # wrong check character
    rows = [cdpf_row(A), cdpf_row(B), cdpf_row(bad, CJRZH=bad + "11"), cdpf_row(C, XM="")]
    land_sql(settings, "cdpf", "cdpf-truth", rows, tmp_path)
    stage_batch(settings, "cdpf", "cdpf-truth", AS_OF, max_invalid_ratio=1.0)
    _, quarantine, validation = staged(settings, "cdpf", "cdpf-truth")
    assert len(quarantine) == 2
    entries = {(r["type"], r["column"]): r for r in validation["gx"]["results"]}
    valid = entries[("expect_column_values_to_be_valid_id_number", "id_number")]
    assert (valid["success"], valid["failing_rows"], valid["refused_before"]) == (False, 1, 1)
    assert valid["refused_before_codes"] == {"ID_CHECKSUM": 1} and valid["unexpected_count"] == 0
    county = entries[("expect_column_values_to_have_known_county_code", "id_number")]
    assert (county["success"], county["failing_rows"], county["not_checked"]) == (True, 0, 1)
    present = entries[("expect_column_values_to_not_be_null", "id_number")]
    assert (present["success"], present["failing_rows"], present["explained_nulls"]) == (True, 0, 1)
    assert present["gx_success"] is False  # GX alone saw a null
    named = entries[("expect_column_values_to_not_be_null", "name")]
    # the empty name is refused by the standardiser (FIELD_MISSING, required) and explained the same way
    assert (named["success"], named["failing_rows"], named["explained_nulls"]) == (True, 0, 1)
    assert validation["reason_counts"] == {"ID_CHECKSUM": 1, "FIELD_MISSING": 1}
    html = (settings.var_dir / "staged" / "cdpf" / "cdpf-truth" / "validation.html").read_text(
        encoding="utf-8"
    )
    assert "ID_CHECKSUM</span>:1" in html


def test_duplicate_rows_are_exactly_pandas_duplicated() -> None:
    """Hash first, compare only where a hash recurs: the same flags as duplicated(keep='first'),
    nulls equal to nulls, a row equal to an earlier one in all but one column not flagged."""
    rows = [["a", "1", None], ["a", "1", None], ["a", "1", "x"], ["b", None, "x"], ["a", "1", None],
            ["b", None, "x"], ["a", "2", None]] * 3  # fmt: skip
    native = pd.DataFrame(rows, columns=["P", "Q", "R"]).astype("string")
    expected = native.duplicated(keep="first").to_numpy()
    assert (duplicate_rows(native, ["P", "Q", "R"]) == expected).all()
    assert expected.sum() == 17
    assert not duplicate_rows(native, ["P", "Q", "R"])[[0, 2, 3, 6]].any()
