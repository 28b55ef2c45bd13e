"""The sandbox province: reproducible, realistic, native shapes, defects that match their ground truth,
and an oracle that follows the two-subsidy rules on hand-made people."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import sqlite3
import unicodedata
from collections import Counter
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
import yaml

from core.settings import Settings, load_settings
from core.storage import Storage
from sandbox import names as namegen
from sandbox.generator import (
    DEFAULT_RATES,
    DEFECT_KINDS,
    SandboxInfo,
    check_char,
    check_chars,
    init_sandbox,
)
from sandbox.oracle import Assistance, Parameters, PersonFacts, decide, load_parameters
from sandbox.payments import PAYMENT_MONTHS, SERVICE_CODES
from sandbox.regions import ZHEJIANG

AS_OF = date(2026, 11, 1)
VECTORS = ["11010519491231002X", "440524188001010014", "34052419800101001X", "360426199101010071"]
ROOT = Path(__file__).resolve().parents[2]


def reference_check(first17: str) -> str:
    """GB 11643-1999 MOD 11-2 spelled out again, to check the generator against."""
    weights = [2 ** (17 - i) % 11 for i in range(17)]
    return "10X98765432"[sum(int(c) * w for c, w in zip(first17, weights, strict=True)) % 11]


def valid_id(text: str, as_of: date = AS_OF) -> bool:
    if len(text) != 18 or not text[:17].isdigit() or not text.isascii():
        return False
    try:
        born = date(int(text[6:10]), int(text[10:12]), int(text[12:14]))
    except ValueError:
        return False
    return reference_check(text[:17]) == text[17] and born <= as_of


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, SandboxInfo]:
    settings = load_settings(var_dir=tmp_path_factory.mktemp("sandbox") / "var")
    return settings, init_sandbox(settings, persons=20_000)


def read_native(info: SandboxInfo) -> dict[str, pd.DataFrame]:
    """Every source as the department wrote it, all text."""
    out = {}
    for source, path, table in (("cdpf", info.cdpf_db, "CJR_CJRZ"), ("civil", info.civil_db, "MZ_JZDX")):
        with sqlite3.connect(path) as con:
            out[source] = pd.read_sql(f"SELECT * FROM {table}", con).astype(object)
    out["hrss"] = pd.read_csv(info.hrss_csv, dtype=str, encoding="gb18030", keep_default_na=False).astype(
        object
    )
    lines = info.police_jsonl.read_text(encoding="utf-8").splitlines()
    out["police"] = pd.DataFrame([json.loads(line) for line in lines]).astype(object)
    return out


FIXABLE = ["legacy_15", "lowercase_x", "fullwidth", "apostrophe", "spaces"]
ID_COLUMN = {"cdpf": "SFZH", "civil": "SFZH", "hrss": "公民身份号码", "police": "gmsfhm"}
NAME_COLUMN = {"cdpf": "XM", "civil": "XM", "hrss": "姓名", "police": "xm"}


def truth(info: SandboxInfo, name: str) -> pd.DataFrame:
    return pd.read_csv(info.truth_dir / f"{name}.csv", dtype=str, keep_default_na=False)


# -- ID numbers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS)
def test_check_char_on_domain_vectors(vector: str) -> None:
    assert reference_check(vector[:17]) == vector[17]
    assert check_char(vector[:17]) == vector[17]


def test_vectorised_check_chars_agree_with_the_scalar_one() -> None:
    import numpy as np

    numbers = np.array(
        [int(v[:17]) for v in VECTORS] + [33011219900101001, 33011420210229123], dtype=np.int64
    )
    assert check_chars(numbers).tolist() == [check_char(str(n)) for n in numbers.tolist()]
    assert check_chars(numbers).tolist()[:4] == [v[17] for v in VECTORS]
    with pytest.raises(ValueError):
        check_char("１１０１０５１９４９１２３１００２")  # full-width digits are not digits here


def test_every_clean_id_passes_an_independent_check(sandbox: tuple[Settings, SandboxInfo]) -> None:
    _, info = sandbox
    native = read_native(info)
    dirty = set(truth(info, "defects")["id_raw"]) - set(truth(info, "defects")["id_number"])
    checked = 0
    for source, frame in native.items():
        ids = frame[ID_COLUMN[source]]
        clean = ids[~ids.isin(dirty)]
        bad = [i for i in clean if not valid_id(i)]
        assert not bad, f"{source}: {len(bad)} clean IDs fail the check, e.g. {bad[:3]}"
        checked += len(clean)
    assert checked > 55_000
    cdpf = native["cdpf"][~native["cdpf"]["SFZH"].isin(dirty)]
    assert (cdpf["SFZH"].str[6:14] == cdpf["CSRQ"].str.replace("-", "")).all()
    male = cdpf["SFZH"].str[16].astype(int) % 2 == 1
    assert ((cdpf["XB"] == "1") == male).all()
    assert (cdpf["CJRZH"] == cdpf["SFZH"] + cdpf["CJLB"] + cdpf["CJDJ"]).all()
    police = native["police"][~native["police"]["gmsfhm"].isin(dirty)]
    assert (police["gmsfhm"].str[6:14] == police["csrq"]).all()
    assert ((police["xbdm"] == "1") == (police["gmsfhm"].str[16].astype(int) % 2 == 1)).all()


def test_ids_use_real_county_codes_including_new_districts(sandbox: tuple[Settings, SandboxInfo]) -> None:
    _, info = sandbox
    cdpf = read_native(info)["cdpf"]
    codes = Counter(cdpf["SFZH"].str[:6])
    for new in ("330112", "330113", "330114"):
        assert codes[new] > 10, f"too few IDs carry {new}"
    assert codes["330185"] > 0, "numbers issued before 临安 became a district keep 330185"
    assert set(cdpf["HJXZQH"]) <= {c.code for c in ZHEJIANG}
    assert {"330112", "330113", "330114"} <= set(cdpf["HJXZQH"])
    born = pd.to_datetime(cdpf["CSRQ"])
    assert born.min().year >= 1930 and born.max().year <= 2024
    ages = (pd.Timestamp(AS_OF) - born).dt.days / 365.25
    assert 55 < ages.median() < 70, "the disabled population is older than the general one"


# -- names ------------------------------------------------------------------------------------------------


def test_rare_characters_and_minority_names_are_present(sandbox: tuple[Settings, SandboxInfo]) -> None:
    _, info = sandbox
    native = read_native(info)
    text = "".join(native["cdpf"]["XM"])
    assert "䶮" in text and "㵘" in text
    assert any(ord(c) >= 0x20000 for c in text), "no CJK Extension B character"
    minority = native["cdpf"]["XM"][native["cdpf"]["XM"].str.contains("·", regex=False)]
    assert 20 < len(minority) < 120  # about 0.3%
    rare = native["cdpf"]["XM"].map(lambda n: any(0x3400 <= ord(c) <= 0x4DBF or ord(c) >= 0x20000 for c in n))
    assert 50 < rare.sum() < 160  # about 0.5%
    for c in namegen.RARE_CHARS:
        assert unicodedata.name(c).startswith("CJK UNIFIED IDEOGRAPH")
    assert any(n.startswith(("欧阳", "司马")) for n in native["cdpf"]["XM"])
    surnames = Counter(n[0] for n in native["cdpf"]["XM"])
    assert {s for s, _ in surnames.most_common(5)} <= {"王", "李", "张", "刘", "陈", "杨", "吴"}


def test_variant_names_always_differ() -> None:
    for name in [
        "王伟",
        "李丽华",
        "刘䶮",
        "王㵘",
        "张𠮷",
        "买买提·艾力",
        "阿依古丽·买买提",
        "林",
        "欧阳明",
        "=王芳",
    ]:
        variant = namegen.variant_name(name)
        assert variant != name and len(variant) >= len(name) - 1
    for char in namegen.MALE_CHARS + namegen.FEMALE_CHARS + "".join(namegen.RARE_CHARS):
        assert char in namegen.VARIANTS


# -- native shapes --------------------------------------------------------------------------------------


def contract_columns(source: str) -> list[str]:
    doc = yaml.safe_load((ROOT / "schemas" / "sources" / f"{source}.yaml").read_text(encoding="utf-8"))
    return [c["native"] for c in doc["columns"]]


def test_native_shapes_follow_the_contracts(sandbox: tuple[Settings, SandboxInfo]) -> None:
    _, info = sandbox
    for source, path, table in (("cdpf", info.cdpf_db, "CJR_CJRZ"), ("civil", info.civil_db, "MZ_JZDX")):
        with sqlite3.connect(path) as con:
            declared = con.execute(f"PRAGMA table_info({table})").fetchall()
            assert sorted(c[1] for c in declared) == sorted(contract_columns(source))
            assert {c[2] for c in declared} == {"TEXT"} and not any(c[5] for c in declared)  # no key
            types = con.execute(
                " UNION ".join(f"SELECT DISTINCT typeof({c[1]}) FROM {table}" for c in declared)
            ).fetchall()
            assert types == [("text",)]
    native = read_native(info)
    assert list(native["hrss"].columns) == contract_columns("hrss")
    assert list(native["police"].columns) == [
        "gmsfhm", "xm", "xbdm", "csrq", "hjdz_xzqhdm", "hkztdm", "hkxzdm", "swrq", "gxsj", "ygmsfhm",
    ]  # fmt: skip
    assert set(contract_columns("police")) == set(native["police"].columns)
    cdpf, civil, hrss, police = (native[s] for s in ("cdpf", "civil", "hrss", "police"))
    assert set(cdpf["ZZZT"]) == {"1", "2", "3"} and set(cdpf["CQHL"]) == {"0", "1"}
    assert cdpf["FZRQ"].str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
    assert cdpf["GXSJ"].str.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}").all()
    assert set(civil["JZLX"]) == {"01", "02", "03", "04", "05", "09"}  # 09: injected unknown code
    assert civil["KSRQ"].str.fullmatch(r"\d{8}").all()
    assert civil["JSRQ"].str.fullmatch(r"(\d{8})?").all()
    assert civil["DBBZ"].astype(int).between(1000, 1300).all()
    assert set(hrss["就业状态"]) == {"就业", "失业", "未就业"}
    assert set(hrss["养老保险类型"]) == {"城乡居民", "职工", "未参保"}
    assert set(hrss["工伤保险生活护理费"]) == {"是", "否"}
    assert set(police["hkztdm"]) == {"0", "1", "2", "3"}
    assert (police["swrq"].isna() == (police["hkztdm"] != "1")).all()
    assert police["hjdz_xzqhdm"].str.fullmatch(r"[1-9]\d{5}").all()
    assert info.secrets_env.read_text().startswith("LIANBAN_POLICE_TOKEN=")
    token = info.secrets_env.read_text().strip().split("=", 1)[1]
    assert len(token) == 32 and int(token, 16) >= 0


def test_hrss_drop_is_strict_gb18030_with_crlf_and_marker(sandbox: tuple[Settings, SandboxInfo]) -> None:
    _, info = sandbox
    raw = info.hrss_csv.read_bytes()
    text = raw.decode("gb18030", errors="strict")
    assert info.hrss_marker.exists() and info.hrss_marker.read_bytes() == b""
    assert info.hrss_csv.name == f"hrss_persons_{AS_OF:%Y%m%d}.csv"
    assert raw.count(b"\n") == raw.count(b"\r\n") > 10_000
    assert text.splitlines()[0] == "公民身份号码,姓名,就业状态,养老保险类型,工伤保险生活护理费,更新时间"
    assert "䶮".encode("gb18030") in raw or "㵘".encode("gb18030") in raw
    rows = list(csv.reader(text.splitlines()))
    rare = [r[1] for r in rows if "䶮" in r[1] or "㵘" in r[1]]
    assert rare, "no rare-character name reached the hrss drop"
    for name in rare:
        assert name.encode("gb18030").decode("gb18030") == name
    assert "䶮".encode("gb18030").decode("gb18030") == "䶮"
    assert text.encode("gb18030") == raw


# -- determinism ------------------------------------------------------------------------------------------


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "secrets.env"
    }


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    first = init_sandbox(load_settings(var_dir=tmp_path / "a"), persons=3000, seed=11)
    second = init_sandbox(load_settings(var_dir=tmp_path / "b"), persons=3000, seed=11)
    other = init_sandbox(load_settings(var_dir=tmp_path / "c"), persons=3000, seed=12)
    assert len(digest(first.root)) == 16  # + payment roll, its marker, payments, fund and needs truth
    assert digest(first.root) == digest(second.root)
    assert digest(first.root)["frontdb_cdpf.sqlite"] != digest(other.root)["frontdb_cdpf.sqlite"]
    assert first.secrets_env.read_text() != second.secrets_env.read_text()  # the token is fresh each time


def test_init_wipes_the_old_sandbox_and_checks_rates(tmp_path: Path) -> None:
    settings = load_settings(var_dir=tmp_path)
    info = init_sandbox(settings, persons=500, seed=3)
    (info.root / "stale.txt").write_text("left over")
    info = init_sandbox(settings, persons=500, seed=3, as_of=date(2025, 6, 30))
    assert not (info.root / "stale.txt").exists()
    meta = json.loads(info.meta.read_text(encoding="utf-8"))
    assert meta["as_of"] == "2025-06-30" and meta["persons"] == 500 and meta["seed"] == 3
    assert info.hrss_csv.name == "hrss_persons_20250630.csv"
    with pytest.raises(ValueError, match="unknown defect kinds"):
        init_sandbox(settings, persons=500, rates={"typo": 0.1})
    quiet = init_sandbox(settings, persons=2000, rates=dict.fromkeys(DEFAULT_RATES, 0.0))
    assert len(truth(quiet, "defects")) == 0 and len(truth(quiet, "quarantine")) == 0


@pytest.mark.parametrize("persons", [1, 5, 40])
def test_a_small_province_pays_exactly_its_eligible_people(tmp_path: Path, persons: int) -> None:
    """Below a few hundred holders no payment defect is injected (the rates round to none): the roll then
    pays every eligible (person, subsidy) for each audited month and nobody else."""
    info = init_sandbox(load_settings(var_dir=tmp_path), persons=persons, seed=7)
    decided = truth(info, "decisions")
    eligible = decided[(decided["eligible"] == "1") & decided["service"].isin(list(SERVICE_CODES))]
    roll = pd.read_csv(
        next((info.root / "drops" / "civil_payments").glob("civil_payments_*.csv")),
        dtype=str,
        encoding="gb18030",
    )
    service = {code: name for name, code in SERVICE_CODES.items()}
    paid = Counter(zip(roll["公民身份号码"], roll["补贴类型"].map(service), strict=True))
    assert paid == Counter(
        dict.fromkeys(zip(eligible["id_number"], eligible["service"], strict=True), PAYMENT_MONTHS)
    )
    assert len(truth(info, "payments")) == 0


# -- defects and ground truth ---------------------------------------------------------------------------


def test_defect_counts_equal_truth_rows(sandbox: tuple[Settings, SandboxInfo]) -> None:
    _, info = sandbox
    meta = json.loads(info.meta.read_text(encoding="utf-8"))
    defects = truth(info, "defects")
    quarantine = truth(info, "quarantine")
    per_kind = Counter(defects["defect"])
    for kind in DEFECT_KINDS:
        expected = round(kind.rate * 20_000)
        assert per_kind[kind.name] == meta["counts"]["defects"][kind.name] == expected, kind.name
    unfixable = {k.name: k.reason for k in DEFECT_KINDS if k.reason}
    assert len(quarantine) == sum(per_kind[k] for k in unfixable)
    assert Counter(quarantine["reason_code"]) == Counter(
        {reason: per_kind[name] for name, reason in unfixable.items()}
    )
    assert len(truth(info, "formula_names")) == per_kind["formula_name"]
    conflicts = truth(info, "conflicts")
    assert (conflicts["conflict_type"] == "NAME_MISMATCH").sum() == per_kind["name_conflict"]
    assert defects.groupby("id_number").size().max() == 1, "each person carries at most one defect"


def test_every_quarantine_row_is_in_the_native_data(sandbox: tuple[Settings, SandboxInfo]) -> None:
    _, info = sandbox
    native = read_native(info)
    quarantine = truth(info, "quarantine")
    for (source, reason), group in quarantine.groupby(["source", "reason_code"]):
        written = Counter(native[source][ID_COLUMN[source]].fillna(""))
        for id_raw, n in Counter(group["id_raw"]).items():
            at_least = n + 1 if reason == "DUPLICATE_ROW" else n
            assert written[id_raw] >= at_least, (source, reason, id_raw)
    for source, frame in native.items():
        duplicated = frame.duplicated().sum()
        expected = ((quarantine["source"] == source) & (quarantine["reason_code"] == "DUPLICATE_ROW")).sum()
        assert duplicated == expected > 0, source
    fixable = truth(info, "defects")
    fixable = fixable[fixable["defect"].isin(FIXABLE)]
    cells = {source: set(frame[ID_COLUMN[source]]) for source, frame in native.items()}
    for row in fixable.itertuples():
        assert row.id_raw in cells[str(row.source)], row
    assert fixable["id_raw"].str.startswith("'").sum() >= 50
    apostrophes = fixable[fixable["defect"] == "apostrophe"]
    assert (apostrophes["source"] == "hrss").mean() > 0.5


def test_injected_id_defects_have_the_stated_form(sandbox: tuple[Settings, SandboxInfo]) -> None:
    _, info = sandbox
    d = truth(info, "defects")
    by = {kind: group for kind, group in d.groupby("defect")}
    legacy = by["legacy_15"]
    assert (legacy["id_raw"].str.len() == 15).all()
    assert (legacy["id_raw"].str[:6] + "19" + legacy["id_raw"].str[6:] == legacy["id_number"].str[:17]).all()
    assert (by["lowercase_x"]["id_raw"].str[-1] == "x").all()
    assert (by["lowercase_x"]["id_number"].str[-1] == "X").all()
    fullwidth = by["fullwidth"]["id_raw"]
    assert (
        fullwidth.map(lambda s: unicodedata.normalize("NFKC", s)).tolist()
        == by["fullwidth"]["id_number"].tolist()
    )
    assert (by["spaces"]["id_raw"].str.strip() == by["spaces"]["id_number"]).all()
    for row in by["bad_check_char"].itertuples():
        assert row.id_raw[:17] == row.id_number[:17] and row.id_raw[17] != reference_check(row.id_raw[:17])
    for row in by["future_birth"].itertuples():
        born = date(int(row.id_raw[6:10]), int(row.id_raw[10:12]), int(row.id_raw[12:14]))
        assert born > AS_OF and reference_check(row.id_raw[:17]) == row.id_raw[17]
        assert row.id_raw[:6] == row.id_number[:6] and row.id_raw[14:17] == row.id_number[14:17]
    assert by["excel_scientific"]["id_raw"].str.fullmatch(r"\d\.\d{5}E\+17").all()
    assert (by["missing_id"]["id_raw"] == "").all()


def reissued_numbers(native: dict[str, pd.DataFrame]) -> dict[str, str]:
    """Old number -> new, as police reports them (原公民身份号码 on the reissued person's record)."""
    police = native["police"].dropna(subset=["ygmsfhm"])
    return dict(zip(police["ygmsfhm"], police["gmsfhm"], strict=True))


def test_reissued_numbers_are_police_former_ids_and_the_old_keys_elsewhere(
    sandbox: tuple[Settings, SandboxInfo],
) -> None:
    """Police keys a reissued person by the new number and names the old one (原公民身份号码); cdpf
    (certificate included), civil and hrss still key them by the old number; the hub owes each such
    person an ID_SUPERSEDED conflict. Every second old number is of a county in another prefecture (a
    per-prefecture cycle must follow it across partitions), the others of the same county."""
    _, info = sandbox
    native = read_native(info)
    reissued = truth(info, "defects").query("defect == 'id_reissued'")
    assert len(reissued) > 0 and (reissued["source"] == "police").all()
    former = {new: old for old, new in reissued_numbers(native).items()}
    assert native["police"]["ygmsfhm"].notna().sum() == len(former) == len(reissued)
    elsewhere = 0
    for new in reissued["id_number"]:
        old = former[new]
        assert old != new and old[6:14] == new[6:14] and int(old[16]) % 2 == int(new[16]) % 2
        assert old[:6] == new[:6] or old[:4] != new[:4]
        elsewhere += old[:4] != new[:4]
        assert reference_check(old[:17]) == old[17]
        cdpf = native["cdpf"][native["cdpf"]["SFZH"] == old]
        assert len(cdpf) == 1 and cdpf["CJRZH"].str.startswith(old).all()
        for source in ("cdpf", "civil", "hrss"):
            assert not (native[source][ID_COLUMN[source]] == new).any(), source
    assert elsewhere == len(reissued) // 2
    conflicts = truth(info, "conflicts")
    superseded = set(conflicts.loc[conflicts["conflict_type"] == "ID_SUPERSEDED", "id_number"])
    assert superseded == set(reissued["id_number"])


def test_name_conflicts_and_formula_names_in_the_native_data(sandbox: tuple[Settings, SandboxInfo]) -> None:
    _, info = sandbox
    native = read_native(info)
    cdpf_names = dict(zip(native["cdpf"]["SFZH"], native["cdpf"]["XM"], strict=True))
    police_names = dict(zip(native["police"]["gmsfhm"], native["police"]["xm"], strict=True))
    conflicts = truth(info, "conflicts")
    mismatched = set(conflicts.loc[conflicts["conflict_type"] == "NAME_MISMATCH", "id_number"])
    differ = {i for i, n in cdpf_names.items() if i in police_names and police_names[i] != n}
    assert differ == mismatched
    formula = set(truth(info, "formula_names")["id_number"])
    for source, frame in native.items():
        hits = frame[frame[ID_COLUMN[source]].isin(formula)]
        assert hits[NAME_COLUMN[source]].str.match(r"[=+]").all()
        others = frame[~frame[ID_COLUMN[source]].isin(formula)]
        assert not others[NAME_COLUMN[source]].str.match(r"[=+\-@]").any()
    assert set(native["cdpf"]["SFZH"]) >= formula


def test_decisions_cover_exactly_the_accepted_cdpf_people(sandbox: tuple[Settings, SandboxInfo]) -> None:
    _, info = sandbox
    decisions = truth(info, "decisions")
    defects = truth(info, "defects")
    cdpf_out = set(
        defects.loc[
            (defects["source"] == "cdpf") & defects["defect"].isin(["bad_check_char", "future_birth"]),
            "id_number",
        ]
    )
    native = read_native(info)
    current = reissued_numbers(native)
    people = {current.get(i, i) for i in native["cdpf"]["CJRZH"].str[:18]}
    assert set(decisions["id_number"]) == people - cdpf_out
    services = decisions.groupby("id_number")["service"].agg(lambda s: tuple(sorted(s)))
    bundle = (
        "cert_cancellation_on_death",
        "cert_expired",
        "cert_renewal_reminder",
        "employment_referral",
        "living_subsidy",
        "medical_insurance_subsidy",
        "nursing_subsidy",
        "pension_contribution",
        "temporary_assistance",
        "wheelchair_fuel_subsidy",
    )
    assert all(v == bundle for v in services)
    assert decisions["amount"].str.fullmatch(r"\d+\.\d{2}").all()
    # certificate items and the referral carry no amount
    paid = decisions[
        ~decisions["service"].str.startswith("cert_") & (decisions["service"] != "employment_referral")
    ]
    assert ((paid["eligible"] == "0") == (paid["amount"] == "0.00")).all()
    assert (decisions.loc[decisions["service"].str.startswith("cert_"), "amount"] == "0.00").all()
    share = decisions.groupby("service")["eligible"].apply(lambda s: (s == "1").mean())
    assert 0.08 < share["living_subsidy"] < 0.2 and 0.2 < share["nursing_subsidy"] < 0.4
    # the later services: few wheelchairs, some referrals, 临时救助 in the declared period of 2026-11
    assert 0.005 < share["wheelchair_fuel_subsidy"] < 0.05 and 0.02 < share["employment_referral"] < 0.2
    assert 0.2 < share["temporary_assistance"] < 0.6
    fuel = decisions[(decisions["service"] == "wheelchair_fuel_subsidy") & (decisions["eligible"] == "1")]
    assert set(fuel["amount"]) == {"300.00", "600.00"}  # per vehicle: one or two
    temporary = decisions[(decisions["service"] == "temporary_assistance") & (decisions["eligible"] == "1")]
    assert set(temporary["amount"]) == {"300.00", "500.00"}  # rural or urban


def test_living_amounts_follow_the_civil_roll(sandbox: tuple[Settings, SandboxInfo]) -> None:
    """A cross-check from the native civil table: 30% of the highest in-force 低保 standard."""
    settings, info = sandbox
    params = load_parameters(settings.path(settings.policy), AS_OF)
    decisions = truth(info, "decisions")
    living = decisions[(decisions["service"] == "living_subsidy") & (decisions["eligible"] == "1")]
    native = read_native(info)
    civil = native["civil"]
    defects = truth(info, "defects")
    fixed = defects[(defects["source"] == "civil") & defects["defect"].isin(FIXABLE)]
    renamed = dict(zip(fixed["id_raw"], fixed["id_number"], strict=True))
    civil["SFZH"] = civil["SFZH"].replace(renamed | reissued_numbers(native))
    day = f"{AS_OF:%Y%m%d}"
    in_force = civil[
        (civil["ZT"] == "1")
        & (civil["KSRQ"] <= day)
        & ((civil["JSRQ"] == "") | (civil["JSRQ"] >= day))
        & civil["JZLX"].isin(["01", "02"])
    ]
    standard = in_force.groupby("SFZH")["DBBZ"].apply(lambda s: max(int(v) for v in s))
    for row in living.itertuples():
        expected = params.living_share_of_dibao * Decimal(int(standard[row.id_number]))
        assert Decimal(row.amount) == expected.quantize(Decimal("0.01")), row


def test_population_proportions_are_realistic(sandbox: tuple[Settings, SandboxInfo]) -> None:
    _, info = sandbox
    native = read_native(info)
    cdpf = native["cdpf"].drop_duplicates()
    share = cdpf["CJLB"].value_counts(normalize=True)
    assert 0.45 < share["4"] < 0.55 and 0.005 < share["3"] < 0.03 and 0.08 < share["1"] < 0.13
    level = cdpf["CJDJ"].value_counts(normalize=True)
    assert 0.12 < level["1"] < 0.18 and 0.27 < level["3"] < 0.33
    status = cdpf["ZZZT"].value_counts(normalize=True)
    assert 0.03 < status["2"] < 0.06 and 0.005 < status["3"] < 0.02
    expired = (cdpf["YXQZ"] < AS_OF.isoformat()).mean()
    assert 0.03 < expired < 0.06
    ten_years = pd.to_datetime(cdpf["FZRQ"]) + pd.DateOffset(years=10) == pd.to_datetime(cdpf["YXQZ"])
    assert ten_years.mean() > 0.85
    severe = cdpf["CJDJ"].isin(["1", "2"])
    assert 0.65 < (cdpf.loc[severe, "CQHL"] == "1").mean() < 0.75
    assert 0.35 < (cdpf.loc[~severe, "CQHL"] == "1").mean() < 0.45
    assert 0.03 < (cdpf["JGYH"] == "1").mean() < 0.07
    police = native["police"].drop_duplicates("gmsfhm", keep="last")
    hk = police["hkztdm"].value_counts(normalize=True)
    assert 0.015 < hk["1"] < 0.025 and 0.007 < hk["2"] < 0.014 and 0.001 < hk["3"] < 0.006
    assert 0.006 < (~police["hjdz_xzqhdm"].str.startswith("33")).mean() < 0.015
    hrss = native["hrss"]
    assert 0.55 < hrss["公民身份号码"].isin(cdpf["SFZH"]).sum() / len(cdpf) < 0.65
    civil = native["civil"]
    dbbz = civil.groupby("XZQH")["DBBZ"].apply(lambda s: s.astype(int).max())
    assert dbbz.between(1000, 1300).all()
    people = civil[civil["SFZH"].isin(cdpf["SFZH"])].groupby("JZLX")["SFZH"].nunique() / len(cdpf)
    assert 0.11 < people["01"] < 0.2 and 0.03 < people["02"] < 0.07 and 0.01 < people["03"] < 0.025
    assert 0.002 < (people["04"] + people["05"]) < 0.01
    assert ((civil["ZT"] == "0") | (civil["JSRQ"].between("1", f"{AS_OF:%Y%m%d}"))).sum() > 200


# -- the oracle -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def params() -> Parameters:
    settings = load_settings()
    policy = yaml.safe_load(settings.path(settings.policy).read_text(encoding="utf-8"))
    loaded = load_parameters(settings.path(settings.policy), AS_OF)
    assert loaded.living_share_of_dibao == Decimal(
        str(policy["periods"][0]["parameters"]["living_share_of_dibao"])
    )
    return loaded


def dibao(standard: int = 1150, kind: str = "dibao", **changes: object) -> Assistance:
    base = Assistance(kind, Decimal(standard), date(2020, 1, 1), None, True)
    return replace(base, **changes)  # type: ignore[arg-type]


BASE = PersonFacts(
    id_number="330106196001011234",
    category=6,
    level=3,
    cert_status="active",
    cert_valid_until=date(2030, 1, 1),
    needs_long_term_care=True,
    institutional_care=False,
    hukou_status="normal",
    hukou_county="330106",
    assistance=(dibao(),),
    work_injury_care=False,
)


def outcome(person: PersonFacts, params: Parameters) -> tuple[tuple[bool, str], tuple[bool, str]]:
    living, nursing = decide(person, AS_OF, params)
    return (living.eligible, f"{living.amount:.2f}"), (nursing.eligible, f"{nursing.amount:.2f}")


def test_oracle_level3_mental_with_care_gets_living_and_tier3(params: Parameters) -> None:
    assert outcome(BASE, params) == ((True, "345.00"), (True, "100.00"))
    assert params.nursing_tier3 == Decimal(100) and params.living_share_of_dibao == Decimal("0.3")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"assistance": (dibao(), dibao(kind="tekun"))},
            ((False, "0.00"), (False, "0.00")),
        ),  # 特困 excludes both
        (
            {"assistance": (dibao(), dibao(kind="orphan"))},
            ((False, "0.00"), (True, "100.00")),
        ),  # orphan: living only
        ({"assistance": (dibao(), dibao(kind="de_facto_orphan"))}, ((False, "0.00"), (True, "100.00"))),
        ({"work_injury_care": True}, ((False, "0.00"), (False, "0.00"))),  # 工伤护理费 excludes both
        ({"institutional_care": True}, ((True, "345.00"), (True, "150.00"))),  # +50% in an institution
        ({"level": 1, "category": 4, "institutional_care": True}, ((True, "345.00"), (True, "450.00"))),
        ({"level": 2, "category": 1}, ((True, "345.00"), (True, "200.00"))),
        ({"level": 3, "category": 4}, ((True, "345.00"), (False, "0.00"))),  # level 3 physical: not severe
        ({"level": 4, "category": 5}, ((True, "345.00"), (True, "100.00"))),
        ({"needs_long_term_care": False}, ((True, "345.00"), (False, "0.00"))),
        ({"cert_valid_until": AS_OF - timedelta(days=1)}, ((False, "0.00"), (False, "0.00"))),  # expired
        ({"cert_valid_until": AS_OF}, ((True, "345.00"), (True, "100.00"))),  # valid through the run date
        ({"cert_status": "cancelled"}, ((False, "0.00"), (False, "0.00"))),
        ({"cert_status": "suspended"}, ((False, "0.00"), (False, "0.00"))),
        ({"hukou_status": "moved_out"}, ((False, "0.00"), (False, "0.00"))),  # moved out of the province
        ({"hukou_status": "dead"}, ((False, "0.00"), (False, "0.00"))),
        ({"hukou_status": "missing"}, ((False, "0.00"), (False, "0.00"))),
        (
            {"hukou_status": None, "hukou_county": None},
            ((False, "0.00"), (False, "0.00")),
        ),  # no police record
        ({"hukou_county": "320102"}, ((False, "0.00"), (False, "0.00"))),  # 户籍 outside Zhejiang
        ({"assistance": ()}, ((False, "0.00"), (True, "100.00"))),
        (
            {"assistance": (dibao(kind="dibao_edge", dibao_standard=Decimal(1295)),)},
            ((True, "388.50"), (True, "100.00")),
        ),
        ({"assistance": (dibao(1100), dibao(1295, kind="dibao_edge"))}, ((True, "388.50"), (True, "100.00"))),
        ({"assistance": (dibao(active=False),)}, ((False, "0.00"), (True, "100.00"))),  # ZT '0'
        ({"assistance": (dibao(end=AS_OF - timedelta(days=1)),)}, ((False, "0.00"), (True, "100.00"))),
        ({"assistance": (dibao(end=AS_OF),)}, ((True, "345.00"), (True, "100.00"))),  # ends on the run date
        ({"assistance": (dibao(start=AS_OF + timedelta(days=1)),)}, ((False, "0.00"), (True, "100.00"))),
        ({"assistance": (dibao(), dibao(kind="tekun", active=False))}, ((True, "345.00"), (True, "100.00"))),
    ],
)
def test_oracle_rules(change: dict[str, object], expected: tuple, params: Parameters) -> None:
    assert outcome(replace(BASE, **change), params) == expected  # type: ignore[arg-type]


def test_oracle_reads_the_period_in_force(tmp_path: Path) -> None:
    policy = {
        "policy": "t",
        "version": "1",
        "periods": [
            {"effective_from": date(2016, 1, 1), "effective_to": date(2025, 12, 31), "parameters": dict.fromkeys(
                ["living_share_of_dibao", "nursing_tier1", "nursing_tier2", "nursing_tier3", "institutional_uplift"], 1
            )},
            {"effective_from": date(2026, 1, 1), "effective_to": None, "parameters": {
                "living_share_of_dibao": 0.25, "nursing_tier1": 310, "nursing_tier2": 210, "nursing_tier3": 110,
                "institutional_uplift": 0.5,
            }},
        ],
    }  # fmt: skip
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy), encoding="utf-8")
    now = load_parameters(path, AS_OF)
    assert now.nursing_tier3 == Decimal(110) and now.living_share_of_dibao == Decimal("0.25")
    assert load_parameters(path, date(2020, 1, 1)).nursing_tier1 == Decimal(1)
    assert outcome(BASE, now) == ((True, "287.50"), (True, "110.00"))
    with pytest.raises(LookupError):
        load_parameters(path, date(2015, 1, 1))


def test_generation_is_fast(tmp_path: Path) -> None:
    info = init_sandbox(load_settings(var_dir=tmp_path), persons=20_000, seed=5)
    assert info.seconds < 10, f"20,000 persons took {info.seconds:.1f} s"
    assert math.isclose(info.counts["rows"]["cdpf"], 20_000, rel_tol=0.01)


def test_a_benchmark_reuses_only_a_sandbox_this_generator_made(tmp_path: Path) -> None:
    from bench.cycle import _sandbox_matches
    from sandbox.generator import generator_fingerprint

    storage = Storage(load_settings(var_dir=tmp_path))
    storage.sandbox.mkdir(parents=True)
    meta = {"persons": 100, "seed": 1, "generator": generator_fingerprint()}
    (storage.sandbox / "sandbox.json").write_text(json.dumps(meta), encoding="utf-8")
    assert _sandbox_matches(storage, 100, 1) and not _sandbox_matches(storage, 100, 2)
    (storage.sandbox / "sandbox.json").write_text(json.dumps(meta | {"generator": "older"}), encoding="utf-8")
    assert not _sandbox_matches(storage, 100, 1)
