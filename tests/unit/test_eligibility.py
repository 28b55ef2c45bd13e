"""The two subsidies (两项补贴) evaluated from policies/zhejiang.yaml over tiny hand-made masters."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from transforms.eligibility import (
    COUNTED_CODES,
    DECISION_COLUMNS,
    PolicyError,
    columns_read,
    evaluate,
    load_policy,
)
from transforms.merge import MASTER_COLUMNS, coerce

ROOT = Path(__file__).resolve().parents[2]
ZHEJIANG = ROOT / "policies" / "zhejiang.yaml"
AS_OF = date(2026, 3, 1)


def person(**kw: Any) -> dict[str, Any]:
    """A certificate holder eligible for both subsidies; override one fact per test."""
    row: dict[str, Any] = {
        "id_number": "330106198001010014",
        "name": "张三",
        "gender": "male",
        "birth_date": "1980-01-01",
        "hukou_county": "330106",
        "hukou_status": "normal",
        "death_date": None,
        "cert_number": "33010619800101001441",
        "category": 4,
        "level": 1,
        "cert_status": "active",
        "cert_issued": "2020-01-01",
        "cert_valid_until": "2030-01-01",
        "needs_long_term_care": True,
        "institutional_care": False,
        "dibao": True,
        "dibao_edge": False,
        "tekun": False,
        "orphan_support": False,
        "dibao_standard": 1150.0,
        "employment": None,
        "pension_type": None,
        "work_injury_care": False,
        "hukou_nature": "urban",
        "lower_limb": False,
        "wheelchair_vehicles": 0,
        "able_to_work": False,
        "cdpf_batch": "b",
        "police_batch": "b",
        "civil_batch": "b",
        "hrss_batch": None,
        "sources": "P" * 26,
        "record_hash": 1,
    }
    return row | kw


def master(*rows: dict[str, Any], nullable_flags: bool = False) -> pd.DataFrame:
    """A typed master frame (flags nullable when a test needs an unknown fact)."""
    frame = pd.DataFrame(list(rows))
    kinds = {c: ("bool" if k == "flag" and nullable_flags else k) for c, k in MASTER_COLUMNS.items()}
    return pd.DataFrame({c: coerce(frame[c], k) for c, k in kinds.items()})


def decide(
    *rows: dict[str, Any], policy_path: Path = ZHEJIANG, as_of: date = AS_OF, **kw: Any
) -> pd.DataFrame:
    return evaluate(master(*rows, **kw), load_policy(policy_path, as_of), as_of)


def get(decisions: pd.DataFrame, service: str, id_number: str = "330106198001010014") -> pd.Series:
    rows = decisions[(decisions["service"] == service) & (decisions["id_number"] == id_number)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_baseline_person_gets_both_with_policy_amounts_and_the_decision_shape() -> None:
    d = decide(person())
    assert list(d.columns) == list(DECISION_COLUMNS)
    assert len(d) == 10 and d["id_number"].nunique() == 1  # one row per service of the bundle
    living, nursing = get(d, "living_subsidy"), get(d, "nursing_subsidy")
    assert bool(living["eligible"]) and living["amount"] == 345.0 and living["reasons"] == ""
    assert bool(nursing["eligible"]) and nursing["amount"] == 300.0 and nursing["reasons"] == ""
    assert set(d["period"]) == {"2026-03"}
    assert set(d["policy"]) == {"zhejiang-two-subsidies"} and set(d["policy_version"]) == {"2026.2"}
    assert d["eligible"].dtype == bool and d["amount"].dtype == "float64"


@pytest.mark.parametrize(
    ("facts", "code"),
    [
        ({"cert_status": "cancelled"}, "CERT_INVALID"),
        ({"cert_status": "suspended"}, "CERT_INVALID"),
        ({"cert_valid_until": "2026-02-28"}, "CERT_INVALID"),
        ({"cert_valid_until": None}, "CERT_INVALID"),  # unknown validity is not valid
        ({"hukou_status": "dead"}, "NOT_LOCAL_HUKOU"),
        ({"hukou_status": "moved_out"}, "NOT_LOCAL_HUKOU"),
        ({"hukou_status": "missing"}, "NOT_LOCAL_HUKOU"),
        ({"hukou_status": None}, "NOT_LOCAL_HUKOU"),  # no police record: not local
        ({"hukou_county": "110105"}, "NOT_LOCAL_HUKOU"),
        ({"tekun": True}, "EXCL_TEKUN"),
        ({"work_injury_care": True}, "EXCL_WORK_INJURY_CARE"),
    ],
)
def test_rules_for_both_subsidies(facts: dict[str, Any], code: str) -> None:
    d = decide(person(**facts))
    for service in ("living_subsidy", "nursing_subsidy"):
        row = get(d, service)
        assert not bool(row["eligible"])
        assert row["amount"] == 0.0
        assert row["reasons"] == code


def test_certificate_valid_until_the_run_date_inclusive() -> None:
    d = decide(person(cert_valid_until="2026-03-01"))
    assert bool(get(d, "living_subsidy")["eligible"])


def test_living_needs_low_income_and_dibao_edge_counts() -> None:
    d = decide(person(dibao=False, dibao_standard=None))
    assert get(d, "living_subsidy")["reasons"] == "NOT_LOW_INCOME"
    assert bool(get(d, "nursing_subsidy")["eligible"])
    edge = decide(person(dibao=False, dibao_edge=True, dibao_standard=1085.0))
    assert bool(get(edge, "living_subsidy")["eligible"]) and get(edge, "living_subsidy")["amount"] == 325.5


def test_orphan_support_excludes_living_but_not_nursing() -> None:
    d = decide(person(orphan_support=True))
    assert get(d, "living_subsidy")["reasons"] == "EXCL_ORPHAN_SUPPORT"
    assert bool(get(d, "nursing_subsidy")["eligible"])


@pytest.mark.parametrize(
    ("level", "category", "institutional", "eligible", "amount"),
    [
        (1, 4, False, True, 300.0),
        (2, 1, False, True, 200.0),
        (3, 5, False, True, 100.0),  # intellectual: local extension
        (4, 6, False, True, 100.0),  # mental: local extension
        (3, 4, False, False, 0.0),
        (4, 7, False, False, 0.0),
        (1, 4, True, True, 450.0),  # +50% in institutional care
        (2, 4, True, True, 300.0),
        (3, 6, True, True, 150.0),
    ],
)
def test_nursing_severity_tiers_and_institutional_uplift(
    level: int, category: int, institutional: bool, eligible: bool, amount: float
) -> None:
    row = get(
        decide(person(level=level, category=category, institutional_care=institutional)), "nursing_subsidy"
    )
    assert bool(row["eligible"]) is eligible
    assert row["amount"] == amount
    assert row["reasons"] == ("" if eligible else "NOT_SEVERE")


def test_nursing_needs_long_term_care() -> None:
    row = get(decide(person(needs_long_term_care=False)), "nursing_subsidy")
    assert row["reasons"] == "NOT_LONG_TERM_CARE"


def test_null_facts_never_make_anyone_eligible() -> None:
    d = decide(
        person(id_number="A", level=None),
        person(id_number="B", needs_long_term_care=None),
        person(id_number="C", tekun=None),
        person(id_number="D", cert_status=None),
        nullable_flags=True,
    )
    assert get(d, "nursing_subsidy", "A")["reasons"] == "NOT_SEVERE"
    assert get(d, "nursing_subsidy", "B")["reasons"] == "NOT_LONG_TERM_CARE"
    assert get(d, "living_subsidy", "C")["reasons"] == "EXCL_TEKUN"  # an unknown exclusion is not cleared
    assert get(d, "living_subsidy", "D")["reasons"] == "CERT_INVALID"
    assert bool(get(d, "living_subsidy", "A")["eligible"])  # level is no living-subsidy criterion
    d = d[d["service"].isin(["living_subsidy", "nursing_subsidy"])]
    blocked = d[~((d["service"] == "living_subsidy") & d["id_number"].isin(["A", "B"]))]
    assert not blocked["eligible"].any()
    assert (blocked["amount"] == 0).all()


def test_null_dibao_standard_is_guarded() -> None:
    row = get(decide(person(dibao_standard=None)), "living_subsidy")
    assert not bool(row["eligible"])
    assert row["amount"] == 0.0
    assert row["reasons"] == "AMOUNT_UNKNOWN"


def test_several_failed_criteria_and_exclusions_are_all_listed_in_order() -> None:
    row = get(decide(person(cert_status="cancelled", hukou_status=None, tekun=True)), "living_subsidy")
    assert row["reasons"] == "CERT_INVALID;NOT_LOCAL_HUKOU;EXCL_TEKUN"


def test_amounts_are_rounded_to_fen() -> None:
    row = get(decide(person(dibao_standard=1157.0)), "living_subsidy")
    assert row["amount"] == 347.1
    assert get(decide(person(dibao_standard=1001.11)), "living_subsidy")["amount"] == 300.33


def test_decisions_come_in_id_and_service_order_whatever_the_master_order() -> None:
    ids = ["330106198001010014", "330106197502020022", "330106199003030030", "330106196504040048"]
    rows = [person(id_number=i, level=n % 4 + 1, dibao=n % 2 == 0) for n, i in enumerate(ids)]
    shuffled = decide(*rows)  # ids not ascending: sorted after evaluation
    ordered = decide(*sorted(rows, key=lambda r: r["id_number"]))  # ascending: interleaved as evaluated
    keys = list(zip(ordered["id_number"], ordered["service"], strict=True))
    assert keys == sorted(keys) and len(keys) == len(ids) * len(load_policy(ZHEJIANG, AS_OF).services)
    pd.testing.assert_frame_equal(shuffled, ordered, check_exact=True)


def test_a_service_with_many_reason_codes_lists_every_failed_one(tmp_path: Path) -> None:
    """More codes than fit the counted table of failure masks (transforms.eligibility.COUNTED_CODES)."""
    codes = [f"C{i:02d}" for i in range(COUNTED_CODES + 2)]
    criteria = "\n".join(f"      {c}: level <= {i % 5}" for i, c in enumerate(codes))
    path = tmp_path / "many.yaml"
    path.write_text(
        "policy: many\nversion: '1'\nperiods:\n  - effective_from: 2016-01-01\n    effective_to: null\n"
        f"    parameters: {{x: 1}}\nservices:\n  many:\n    criteria:\n{criteria}\n    amount: x\n",
        encoding="utf-8",
    )
    levels = {"330106198001010014": 1, "330106197502020022": 3, "330106199003030030": 4}
    decided = decide(*(person(id_number=i, level=v) for i, v in levels.items()), policy_path=path)
    for id_number, level in levels.items():
        failed = [c for i, c in enumerate(codes) if not level <= i % 5]
        assert get(decided, "many", id_number)["reasons"] == ";".join(failed)


def test_empty_master_gives_no_decisions() -> None:
    d = evaluate(master(person()).iloc[0:0], load_policy(ZHEJIANG, AS_OF), AS_OF)
    assert d.empty and list(d.columns) == list(DECISION_COLUMNS)


TWO_PERIODS = """
policy: test-two-periods
version: "t1"
region: "330000"
periods:
  - effective_from: 2016-01-01
    effective_to: 2025-12-31
    parameters: {share: 0.30, tier1: 300, tier2: 200, tier3: 100, uplift: 0.5}
  - effective_from: 2026-01-01
    effective_to: null
    parameters: {share: 0.40, tier1: 500, tier2: 200, tier3: 100, uplift: 0.5}
facts:
  certificate_valid: "cert_status == 'active' and cert_valid_until >= as_of"
services:
  living_subsidy:
    title: 困难残疾人生活补贴
    criteria:
      CERT_INVALID: certificate_valid
      NOT_LOW_INCOME: "dibao or dibao_edge"
    amount: "share * dibao_standard"
  nursing_subsidy:
    title: 重度残疾人护理补贴
    criteria:
      CERT_INVALID: certificate_valid
    exclusions:
      EXCL_TEKUN: tekun
    amount: "(tier1 * (level == 1) + tier2 * (level == 2) + tier3 * (level >= 3)) * (1 + uplift * institutional_care)"
"""


def test_parameters_come_from_the_period_in_force(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(TWO_PERIODS, encoding="utf-8")
    old = load_policy(path, date(2025, 12, 31))
    new = load_policy(path, date(2026, 1, 1))
    assert old.parameters["share"] == 0.30 and new.parameters["share"] == 0.40
    assert (old.effective_from, old.effective_to) == (date(2016, 1, 1), date(2025, 12, 31))
    before = decide(person(), policy_path=path, as_of=date(2025, 12, 1))
    after = decide(person(), policy_path=path, as_of=date(2026, 3, 1))
    assert (
        get(before, "living_subsidy")["amount"] == 345.0 and get(after, "living_subsidy")["amount"] == 460.0
    )
    assert (
        get(before, "nursing_subsidy")["amount"] == 300.0 and get(after, "nursing_subsidy")["amount"] == 500.0
    )
    assert set(before["period"]) == {"2025-12"} and set(after["period"]) == {"2026-03"}


def test_no_period_in_force_names_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(TWO_PERIODS, encoding="utf-8")
    with pytest.raises(PolicyError, match=r"two\.yaml.*'periods'.*2015-06-01"):
        load_policy(path, date(2015, 6, 1))


@pytest.mark.parametrize(
    ("broken", "key"),
    [
        (
            TWO_PERIODS.replace("effective_from: 2016-01-01", "effective_from: soon"),
            r"periods\[0\]\.effective_from",
        ),
        (TWO_PERIODS.replace("share: 0.40", "share: lots"), r"periods\[1\]\.parameters\.share"),
        (
            TWO_PERIODS.replace('    amount: "share * dibao_standard"\n', ""),
            r"services\.living_subsidy\.amount",
        ),
        (TWO_PERIODS.replace("policy: test-two-periods\n", ""), r"'policy'"),
        (
            TWO_PERIODS.replace(
                "facts:",
                "  - effective_from: 2026-06-01\n    effective_to: null\n"
                "    parameters: {share: 0.5, tier1: 1, tier2: 1, tier3: 1, uplift: 0}\nfacts:",
            ),
            r"periods\[2\]\.effective_from'.*overlapping periods\[1\], periods\[2\]",
        ),
    ],
)
def test_malformed_policy_errors_name_file_line_and_key(tmp_path: Path, broken: str, key: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(broken, encoding="utf-8")
    with pytest.raises(PolicyError, match=rf"broken\.yaml.*{key}"):
        load_policy(path, date(2026, 6, 15))


def test_malformed_key_error_carries_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(TWO_PERIODS.replace("share: 0.40", "share: lots"), encoding="utf-8")
    with pytest.raises(PolicyError, match=r"broken\.yaml line 11: key 'periods\[1\]\.parameters\.share'"):
        load_policy(path, AS_OF)


def test_an_unknown_master_attribute_is_a_load_error_with_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad_expr.yaml"
    path.write_text(TWO_PERIODS.replace('"dibao or dibao_edge"', '"no_such_column > 1"'), encoding="utf-8")
    with pytest.raises(
        PolicyError,
        match=r"bad_expr\.yaml line 19: key 'services\.living_subsidy\.criteria\.NOT_LOW_INCOME'.*"
        r"unknown name 'no_such_column'",
    ):
        load_policy(path, AS_OF)


def test_the_stage_reads_only_the_columns_the_policy_names() -> None:
    """Evaluating over columns_read's projection gives the decisions of the whole master."""
    policy = load_policy(ZHEJIANG, AS_OF)
    wanted = columns_read(policy, MASTER_COLUMNS)
    assert wanted[0] == "id_number" and "dibao_standard" in wanted and "cert_valid_until" in wanted
    assert not {"name", "sources", "record_hash", "cdpf_batch", "gender"} & set(wanted)
    assert "cert_issued" in wanted  # the fuel subsidy's start month counts from it
    people = master(
        person(),
        person(id_number="33010619800101003X", level=3, category=5, institutional_care=True),
        person(id_number="330106198001010030", hukou_county="110105", tekun=True),
    )
    pd.testing.assert_frame_equal(evaluate(people[wanted], policy, AS_OF), evaluate(people, policy, AS_OF))
    with pytest.raises(PolicyError, match="level"):  # a column the projection dropped is missed loudly
        evaluate(people[[c for c in wanted if c != "level"]], policy, AS_OF)


@pytest.mark.parametrize(
    ("facts", "eligible", "reasons"),
    [
        ({}, True, ""),  # level 1, born 1980-01-01: 46 on the run date, resident scheme
        ({"birth_date": "2010-03-01"}, True, ""),  # 16 on the run date exactly
        ({"birth_date": "2010-03-02"}, False, "NOT_WORKING_AGE"),  # 16 tomorrow
        ({"birth_date": "1966-03-02"}, True, ""),  # 59, 60 tomorrow
        ({"birth_date": "1966-03-01"}, False, "NOT_WORKING_AGE"),  # 60 today
        ({"birth_date": None}, False, "NOT_WORKING_AGE"),  # unknown age is not working age
        ({"pension_type": "employee"}, False, "NOT_RESIDENT_SCHEME"),
        ({"pension_type": None}, False, "NOT_RESIDENT_SCHEME"),
        ({"level": 3}, False, "NOT_SEVERE"),
        ({"death_date": "2026-01-31", "hukou_status": "normal"}, False, "EXCL_DECEASED"),
        ({"death_date": "2026-03-01"}, True, ""),  # died this month: paid through the month of death
    ],
)
def test_resident_pension_contribution(facts: dict[str, Any], eligible: bool, reasons: str) -> None:
    row = get(decide(person(**{"pension_type": "resident", **facts})), "pension_contribution")
    assert (bool(row["eligible"]), row["reasons"]) == (eligible, reasons)
    assert row["amount"] == (100.0 if eligible else 0.0)


@pytest.mark.parametrize(
    ("facts", "eligible"),
    [({}, True), ({"level": 3, "dibao": True}, True), ({"level": 3, "dibao": False}, False)],
)
def test_medical_insurance_subsidy_for_severe_or_dibao(facts: dict[str, Any], eligible: bool) -> None:
    row = get(decide(person(**facts)), "medical_insurance_subsidy")
    assert bool(row["eligible"]) is eligible and row["amount"] == (380.0 if eligible else 0.0)


@pytest.mark.parametrize(
    ("facts", "due"),
    [
        ({"cert_valid_until": "2026-05-30"}, {"cert_renewal_reminder"}),  # 90 days ahead
        ({"cert_valid_until": "2026-05-31"}, set()),  # 91 days ahead
        ({"cert_valid_until": "2026-02-28"}, {"cert_expired"}),
        ({"hukou_status": "dead"}, {"cert_cancellation_on_death"}),
        ({"death_date": "2025-12-01", "cert_valid_until": "2026-02-28"}, {"cert_cancellation_on_death"}),
        ({"cert_status": "cancelled", "hukou_status": "dead"}, set()),  # already cancelled
        ({"hukou_status": None, "cert_valid_until": "2026-04-01"}, {"cert_renewal_reminder"}),
    ],
)
def test_certificate_items(facts: dict[str, Any], due: set[str]) -> None:
    d = decide(person(**facts))
    items = d[d["service"].str.startswith("cert_")]
    assert set(items.loc[items["eligible"], "service"]) == due
    assert (items["amount"] == 0).all()


REFERRAL_BASE = {"level": 3, "employment": "unemployed", "able_to_work": True}


@pytest.mark.parametrize(
    ("facts", "eligible", "reasons"),
    [
        ({}, True, ""),
        ({"employment": "not_employed"}, True, ""),
        ({"employment": "employed"}, False, "NOT_UNEMPLOYED"),
        ({"employment": None}, False, "NOT_UNEMPLOYED"),  # no hrss record: not known to be out of work
        ({"able_to_work": False}, False, "NOT_ABLE_TO_WORK"),
        ({"birth_date": "2010-03-02"}, False, "NOT_WORKING_AGE"),  # 16 tomorrow
        ({"birth_date": "1966-03-01"}, False, "NOT_WORKING_AGE"),  # 60 today
        ({"hukou_county": "420102"}, False, "NOT_LOCAL_HUKOU"),
        ({"death_date": "2026-03-01"}, False, "EXCL_DEAD"),  # no referral for the dead, even this month
        ({"employment": "employed", "able_to_work": False}, False, "NOT_UNEMPLOYED;NOT_ABLE_TO_WORK"),
    ],
)
def test_employment_referral(facts: dict[str, Any], eligible: bool, reasons: str) -> None:
    row = get(decide(person(**{**REFERRAL_BASE, **facts})), "employment_referral")
    assert (bool(row["eligible"]), row["reasons"], row["amount"]) == (eligible, reasons, 0.0)


FUEL_BASE = {"category": 4, "lower_limb": True, "wheelchair_vehicles": 1}


@pytest.mark.parametrize(
    ("facts", "eligible", "amount", "reasons"),
    [
        ({}, True, 300.0, ""),
        ({"wheelchair_vehicles": 2}, True, 600.0, ""),  # per vehicle per year
        ({"category": 7}, True, 300.0, ""),  # multiple disability including the lower limbs
        ({"wheelchair_vehicles": 0}, False, 0.0, "NO_VEHICLE"),
        ({"wheelchair_vehicles": None}, False, 0.0, "NO_VEHICLE"),
        ({"lower_limb": False}, False, 0.0, "NOT_LOWER_LIMB"),
        ({"category": 1}, False, 0.0, "NOT_LOWER_LIMB"),  # a vehicle is not evidence of the disability
        ({"cert_status": "suspended"}, False, 0.0, "CERT_INVALID"),
        ({"death_date": "2026-02-27"}, False, 0.0, "EXCL_DECEASED"),
    ],
)
def test_wheelchair_fuel_subsidy(facts: dict[str, Any], eligible: bool, amount: float, reasons: str) -> None:
    row = get(decide(person(**{**FUEL_BASE, **facts})), "wheelchair_fuel_subsidy")
    assert (bool(row["eligible"]), row["amount"], row["reasons"]) == (eligible, amount, reasons)


DECLARED = date(2026, 11, 15)  # inside the policy's declared 临时救助 period (2026-10-01..2026-12-31)


@pytest.mark.parametrize(
    ("facts", "as_of", "eligible", "amount", "reasons"),
    [
        ({}, DECLARED, True, 500.0, ""),  # urban 户口, level 1
        ({"hukou_nature": "rural"}, DECLARED, True, 300.0, ""),
        ({"level": 3, "dibao": True}, DECLARED, True, 500.0, ""),
        ({"level": 3, "dibao": False}, DECLARED, False, 0.0, "NOT_SEVERE_OR_DIBAO"),
        ({"hukou_nature": None}, DECLARED, False, 0.0, "RESIDENCE_UNKNOWN"),
        ({}, date(2026, 9, 30), False, 0.0, "NOT_DECLARED"),  # the day before the declared period
        ({}, date(2026, 10, 1), True, 500.0, ""),
        ({}, date(2026, 12, 31), True, 500.0, ""),
        ({}, date(2027, 1, 1), False, 0.0, "NOT_DECLARED"),
        ({"death_date": "2026-10-31"}, DECLARED, False, 0.0, "EXCL_DECEASED"),
    ],
)
def test_temporary_assistance_in_the_declared_period(
    facts: dict[str, Any], as_of: date, eligible: bool, amount: float, reasons: str
) -> None:
    row = get(decide(person(**facts), as_of=as_of), "temporary_assistance")
    assert (bool(row["eligible"]), row["amount"], row["reasons"]) == (eligible, amount, reasons)


def test_hubei_decides_the_three_later_services_with_its_own_amounts() -> None:
    hubei = ROOT / "policies" / "hubei.yaml"
    someone = person(hukou_county="420102", **FUEL_BASE, employment="unemployed", able_to_work=True, level=2)
    d = decide(someone, policy_path=hubei, as_of=date(2020, 4, 1))
    assert get(d, "wheelchair_fuel_subsidy")["amount"] == 240.0
    assert bool(get(d, "employment_referral")["eligible"])
    assert get(d, "temporary_assistance")["amount"] == 500.0  # declared for the 2020 epidemic
    assert not bool(
        get(decide(someone, policy_path=hubei, as_of=date(2021, 4, 1)), "temporary_assistance")["eligible"]
    )


def test_a_start_rule_outside_the_grammar_is_a_load_error(tmp_path: Path) -> None:
    text = ZHEJIANG.read_text(encoding="utf-8")
    for bad, message in (
        ("{from: cert_issued, month: next}", None),
        ("{from: level, month: next}", "as_of or a master date attribute"),
        ("{from: as_of, month: later}", "one of same, next"),
        ("{from: as_of, when: next}", "one of the fields from, month"),
    ):
        path = tmp_path / "p.yaml"
        path.write_text(text.replace("{from: cert_issued, month: next}", bad), encoding="utf-8")
        if message is None:
            assert load_policy(path, AS_OF).services["wheelchair_fuel_subsidy"].start.next_month
            continue
        with pytest.raises(
            PolicyError, match=rf"p.yaml line \d+: key 'services.wheelchair_fuel_subsidy.start.*{message}"
        ):
            load_policy(path, AS_OF)
