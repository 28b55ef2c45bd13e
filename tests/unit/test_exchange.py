"""Partner exchange files: contracts, formula neutralisation, strict GB18030, manifests, determinism."""

from __future__ import annotations

import hashlib
import json
import stat
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest

from core.storage import Storage
from stages.exchange import build_exchange
from transforms.exchange import (
    ExchangeError,
    apply_codes,
    exchange_datasets,
    load_exchange_contract,
    load_exchange_contracts,
    load_purposes,
    money,
    neutralise_formulas,
)

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = ROOT / "schemas" / "exchange"
AS_OF = date(2026, 3, 1)
IDS = ["330106198001010014", "33010219900515002X", "330112200001010030", "330302197005050013"]


def tiny_master() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id_number": pd.array(IDS, dtype="string"),
            "name": pd.array(["赵䶮", "阿依·古丽", '=HYPERLINK("x")', "+张三"], dtype="string"),
            "hukou_county": pd.array(["330106", "330102", "330112", "330302"], dtype="string"),
        }
    )


def tiny_decisions() -> pd.DataFrame:
    rows = []
    for i, id_number in enumerate(IDS):
        rows.append((id_number, "living_subsidy", i != 3, [345.0, 325.5, 347.1, 0.0][i]))
        rows.append((id_number, "nursing_subsidy", i in (0, 2), [450.0, 0.0, 100.0, 0.0][i]))
    d = pd.DataFrame(rows, columns=["id_number", "service", "eligible", "amount"])
    return d.assign(period="2026-03", reasons="", policy="p", policy_version="v")


def tiny_conflicts() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id_number": [IDS[1], IDS[0]],
            "conflict_type": ["NAME_MISMATCH", "DEAD_BUT_ACTIVE"],
            "source_a": ["police", "police"],
            "value_a": ["-阿依古丽", "dead,2025-11-30"],
            "source_b": ["cdpf", "civil"],
            "value_b": ["阿依·古丽", "dibao,tekun"],
            "batch_a": ["p1", "p1"],
            "batch_b": ["c1", "v1"],
            "department": ["cdpf", "civil"],
            "status": ["open", "open"],
        }
    ).astype("string")


def run(storage: Storage, master: pd.DataFrame | None = None, decisions: pd.DataFrame | None = None):
    datasets = exchange_datasets(
        tiny_master() if master is None else master,
        tiny_decisions() if decisions is None else decisions,
        tiny_conflicts(),
    )
    return build_exchange(storage, load_exchange_contracts(CONTRACTS), datasets, "cycle-2026-03-01", AS_OF)


@pytest.fixture
def storage(settings) -> Storage:
    return Storage(settings)


def test_contracts_carry_purpose_onward_transfer_and_encoding() -> None:
    contracts = {c.partner: c for c in load_exchange_contracts(CONTRACTS) if c.dataset != "conflicts_civil"}
    assert set(contracts) == {"civil", "cdpf", "cdpf_stats", "hrss", "police"}
    assert contracts["civil"].encoding == "gb18030" and contracts["cdpf"].encoding == "utf-8-sig"
    for c in contracts.values():
        assert "第三方" in c.onward_transfer and c.purpose and "\n" not in c.purpose
        assert c.delivery["transport"] in ("folder", "sftp", "rest") and c.schedule and c.purpose_id
    assert contracts["cdpf_stats"].id_mode == "pseudonym" and contracts["cdpf_stats"].format == "xlsx"
    assert "name" not in contracts["cdpf_stats"].fields
    assert list(contracts["civil"].fields.values()) == [
        "公民身份号码",
        "姓名",
        "补贴类型",
        "金额",
        "所属期",
        "县区",
    ]


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_formula_cells_are_neutralised(start: str) -> None:
    frame = pd.DataFrame({"a": [f"{start}1+1", "plain", "a=b", ""], "b": ["x", f"{start}cmd", None, "-"]})
    out = neutralise_formulas(frame)
    assert list(out["a"]) == [f"'{start}1+1", "plain", "a=b", ""]
    assert list(out["b"]) == ["x", f"'{start}cmd", "", "'-"]


def test_money_has_two_decimals_without_float_noise() -> None:
    assert list(money(pd.Series([345.0, 325.5, 347.09999999999997, 0.0, 1234567.891]))) == [
        "345.00",
        "325.50",
        "347.10",
        "0.00",
        "1234567.89",
    ]


def test_codes_are_applied_token_by_token() -> None:
    out = apply_codes(
        pd.Series(["dibao,tekun", "dibao_edge", "dead,2025-11-30", "张三"], dtype="string"),
        {"dibao": "低保", "dibao_edge": "低保边缘", "tekun": "特困", "dead": "死亡"},
    )
    assert list(out) == ["低保,特困", "低保边缘", "死亡,2025-11-30", "张三"]


def test_civil_file_gb18030_round_trip_and_content(storage: Storage) -> None:
    files = {f.partner: f for f in run(storage)}
    civil = files["civil"]
    assert civil.path == storage.outbox("civil", "2026-03") / "civil_two_subsidies_20260301.csv"
    raw = civil.path.read_bytes()
    text = raw.decode("gb18030", errors="strict")
    assert "赵䶮" in text and "阿依·古丽" in text
    assert "\r\n" in text
    table = pd.read_csv(civil.path, dtype=str, encoding="gb18030", keep_default_na=False)
    assert list(table.columns) == ["公民身份号码", "姓名", "补贴类型", "金额", "所属期", "县区", "变更类型"]
    assert len(table) == civil.rows == 5  # eligible decisions only, all new: nothing acknowledged yet
    assert set(table["变更类型"]) == {"新增"} and civil.kind == "delta"
    first = table[table["公民身份号码"] == IDS[0]].iloc[0]
    assert first.to_dict() == {
        "公民身份号码": IDS[0],
        "姓名": "赵䶮",
        "补贴类型": "困难残疾人生活补贴",
        "金额": "345.00",
        "所属期": "2026-03",
        "县区": "330106",
        "变更类型": "新增",
    }
    assert not table.map(lambda v: v[:1] in {"=", "+", "-", "@", "\t", "\r"}).any().any()
    assert set(table.loc[table["公民身份号码"] == IDS[2], "姓名"]) == {'\'=HYPERLINK("x")'}
    assert list(table["公民身份号码"]) == sorted(table["公民身份号码"])


def test_each_department_gets_its_own_work_list(storage: Storage) -> None:
    files = {f.contract: f for f in run(storage)}
    assert files["cdpf_conflicts"].path.read_bytes().startswith(b"\xef\xbb\xbf")  # BOM for Excel
    cdpf = pd.read_csv(files["cdpf_conflicts"].path, dtype=str, encoding="utf-8-sig", keep_default_na=False)
    assert cdpf["公民身份号码"].tolist() == [IDS[1]]
    assert files["hrss_conflicts"].rows == 0 and files["police_conflicts"].rows == 0
    table = pd.read_csv(files["civil_conflicts"].path, dtype=str, encoding="gb18030", keep_default_na=False)
    assert len(table) == 1
    dead = table[table["公民身份号码"] == IDS[0]].iloc[0]
    assert dead["冲突类型"].startswith("公安登记死亡")
    assert (dead["来源A"], dead["来源A取值"], dead["来源B"], dead["来源B取值"]) == (
        "公安",
        "死亡,2025-11-30",
        "民政",
        "低保,特困供养",
    )
    assert dead["状态"] == "待核实"
    name = cdpf[cdpf["公民身份号码"] == IDS[1]].iloc[0]
    assert name["来源A取值"] == "'-阿依古丽"


def test_manifest_matches_the_file_and_no_temporary_file_is_left(storage: Storage) -> None:
    for f in run(storage):
        manifest = json.loads(f.manifest.read_text(encoding="utf-8"))
        assert f.manifest.name == f.path.name + ".manifest.json"
        assert manifest["sha256"] == hashlib.sha256(f.path.read_bytes()).hexdigest() == f.sha256
        assert manifest["rows"] == f.rows
        assert manifest["run_id"] == "cycle-2026-03-01"
        assert manifest["period"] == "2026-03"
        assert manifest["business_date"] == "2026-03-01"
        stamped = datetime.fromisoformat(manifest["generated_at"])  # the real time, not the business date
        assert abs((datetime.now(UTC) - stamped).total_seconds()) < 60
        assert manifest["contract"] and manifest["version"] and manifest["onward_transfer"]
        assert manifest["key_id"].startswith("ed25519:") and manifest["signature"]
        marker = f.path.with_name(f.path.name + ".ok").read_text(encoding="ascii")
        assert f"{f.sha256}  {f.path.name}" in marker
        assert hashlib.sha256(f.manifest.read_bytes()).hexdigest() in marker
        for path in (f.path, f.manifest):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(f.path.parent.stat().st_mode) == 0o700
    leftovers = [p for p in (storage.var / "outbox").rglob("*") if ".tmp" in p.name]
    assert leftovers == []


def test_rerun_publishes_nothing_new_whatever_the_input_order(storage: Storage) -> None:
    first = {f.path: (f.path.read_bytes(), f.manifest.read_bytes()) for f in run(storage)}
    shuffled = tiny_decisions().sample(frac=1.0, random_state=3)
    second = {
        f.path: (f.path.read_bytes(), f.manifest.read_bytes()) for f in run(storage, decisions=shuffled)
    }
    assert first == second
    assert len(list((storage.var / "outbox").rglob("*.ok"))) == len(first)


def test_masked_id_mode(storage: Storage) -> None:
    contract = replace(load_exchange_contract(CONTRACTS / "civil_two_subsidies.yaml"), id_mode="masked")
    datasets = exchange_datasets(tiny_master(), tiny_decisions(), tiny_conflicts())
    (f,) = build_exchange(storage, [contract], datasets, "r", AS_OF)
    table = pd.read_csv(f.path, dtype=str, encoding="gb18030", keep_default_na=False)
    assert table["公民身份号码"].str.fullmatch(r"\d{6}\*{8}[\dX]{4}").all()


def test_unencodable_character_is_an_error_never_a_replacement(storage: Storage) -> None:
    contract = replace(load_exchange_contract(CONTRACTS / "civil_two_subsidies.yaml"), encoding="gbk")
    datasets = exchange_datasets(tiny_master(), tiny_decisions(), tiny_conflicts())
    with pytest.raises(
        ExchangeError,
        match=r"civil_two_subsidies_20260301\.csv line 3: character '䶮' \(U\+4DAE\) cannot be encoded as gbk",
    ):
        build_exchange(storage, [contract], datasets, "r", AS_OF)
    assert not (storage.outbox("civil", "2026-03") / "civil_two_subsidies_20260301.csv").exists()


def test_malformed_contract_names_file_and_key(tmp_path: Path) -> None:
    text = (
        (CONTRACTS / "civil_two_subsidies.yaml")
        .read_text(encoding="utf-8")
        .replace("id_mode: raw", "id_mode: hmac")
    )
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    line = next(i for i, t in enumerate(text.splitlines(), start=1) if t.startswith("id_mode:"))
    with pytest.raises(ExchangeError, match=rf"bad\.yaml line {line}: key 'id_mode': expected one of"):
        load_exchange_contract(path, load_purposes(CONTRACTS / "purposes.yaml"))


def test_a_delta_file_records_only_the_decisions_it_carries(storage: Storage) -> None:
    from core.publish import acknowledge
    from stages.exchange import read_carried

    civil = [c for c in load_exchange_contracts(CONTRACTS) if c.name == "civil_two_subsidies"]
    first = build_exchange(storage, civil, exchange_datasets(tiny_master(), tiny_decisions(), tiny_conflicts()),
                           "cycle-2026-03-01", AS_OF)[0]  # fmt: skip
    acknowledge(storage, "civil_two_subsidies", first.path.name)
    changed = tiny_decisions()
    changed.loc[(changed["id_number"] == IDS[1]) & (changed["service"] == "living_subsidy"), "amount"] = 400.0
    later = date(2026, 4, 1)
    second = build_exchange(storage, civil, exchange_datasets(tiny_master(), changed, tiny_conflicts()),
                            "cycle-2026-04-01", later)[0]  # fmt: skip
    carried = read_carried(storage)
    by_file = {f: set(zip(g["id_number"], g["service"], strict=True)) for f, g in carried.groupby("file")}
    eligible = tiny_decisions()[tiny_decisions()["eligible"]]
    assert by_file[first.path.name] == set(zip(eligible["id_number"], eligible["service"], strict=True))
    assert by_file[second.path.name] == {(IDS[1], "living_subsidy")}  # the unchanged rows are not in it
    assert set(carried.loc[carried["file"] == second.path.name, "sha256"]) == {second.sha256}
    index = next((storage.var / "state" / "carried" / "civil_two_subsidies").glob("*.parquet"))
    assert stat.S_IMODE(index.stat().st_mode) == 0o600


def test_a_file_whose_inputs_did_not_change_is_neither_rendered_nor_encoded_again(
    storage: Storage, monkeypatch
) -> None:
    import stages.exchange
    from core.publish import acknowledge

    first = {f.contract: f for f in run(storage)}

    def no_render(*args, **kwargs):
        raise AssertionError("rendered although the inputs did not change")

    monkeypatch.setattr(stages.exchange, "render", no_render)
    again = {f.contract: f for f in run(storage)}
    assert again == first  # the published versions stand, bytes, manifests and all
    monkeypatch.undo()
    acknowledge(storage, "civil_two_subsidies", first["civil_two_subsidies"].path.name)
    changed = tiny_decisions()
    changed.loc[(changed["id_number"] == IDS[0]) & (changed["service"] == "nursing_subsidy"), "amount"] = (
        460.0
    )
    later = {f.contract: f for f in run(storage, decisions=changed)}
    # the acknowledged base changed the civil delta, the amount the statistics; the work lists stand
    assert later["civil_two_subsidies"].version == 2 and later["civil_two_subsidies"].rows == 1
    assert later["cdpf_subsidy_statistics"].version == 2
    assert later["cdpf_conflicts"] == first["cdpf_conflicts"]
    assert later["hrss_employment_referral"] == first["hrss_employment_referral"]
