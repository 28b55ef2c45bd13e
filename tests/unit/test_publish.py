"""Partner files as published units: versions that supersede, deltas against the acknowledged state,
every format deterministic, pseudonyms, purpose-bound fields, signed manifests checked offline."""

from __future__ import annotations

import io
import json
import re
from dataclasses import replace
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from test_exchange import CONTRACTS, IDS, tiny_conflicts, tiny_decisions, tiny_master
from typer.testing import CliRunner

from core.publish import acknowledge
from core.signing import PUBLIC_NAME, VerifyError, verify_delivery
from core.storage import Storage
from hub.cli import app
from stages.exchange import build_exchange
from transforms.exchange import (
    ExchangeError,
    exchange_datasets,
    load_exchange_contract,
    load_purposes,
    pseudonymise,
)

AS_OF = date(2026, 3, 1)
CIVIL = CONTRACTS / "civil_two_subsidies.yaml"
STATS = CONTRACTS / "cdpf_subsidy_statistics.yaml"


@pytest.fixture
def storage(settings) -> Storage:
    return Storage(settings)


def publish(storage: Storage, contract, decisions: pd.DataFrame | None = None, full: bool = False):
    datasets = exchange_datasets(
        tiny_master(), tiny_decisions() if decisions is None else decisions, tiny_conflicts()
    )
    (made,) = build_exchange(storage, [contract], datasets, "cycle-2026-03-01", AS_OF, full=full)
    return made


def civil_table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, encoding="gb18030", keep_default_na=False)


def test_a_corrected_rerun_is_a_new_version_naming_what_it_supersedes(storage: Storage) -> None:
    contract = load_exchange_contract(CIVIL)
    first = publish(storage, contract)
    before = first.path.read_bytes(), first.manifest.read_bytes()
    changed = tiny_decisions()
    changed.loc[0, "amount"] = 999.0
    second = publish(storage, contract, changed)
    assert second.path.name == "civil_two_subsidies_20260301_v2.csv" and second.version == 2
    manifest = json.loads(second.manifest.read_text(encoding="utf-8"))
    assert manifest["supersedes"] == first.path.name and manifest["file_version"] == 2
    assert (first.path.read_bytes(), first.manifest.read_bytes()) == before  # never replaced
    assert publish(storage, contract, changed).path == second.path  # the same bytes again: nothing new


def test_unpublished_leftovers_of_a_killed_run_are_replaced_not_versioned(storage: Storage) -> None:
    contract = load_exchange_contract(CIVIL)
    folder = storage.outbox("civil", "2026-03")
    folder.mkdir(parents=True)
    (folder / "civil_two_subsidies_20260301.csv").write_bytes(b"half a file")  # renamed, then killed
    (folder / ".civil_two_subsidies_20260301.csv.tmp-123").write_bytes(b"half")
    made = publish(storage, contract)
    assert made.path.name == "civil_two_subsidies_20260301.csv" and made.version == 1
    assert made.path.read_bytes() != b"half a file"
    assert sorted(p.name for p in folder.iterdir()) == [
        "civil_two_subsidies_20260301.csv",
        "civil_two_subsidies_20260301.csv.manifest.json",
        "civil_two_subsidies_20260301.csv.ok",
    ]


def test_delta_against_the_acknowledged_state_and_a_full_snapshot_on_demand(storage: Storage) -> None:
    contract = load_exchange_contract(CIVIL)
    first = publish(storage, contract)
    acknowledge(storage, contract.name, first.path.name)
    changed = tiny_decisions()
    changed.loc[0, "amount"] = 360.0  # IDS[0] living: changed
    changed.loc[changed["id_number"] == IDS[1], "eligible"] = False  # IDS[1] living: stopped
    changed.loc[(changed["id_number"] == IDS[3]) & (changed["service"] == "living_subsidy"), "eligible"] = (
        True
    )
    second = publish(storage, contract, changed)
    table = civil_table(second.path)
    kinds = dict(zip(table["公民身份号码"] + "/" + table["补贴类型"], table["变更类型"], strict=True))
    assert kinds == {
        f"{IDS[3]}/困难残疾人生活补贴": "新增",
        f"{IDS[0]}/困难残疾人生活补贴": "变更",
        f"{IDS[1]}/困难残疾人生活补贴": "停止",
    }
    assert table.loc[table["变更类型"] == "停止", "金额"].tolist() == ["325.50"]  # what the partner holds
    manifest = json.loads(second.manifest.read_text(encoding="utf-8"))
    assert (manifest["kind"], manifest["delta_base"], manifest["rows"]) == ("delta", first.path.name, 3)
    full = publish(storage, contract, changed, full=True)
    assert full.path.name == "civil_two_subsidies_20260301_full.csv" and full.kind == "snapshot"
    assert full.rows == int(changed["eligible"].sum())


def test_xlsx_is_deterministic_neutralised_and_pseudonymous(storage: Storage, monkeypatch) -> None:
    from openpyxl import load_workbook

    monkeypatch.setenv("LIANBAN_PSEUDONYM_KEY_CDPF_STATS", "k" * 40)
    contract = load_exchange_contract(STATS)
    master = tiny_master()
    made = publish(storage, contract)
    rows = list(load_workbook(made.path, read_only=True).active.iter_rows(values_only=True))
    assert rows[0] == ("人员代码", "县区", "补贴类型", "金额", "所属期")
    assert len(rows) - 1 == made.rows == 5
    codes = {r[0] for r in rows[1:]}
    assert all(re.fullmatch(r"[0-9a-f]{64}", c) for c in codes) and not codes & set(master["id_number"])
    assert set(pseudonymise(pd.Series(IDS), b"k" * 40)) == codes | {
        pseudonymise(pd.Series([IDS[3]]), b"k" * 40)[0]
    }
    other = pseudonymise(pd.Series(IDS), b"j" * 40)
    assert not set(other) & codes  # another partner's key: unlinkable
    manifest = json.loads(made.manifest.read_text(encoding="utf-8"))
    assert manifest["pseudonym_key_id"].startswith("hmac:") and manifest["format"] == "xlsx"
    again = Storage(storage.settings.model_copy(update={"var_dir": storage.var.parent / "other"}))
    assert publish(again, contract).path.read_bytes() == made.path.read_bytes()  # same table, same bytes


def test_xlsx_cells_are_neutralised(storage: Storage, monkeypatch) -> None:
    from openpyxl import load_workbook

    contract = replace(
        load_exchange_contract(CIVIL),
        format="xlsx",
        mode="snapshot",
        encoding="utf-8",
        file_name="c_{date}.xlsx",
    )
    made = publish(storage, contract)
    names = [r[1] for r in load_workbook(made.path, read_only=True).active.iter_rows(values_only=True)]
    assert '\'=HYPERLINK("x")' in names and "'+张三" not in names  # +张三 is not eligible
    assert not any(str(n).startswith(("=", "+", "-", "@")) for n in names)


def test_xlsx_cells_read_back_as_written_escaped_for_xml() -> None:
    import zipfile

    from openpyxl import load_workbook

    from transforms.exchange import encode_xlsx

    texts = ["a&b<c>d", " lead", "trail ", "tab\tin", "line\nbreak", "", None, "䶮阿依·古丽", "x" * 40_000]
    table = pd.DataFrame({"文本": texts, "序号": [str(i) for i in range(len(texts))]}, dtype="string")
    made = encode_xlsx(table, date(2026, 3, 1))
    rows = list(load_workbook(io.BytesIO(made), read_only=True).active.iter_rows(values_only=True))
    assert rows[0] == ("文本", "序号")
    expected = [(t[:32767] if t else None, str(i)) for i, t in enumerate(texts)]  # empty: no cell
    assert rows[1:] == expected
    odd = pd.DataFrame({"a": ["ctl\x01x", "_x0041_"]}, dtype="string")
    sheet = zipfile.ZipFile(io.BytesIO(encode_xlsx(odd, date(2026, 3, 1)))).read("xl/worksheets/sheet1.xml")
    assert b"ctl_x0001_x" in sheet and b"_x005F_x0041_" in sheet and b"\x01" not in sheet
    assert b'<dimension ref="A1:A3"/>' in sheet
    assert encode_xlsx(table, date(2026, 3, 1)) == made


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_parquet_and_json_lines(storage: Storage, fmt: str) -> None:
    contract = replace(
        load_exchange_contract(CIVIL),
        format=fmt,
        mode="snapshot",
        encoding="utf-8",
        file_name=f"c_{{date}}.{fmt}",
    )
    made = publish(storage, contract)
    if fmt == "parquet":
        table = pq.read_table(made.path).to_pandas()
    else:
        table = pd.read_json(io.BytesIO(made.path.read_bytes()), lines=True, dtype=False)
    assert list(table.columns) == list(contract.fields.values()) and len(table) == made.rows == 5
    assert "赵䶮" in set(table["姓名"])
    key = storage.var / "keys" / PUBLIC_NAME
    assert verify_delivery(made.path, made.manifest, key)["rows"] == 5


def test_a_field_outside_the_purpose_fails_at_load_naming_file_line_and_field(tmp_path: Path) -> None:
    text = STATS.read_text(encoding="utf-8").replace("  period: 所属期\n", "  period: 所属期\n  name: 姓名\n")
    path = tmp_path / "stats.yaml"
    path.write_text(text, encoding="utf-8")
    line = text.splitlines().index("  name: 姓名") + 1
    with pytest.raises(
        ExchangeError,
        match=rf"stats\.yaml line {line}: key 'fields\.name': field not allowed for purpose 'subsidy_statistics'",
    ):
        load_exchange_contract(path, load_purposes(CONTRACTS / "purposes.yaml"))
    raw = STATS.read_text(encoding="utf-8").replace("id_mode: pseudonym", "id_mode: raw")
    path.write_text(raw, encoding="utf-8")
    with pytest.raises(
        ExchangeError, match=r"key 'id_mode': purpose 'subsidy_statistics' allows ID numbers only"
    ):
        load_exchange_contract(path, load_purposes(CONTRACTS / "purposes.yaml"))


def test_verify_names_a_tampered_file_or_manifest(storage: Storage, tmp_path: Path) -> None:
    made = publish(storage, load_exchange_contract(CIVIL))
    key = storage.var / "keys" / PUBLIC_NAME
    assert verify_delivery(made.path, made.manifest, key)["sha256"] == made.sha256
    runner = CliRunner()
    ok = runner.invoke(app, ["verify", str(made.path), "--public-key", str(key)])
    assert ok.exit_code == 0 and "OK civil_two_subsidies_20260301.csv" in ok.output

    data = tmp_path / made.path.name
    data.write_bytes(made.path.read_bytes().replace(b"345.00", b"945.00"))
    manifest = tmp_path / made.manifest.name
    manifest.write_bytes(made.manifest.read_bytes())
    with pytest.raises(VerifyError, match="file tampered: sha256"):
        verify_delivery(data, manifest, key)
    bad = runner.invoke(app, ["verify", str(data), "--public-key", str(key)])
    assert bad.exit_code == 1 and "file tampered" in bad.output

    body = json.loads(made.manifest.read_text(encoding="utf-8"))
    body["rows"] = body["rows"] + 1
    manifest.write_text(json.dumps(body, ensure_ascii=False), encoding="utf-8")
    data.write_bytes(made.path.read_bytes())
    with pytest.raises(VerifyError, match="manifest tampered: the signature does not match"):
        verify_delivery(data, manifest, key)
    with pytest.raises(VerifyError, match="signed with key"):
        other = tmp_path / "other.pub.pem"
        from core.signing import load_signing_key

        other.write_bytes(load_signing_key(tmp_path / "elsewhere").public_pem())
        verify_delivery(made.path, made.manifest, other)
