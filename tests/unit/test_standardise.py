"""Reading landed batches (parquet, GB18030 CSV, JSON pages) and standardising them to canonical columns."""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path

import batch_builders
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from landed_batches import write_landing

from core.contracts import ContractError, load_contract
from stages.landed import read_landed
from transforms.standardise import (
    LandingCorrupt,
    LandingDecodeError,
    SchemaDrift,
    clean_text,
    parse_dates,
    parse_timestamps,
    standardise,
)

ROOT = Path(__file__).resolve().parents[2]
AS_OF = date(2025, 6, 30)
HRSS_HEADER = "公民身份号码,姓名,就业状态,养老保险类型,工伤保险生活护理费,更新时间"


def contract(source: str):
    return load_contract(ROOT / "schemas" / "sources" / f"{source}.yaml")


def csv_bytes(lines: list[str]) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode("gb18030")


def parquet_bytes(frame: pd.DataFrame, tmp: Path) -> bytes:
    path = tmp / "part.parquet"
    schema = pa.schema([(c, pa.string()) for c in frame.columns])
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), path)
    return path.read_bytes()


# -- contracts -------------------------------------------------------------------------------------


def test_every_source_contract_loads() -> None:
    for source in ("cdpf", "civil", "hrss", "police"):
        c = contract(source)
        assert c.source == source
        assert c.column("id_number").type == "id_number"


def test_malformed_contract_names_file_column_and_field(tmp_path: Path) -> None:
    text = (ROOT / "schemas" / "sources" / "cdpf.yaml").read_text(encoding="utf-8")
    broken = tmp_path / "cdpf.yaml"
    broken.write_text(
        text.replace(
            'type: code, required: true, codes: {"1": male', 'type: kode, required: true, codes: {"1": male'
        ),
        encoding="utf-8",
    )
    with pytest.raises(ContractError) as err:
        load_contract(broken)
    message = str(err.value)
    assert str(broken) in message and "columns[3] (gender).type" in message


# -- reading landed files --------------------------------------------------------------------------


def test_gb18030_csv_keeps_rare_characters_and_physical_lines(tmp_path: Path) -> None:
    with pytest.raises(UnicodeEncodeError):
        "䶮".encode("gbk")  # only GB18030 has it: a GBK round trip would lose the name
    lines = [
        HRSS_HEADER,
        "11010519491231002X,李䶮,就业,职工,否,2025-06-01 08:00:00",
        "",  # a blank line is skipped, numbering stays physical
        '440524188001010014,"王㵘",失业,城乡居民,是,2025-06-01 08:00:00',
        '34052419800101001X,"阿依古丽·买买提\r\n(维)",未就业,未参保,否,2025-06-01 08:00:00',
        "360426199101010071,张三,就业,职工,否,2025-06-01 08:00:00",
    ]
    batch = write_landing(
        tmp_path / "hrss-1",
        "hrss",
        "folder",
        {"hrss_persons_20250630.csv": csv_bytes(lines)},
        {"hrss_persons_20250630.csv": 5},
    )
    native = read_landed(batch, contract("hrss"))
    assert native["姓名"].tolist() == ["李䶮", "王㵘", "阿依古丽·买买提\r\n(维)", "张三"]
    assert native["_source_line"].tolist() == [2, 4, 5, 7]  # the quoted CRLF takes a physical line
    assert set(native["_source_file"]) == {"hrss_persons_20250630.csv"}
    frame, reasons = standardise(native, contract("hrss"), AS_OF)
    assert frame["name"].iloc[0] == "李䶮"
    assert frame["employment"].tolist() == ["employed", "unemployed", "not_employed", "employed"]
    assert frame["work_injury_care"].tolist() == [False, True, False, False]
    assert (reasons == "").all()


def test_strict_decoding_error_names_file_and_line(tmp_path: Path) -> None:
    good = csv_bytes([HRSS_HEADER, "11010519491231002X,李䶮,就业,职工,否,2025-06-01 08:00:00"])
    bad = good + b"440524188001010014,\xff\xfe,\xe5\x8a\xb1,x,x,x\r\n"  # 0xFF is never valid GB18030
    batch = write_landing(tmp_path / "hrss-2", "hrss", "folder", {"drop.csv": bad}, {"drop.csv": 2})
    with pytest.raises(LandingDecodeError) as err:
        read_landed(batch, contract("hrss"))
    assert "drop.csv line 3" in str(err.value) and "gb18030" in str(err.value)


def test_csv_header_drift_raises_with_expected_and_found(tmp_path: Path) -> None:
    header = HRSS_HEADER.replace("工伤保险生活护理费", "工伤护理") + ",备注"
    batch = write_landing(tmp_path / "hrss-3", "hrss", "folder", {"d.csv": csv_bytes([header])}, {"d.csv": 0})
    with pytest.raises(SchemaDrift) as err:
        read_landed(batch, contract("hrss"))
    assert err.value.missing == ["工伤保险生活护理费"]
    assert err.value.unexpected == ["工伤护理", "备注"]
    assert "d.csv" in str(err.value)


def test_parquet_parts_number_rows_across_parts_and_detect_drift(tmp_path: Path) -> None:
    c = contract("civil")
    rows = pd.DataFrame({col: ["1"] * 3 for col in c.natives})
    part = parquet_bytes(rows, tmp_path)
    batch = write_landing(
        tmp_path / "civil-1",
        "civil",
        "sql",
        {"part-00001.parquet": part, "part-00002.parquet": part},
        {"part-00001.parquet": 3, "part-00002.parquet": 3},
    )
    native = read_landed(batch, c)
    assert native["_source_line"].tolist() == [1, 2, 3, 4, 5, 6]
    assert native["_source_file"].tolist() == ["part-00001.parquet"] * 3 + ["part-00002.parquet"] * 3
    assert all(str(native[col].dtype) == "string" for col in c.natives)

    drifted = parquet_bytes(rows.drop(columns=["DBBZ"]).assign(NEW="x"), tmp_path)
    batch = write_landing(
        tmp_path / "civil-2", "civil", "sql", {"part-00001.parquet": drifted}, {"part-00001.parquet": 3}
    )
    with pytest.raises(SchemaDrift) as err:
        read_landed(batch, c)
    assert err.value.missing == ["DBBZ"] and err.value.unexpected == ["NEW"]


def test_landed_file_that_differs_from_manifest_is_refused(tmp_path: Path) -> None:
    batch = write_landing(
        tmp_path / "hrss-4", "hrss", "folder", {"d.csv": csv_bytes([HRSS_HEADER])}, {"d.csv": 0}
    )
    (batch / "d.csv").write_bytes(csv_bytes([HRSS_HEADER, "tampered,,,,,"]))
    with pytest.raises(LandingCorrupt, match="SHA-256"):
        read_landed(batch, contract("hrss"))


def test_json_pages_number_items_within_each_page(tmp_path: Path) -> None:
    item = {
        "gmsfhm": "11010519491231002X",
        "xm": "李䶮",
        "xbdm": "2",
        "csrq": "19491231",
        "hjdz_xzqhdm": "110105",
        "hkztdm": "0",
        "swrq": None,
        "gxsj": "2025-06-01 08:00:00",
    }
    page1 = json.dumps(
        {"page": 1, "page_size": 2, "total": 3, "total_pages": 2, "items": [item, item]}, ensure_ascii=False
    ).encode()
    page2 = json.dumps(
        {"page": 2, "page_size": 2, "total": 3, "total_pages": 2, "items": [dict(item, hkztdm=1)]}
    ).encode()
    batch = write_landing(
        tmp_path / "police-1",
        "police",
        "rest",
        {"page-00001.json": page1, "page-00002.json": page2},
        {"page-00001.json": 2, "page-00002.json": 1},
    )
    native = read_landed(batch, contract("police"))
    assert native["_source_line"].tolist() == [1, 2, 1]
    assert native["hkztdm"].tolist() == ["0", "0", "1"]  # a number in JSON still arrives as text
    frame, reasons = standardise(native, contract("police"), AS_OF)
    assert frame["hukou_status"].tolist() == ["normal", "normal", "dead"]
    assert frame["death_date"].isna().all()  # optional and null: no reason
    assert (reasons == "").all()


# -- standardising ---------------------------------------------------------------------------------


def test_dates_in_every_accepted_format() -> None:
    serial = (date(2024, 1, 2) - date(1899, 12, 30)).days
    text = clean_text(
        pd.Series(
            [
                "20240102",
                "2024-01-02",
                "2024/1/2",
                "2024-1-2 00:00:00",
                str(serial),
                "2024-02-30",
                "20241301",
                "x",
                "",
                None,
                "0000-01-01",
            ]
        )
    )
    dates, invalid = parse_dates(text)
    assert dates.dtype == "datetime64[us]"
    assert (dates.iloc[:5] == pd.Timestamp("2024-01-02")).all()
    assert dates.iloc[5:].isna().all()
    assert invalid.tolist() == [False] * 5 + [True, True, True, False, False, True]


def test_timestamps() -> None:
    text = clean_text(
        pd.Series(
            [
                "2025-06-01 08:09:10",
                "2025-06-01T08:09:10.5",
                "2025-06-01 24:00:00",
                "2025-02-29 00:00:00",
                "soon",
                None,
            ]
        )
    )
    stamps, invalid = parse_timestamps(text)
    assert stamps.iloc[0] == pd.Timestamp("2025-06-01 08:09:10")
    assert stamps.iloc[1] == pd.Timestamp("2025-06-01 08:09:10.5")
    assert invalid.tolist() == [False, False, True, True, True, False]


def test_names_trimmed_half_width_rare_characters_kept() -> None:
    names = clean_text(
        pd.Series(["\u3000李䶮 ", "ＬＩ　Ｍｉｎｇ", "阿依古丽・买买提", "王㵘", "   ", None]), name=True
    )
    assert names.tolist()[:4] == ["李䶮", "LI Ming", "阿依古丽·买买提", "王㵘"]
    assert names.iloc[4:].isna().all()


def cdpf_row(**overrides: str) -> dict[str, str]:
    return batch_builders.cdpf_row("11010519491231002X", **overrides)


def test_standardise_canonical_dtypes_and_reason_codes() -> None:
    native = pd.DataFrame(
        [
            cdpf_row(),
            cdpf_row(XB="9", CJLB="8"),  # unknown codes
            cdpf_row(SFZH="110105194912310021", XM=" ", FZRQ="2020-02-30", CQHL="Y"),
            cdpf_row(SFZH="'11010519491231002x"),
        ]
    ).astype("string")
    frame, reasons = standardise(native, contract("cdpf"), AS_OF)
    assert reasons.tolist() == ["", "CODE_UNKNOWN", "ID_CHECKSUM;FIELD_MISSING;CODE_UNKNOWN;DATE_INVALID", ""]
    assert frame["id_number"].iloc[3] == "11010519491231002X"
    assert frame["_id_fix"].iloc[3] == "APOSTROPHE;LOWER_X"
    dtypes = {k: str(v) for k, v in frame.dtypes.items()}
    assert dtypes["id_number"] == dtypes["name"] == dtypes["gender"] == "string"
    assert dtypes["category"] == dtypes["level"] == "Int64"
    assert dtypes["birth_date"] == dtypes["updated_at"] == "datetime64[us]"
    assert dtypes["needs_long_term_care"] == "boolean"
    assert frame["gender"].iloc[0] == "female" and pd.isna(frame["gender"].iloc[1])
    assert frame["category"].iloc[0] == 1 and pd.isna(frame["category"].iloc[1])


def test_civil_float_and_optional_date() -> None:
    row = {
        "SFZH": "11010519491231002X",
        "XM": "李䶮",
        "JZLX": "01",
        "XZQH": "110105",
        "DBBZ": "1150",
        "KSRQ": "20240101",
        "JSRQ": "",
        "ZT": "1",
        "GXSJ": "2025-06-01 08:00:00",
    }
    native = pd.DataFrame(
        [row, row | {"DBBZ": "about 1000", "JZLX": "1"}, row | {"JSRQ": "20241231"}]
    ).astype("string")
    frame, reasons = standardise(native, contract("civil"), AS_OF)
    assert str(frame["dibao_standard"].dtype) == "Float64"
    assert frame["dibao_standard"].iloc[0] == 1150.0
    assert reasons.tolist() == ["", "FIELD_INVALID;CODE_UNKNOWN", ""]
    assert pd.isna(frame["end_date"].iloc[0]) and frame["end_date"].iloc[2] == pd.Timestamp("2024-12-31")
    assert frame["assistance_type"].iloc[0] == "dibao"


def test_standardise_is_vectorised_enough_for_a_province() -> None:
    """100,000 cdpf rows standardise in under 2 s (measured on the 2-core dev box: about 0.2 s)."""
    native = pd.DataFrame([cdpf_row(), cdpf_row(SFZH="11010519491231002x")] * 50_000).astype("string")
    started = time.perf_counter()
    frame, reasons = standardise(native, contract("cdpf"), AS_OF)
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"standardise took {elapsed:.2f} s for 100,000 rows"
    assert len(frame) == 100_000 and (reasons == "").all()
    assert np.asarray(frame["id_number"] == "11010519491231002X").all()
