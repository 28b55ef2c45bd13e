"""Hostile inputs at the ingestion edge, each staged by the real stage_batch with its expected outcome.

Outcomes: the batch is accepted (bad rows quarantined with a reason code naming the line and the
field), or held with a note naming the file (and the line or the columns) and no rows staged. In
every accepted case the good rows are all accepted: nothing good is lost. Small fixed files live in
tests/corpus/; the others are built here (the 10 MB field at test time, never committed).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from batch_builders import cdpf_row, holders, land

from core.settings import Settings, load_settings
from stages.ingest import stage_batch

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
AS_OF = date(2025, 6, 30)
GOOD = holders(3)  # the IDs of the corpus files' good rows
HRSS_HEADER = "公民身份号码,姓名,就业状态,养老保险类型,工伤保险生活护理费,更新时间"
HRSS_CSV = "hrss_persons_20250630.csv"
PAGE = "page-00001.json"


def hrss_line(
    holder: str, name: str = "张三", employment: str = "就业", stamp: str = "2025-06-01 08:00:00"
) -> str:
    return f"{holder},{name},{employment},职工,否,{stamp}"


def hrss_file(*lines: str, header: str = HRSS_HEADER) -> bytes:
    return ("\r\n".join([header, *lines]) + "\r\n").encode("gb18030")


def good_hrss(*extra: str) -> bytes:
    return hrss_file(*(hrss_line(h) for h in GOOD), *extra)


def police_item(holder: str, **overrides: object) -> dict[str, object]:
    item: dict[str, object] = {
        "gmsfhm": holder,
        "xm": "张三",
        "xbdm": "1",
        "csrq": f"{holder[6:10]}-{holder[10:12]}-{holder[12:14]}",
        "hjdz_xzqhdm": holder[:6],
        "hkztdm": "0",
        "swrq": None,
        "gxsj": "2025-06-01 08:00:00",
    }
    return item | overrides


def police_page(*extra: dict[str, object]) -> bytes:
    items = [police_item(h) for h in GOOD] + list(extra)
    return json.dumps({"page": 1, "total_pages": 1, "items": items}, ensure_ascii=False).encode()


def cdpf_parquet(rows: list[dict[str, str]]) -> bytes:
    frame = pd.DataFrame(rows)
    schema = pa.schema([(c, pa.string()) for c in frame.columns])
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), sink)
    return bytes(sink.getvalue().to_pybytes())


OTHER = holders(6)[3:]  # IDs of the hostile rows


@dataclass
class Case:
    source: str
    name: str  # the landed file's name
    content: Callable[[], bytes]
    status: str = "accepted"
    quarantined: dict[int, str] = field(default_factory=dict)  # line -> reason codes
    field_zh: dict[int, str] = field(default_factory=dict)  # line -> the field's title in reasons_zh
    non_records: dict[str, int] = field(default_factory=dict)
    note: tuple[str, ...] = ()  # held: what the note must name
    good: int = 3  # good rows that must be accepted


CASES: dict[str, Case] = {
    "utf16_csv": Case(
        "hrss", HRSS_CSV, lambda: (CORPUS / "hrss_utf16.csv").read_bytes(), "held", note=(HRSS_CSV, "line 1")
    ),
    "invalid_gb18030_bytes": Case(
        "hrss",
        HRSS_CSV,
        lambda: (CORPUS / "hrss_invalid_gb18030.csv").read_bytes(),
        "held",
        note=(HRSS_CSV, "line 3", "bytes 81", "gb18030"),
    ),
    "binary_file": Case(
        "hrss", HRSS_CSV, lambda: (CORPUS / "binary.csv").read_bytes(), "held", note=(HRSS_CSV,)
    ),
    "empty_file": Case("hrss", HRSS_CSV, lambda: b"", "held", note=(HRSS_CSV, "empty")),
    "header_only": Case("hrss", HRSS_CSV, lambda: hrss_file(), good=0),
    "truncated_csv": Case(
        "hrss",
        HRSS_CSV,
        lambda: good_hrss()[:-2] + b"\r\n" + OTHER[0].encode() + ",\xd5\xc5".encode("latin-1"),
        quarantined={5: "FIELD_MISSING"},
        field_zh={5: "就业状态"},
    ),
    "semicolon_delimiter": Case(
        "hrss",
        HRSS_CSV,
        lambda: good_hrss().replace(b",", b";"),
        "held",
        note=(HRSS_CSV, "schema drift", "missing columns"),
    ),
    "extra_column": Case(
        "hrss",
        HRSS_CSV,
        lambda: hrss_file(*(hrss_line(h) + ",x" for h in GOOD), header=HRSS_HEADER + ",备用"),
        "held",
        note=(HRSS_CSV, "unexpected columns ['备用']"),
    ),
    "missing_column": Case(
        "hrss",
        HRSS_CSV,
        lambda: hrss_file(
            *(hrss_line(h).rsplit(",", 1)[0] for h in GOOD), header=HRSS_HEADER.rsplit(",", 1)[0]
        ),
        "held",
        note=(HRSS_CSV, "missing columns ['更新时间']"),
    ),
    "renamed_column": Case(
        "hrss",
        HRSS_CSV,
        lambda: good_hrss().replace("姓名".encode("gb18030"), "名字".encode("gb18030"), 1),
        "held",
        note=(HRSS_CSV, "missing columns ['姓名']", "unexpected columns ['名字']"),
    ),
    "ten_mb_field": Case(
        "hrss",
        HRSS_CSV,
        lambda: good_hrss(hrss_line(OTHER[0], name="张" * 5_000_000)),
        quarantined={5: "FIELD_TOO_LONG"},
        field_zh={5: "姓名"},
    ),
    "nul_byte_csv": Case(
        "hrss",
        HRSS_CSV,
        lambda: good_hrss(hrss_line(OTHER[0], name="张\x00三")),
        quarantined={5: "FIELD_CONTROL_CHAR"},
        field_zh={5: "姓名"},
    ),
    "totals_notes_and_repeated_header": Case(
        "hrss",
        HRSS_CSV,
        lambda: good_hrss("合计,3,,,,,,,", HRSS_HEADER, "备注：本表由人社局导出", "  小计 ,3"),
        non_records={"totals": 2, "notes": 1, "header": 1},
    ),
    "conflicting_duplicate_keys": Case(
        "hrss",
        HRSS_CSV,
        lambda: good_hrss(hrss_line(OTHER[0]), hrss_line(OTHER[0], employment="失业"), hrss_line(GOOD[0])),
        quarantined={5: "DUPLICATE_KEY_CONFLICT", 6: "DUPLICATE_KEY_CONFLICT", 7: "DUPLICATE_ROW"},
    ),
    "out_of_range_timestamps": Case(
        "hrss",
        HRSS_CSV,
        lambda: good_hrss(
            hrss_line(OTHER[0], stamp="0000-00-00 00:00:00"),
            hrss_line(OTHER[1], stamp="2023-02-30 08:00:00"),
            hrss_line(OTHER[2], stamp="10000-01-01 00:00:00"),
        ),
        quarantined={5: "DATE_INVALID", 6: "DATE_INVALID", 7: "DATE_INVALID"},
        field_zh={5: "更新时间", 6: "更新时间", 7: "更新时间"},
    ),
    "spreadsheet_damaged_ids": Case(
        "hrss",
        HRSS_CSV,
        lambda: good_hrss(
            hrss_line("3.30106E+17"), hrss_line(GOOD[0][:17] + "0.0"), hrss_line("330106198001014000")
        ),
        quarantined={5: "ID_SPREADSHEET_DAMAGED", 6: "ID_SPREADSHEET_DAMAGED", 7: "ID_SPREADSHEET_DAMAGED"},
    ),
    "html_instead_of_json": Case(
        "police", PAGE, lambda: (CORPUS / "police_html.json").read_bytes(), "held", note=(PAGE, "JSON")
    ),
    "truncated_json": Case(
        "police", PAGE, lambda: (CORPUS / "police_truncated.json").read_bytes(), "held", note=(PAGE, "JSON")
    ),
    "items_not_a_list": Case(
        "police", PAGE, lambda: b'{"page": 1, "items": {"gmsfhm": "x"}}', "held", note=(PAGE, "'items'")
    ),
    "wrong_json_types": Case(
        "police",
        PAGE,
        lambda: police_page(
            police_item(OTHER[0], xm=["张", "三"]),
            police_item(OTHER[1], gmsfhm=int(OTHER[1][:17]) * 10),
            police_item(OTHER[2], hjdz_xzqhdm={"code": "330106"}, csrq=19800101),
        ),
        quarantined={4: "FIELD_TYPE", 5: "FIELD_TYPE", 6: "FIELD_TYPE"},
        field_zh={4: "姓名", 5: "公民身份号码", 6: "户籍地行政区划"},
    ),
    "missing_json_key": Case(
        "police",
        PAGE,
        lambda: police_page({k: v for k, v in police_item(OTHER[0]).items() if k != "xm"}),
        quarantined={4: "FIELD_MISSING"},
        field_zh={4: "姓名"},
    ),
    "nul_byte_json": Case(
        "police",
        PAGE,
        lambda: police_page(police_item(OTHER[0], xm="张\u0000三")),
        quarantined={4: "FIELD_CONTROL_CHAR"},
        field_zh={4: "姓名"},
    ),
    "truncated_parquet": Case(
        "cdpf",
        "part-00001.parquet",
        lambda: cdpf_parquet([cdpf_row(h) for h in GOOD])[:-40],
        "held",
        note=("part-00001.parquet", "parquet"),
    ),
    "dates_out_of_range_and_open_ended": Case(
        "cdpf",
        "part-00001.parquet",
        lambda: cdpf_parquet(
            [
                cdpf_row(GOOD[0], YXQZ="9999-12-31"),
                cdpf_row(GOOD[1], FZRQ="0001-01-01"),
                cdpf_row(GOOD[2]),
                cdpf_row(OTHER[0], YXQZ="0000-00-00"),
                cdpf_row(OTHER[1], FZRQ="2023-02-30"),
            ]
        ),
        quarantined={4: "DATE_INVALID", 5: "DATE_INVALID"},
        field_zh={4: "有效期至", 5: "发证日期"},
    ),
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(var_dir=tmp_path)


def _ids(frame: pd.DataFrame) -> set[str]:
    return set(frame["id_number"].dropna())


@pytest.mark.parametrize("case_name", list(CASES))
def test_hostile_input(settings: Settings, case_name: str) -> None:
    case = CASES[case_name]
    data = case.content()
    transport = {"hrss": "folder", "police": "rest", "cdpf": "sql"}[case.source]
    land(settings, case.source, f"{case.source}-{case_name}", transport, {case.name: data}, {case.name: 0})
    result = stage_batch(settings, case.source, f"{case.source}-{case_name}", AS_OF, max_invalid_ratio=1.0)
    validation = json.loads((result.path / "validation.json").read_text(encoding="utf-8"))

    assert result.status == case.status, result.note
    if case.status == "held":
        for part in case.note:
            assert part in result.note, f"note {result.note!r} should name {part!r}"
        assert not (result.path / "accepted.parquet").exists()
        return

    accepted = pd.read_parquet(result.path / "accepted.parquet")
    quarantine = pd.read_parquet(result.path / "quarantine.parquet")
    assert _ids(accepted) >= set(GOOD[: case.good]), "a good row was lost"
    assert len(accepted) == case.good
    got = dict(zip(quarantine["_source_line"], quarantine["reason_codes"], strict=True))
    assert got == case.quarantined
    assert set(quarantine["_source_file"]) <= {case.name}
    for line, title in case.field_zh.items():
        text = quarantine.loc[quarantine["_source_line"] == line, "reasons_zh"].iloc[0]
        assert title in text, f"line {line}: {text!r} should name the field {title}"
    assert validation["non_record_rows"] == case.non_records
    # a wrong-typed value is never stringified into a canonical column
    assert not accepted["name"].astype("string").str.contains(r"[\[\]{}\x00]", regex=True).fillna(False).any()
