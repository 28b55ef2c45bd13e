"""Parameters by period, region and temporary adjustment; Hubei's and Shanghai's amounts; loader errors."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from test_eligibility import decide, get, person

from transforms.eligibility import PolicyError, load_policy

ROOT = Path(__file__).resolve().parents[2]
HUBEI = ROOT / "policies" / "hubei.yaml"
SHANGHAI = Path(__file__).resolve().parent / "policies" / "shanghai_2021.yaml"
WUHAN = {"id_number": "420102198001010014", "hukou_county": "420102"}


@pytest.mark.parametrize(
    ("as_of", "living", "nursing"),
    [
        (date(2016, 1, 1), 50.0, 100.0),
        (date(2020, 2, 29), 50.0, 100.0),  # the day before the adjustment
        (date(2020, 3, 1), 100.0, 150.0),  # first day: +50 each
        (date(2020, 6, 30), 100.0, 150.0),  # last day, inclusive
        (date(2020, 7, 1), 50.0, 100.0),  # back to the base period
        (date(2026, 3, 1), 50.0, 100.0),
    ],
)
def test_hubei_2016_amounts_with_the_2020_adjustment(as_of: date, living: float, nursing: float) -> None:
    d = decide(person(**WUHAN, cert_valid_until="2099-01-01"), policy_path=HUBEI, as_of=as_of)
    assert get(d, "living_subsidy", WUHAN["id_number"])["amount"] == living
    assert get(d, "nursing_subsidy", WUHAN["id_number"])["amount"] == nursing


def test_hubei_has_no_local_extensions_and_a_zhejiang_hukou_is_not_local() -> None:
    d = decide(
        person(**WUHAN, level=3, category=5),
        person(id_number="A", hukou_county="420102", dibao=False, dibao_edge=True),
        person(id_number="B"),  # 330106
        policy_path=HUBEI,
    )
    assert get(d, "nursing_subsidy", WUHAN["id_number"])["reasons"] == "NOT_SEVERE"
    assert get(d, "living_subsidy", "A")["reasons"] == "NOT_LOW_INCOME"
    assert get(d, "living_subsidy", "B")["reasons"] == "NOT_LOCAL_HUKOU"


@pytest.mark.parametrize(
    ("facts", "living", "nursing"),
    [
        ({"level": 1}, 410.0, 300.0),
        ({"level": 2}, 410.0, 150.0),
        ({"level": 3, "category": 5}, 290.0, 150.0),  # intellectual: nursing by local extension
        ({"level": 4, "category": 4}, 290.0, 0.0),  # not severe: living only
    ],
)
def test_shanghai_2021_amounts_go_to_matching_persons(
    facts: dict[str, int], living: float, nursing: float
) -> None:
    row = person(id_number="310101198001010011", hukou_county="310101", **facts)
    d = decide(row, policy_path=SHANGHAI, as_of=date(2021, 7, 1))
    assert get(d, "living_subsidy", "310101198001010011")["amount"] == living
    assert get(d, "nursing_subsidy", "310101198001010011")["amount"] == nursing
    assert bool(get(d, "nursing_subsidy", "310101198001010011")["eligible"]) is (nursing > 0)


REGIONAL = """
policy: regional-test
version: "r1"
region: "420000"
periods:
  - effective_from: 2016-01-01
    effective_to: 2019-12-31
    parameters: {living_amount: 50, nursing_amount: 100}
    regions:
      "4201": {living_amount: 60}
      "420102": {living_amount: 70}
  - effective_from: 2020-01-01
    effective_to: null
    parameters: {living_amount: 80, nursing_amount: 100}
    regions:
      "4201": {nursing_amount: 120}
adjustments:
  - name: wuhan-only
    effective_from: 2020-03-01
    effective_to: 2020-06-30
    region: "4201"
    add: {living_amount: 50}
facts:
  certificate_valid: "cert_status == 'active' and cert_valid_until >= as_of"
services:
  living_subsidy:
    title: 困难残疾人生活补贴
    criteria:
      CERT_INVALID: certificate_valid
    amount: living_amount
  nursing_subsidy:
    title: 重度残疾人护理补贴
    criteria:
      CERT_INVALID: certificate_valid
    amount: nursing_amount
"""


@pytest.mark.parametrize(
    ("as_of", "county", "living", "nursing"),
    [
        (date(2018, 1, 1), "420102", 70.0, 100.0),  # county beats prefecture beats province
        (date(2018, 1, 1), "420103", 60.0, 100.0),
        (date(2018, 1, 1), "420502", 50.0, 100.0),
        (date(2018, 1, 1), None, 50.0, 100.0),  # unknown address: the province default
        (date(2020, 1, 1), "420102", 80.0, 120.0),  # overrides belong to their period
        (date(2020, 3, 1), "420102", 130.0, 120.0),  # adjustment for prefix 4201 only
        (date(2020, 3, 1), "420502", 80.0, 100.0),
    ],
)
def test_region_overrides_most_specific_prefix_wins(
    tmp_path: Path, as_of: date, county: str | None, living: float, nursing: float
) -> None:
    path = tmp_path / "regional.yaml"
    path.write_text(REGIONAL, encoding="utf-8")
    d = decide(person(hukou_county=county, cert_valid_until="2099-01-01"), policy_path=path, as_of=as_of)
    assert get(d, "living_subsidy")["amount"] == living
    assert get(d, "nursing_subsidy")["amount"] == nursing


def test_explained_parameter_names_its_period_region_and_adjustment(tmp_path: Path) -> None:
    path = tmp_path / "regional.yaml"
    path.write_text(REGIONAL, encoding="utf-8")
    value, parts = load_policy(path, date(2020, 3, 1)).parameter_sources("living_amount", "420102")
    assert value == 130.0
    assert parts == [
        "living_amount=80 (periods[1] 2020-01-01..open)",
        "+50 (wuhan-only 2020-03-01..2020-06-30)",
    ]


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (REGIONAL.replace("region: \"420000\"", "region: \"420000\"\nregoin: x"), r"line 5: key 'regoin': expected one of the fields"),
        (REGIONAL.replace("    regions:\n      \"4201\": {nursing", "    note: x\n    colour: red\n    regions:\n      \"4201\": {nursing"), r"line 16: key 'periods\[1\]\.colour'"),
        (REGIONAL.replace("effective_from: 2020-01-01", "effective_from: 2020-02-01"), r"line 12: key 'periods\[1\]\.effective_from': expected 2020-01-01 .*no gap, found '2020-02-01'"),
        (REGIONAL.replace("effective_from: 2020-01-01", "effective_from: 2019-06-01"), r"line 12: key 'periods\[1\]\.effective_from': .*found 'overlapping periods\[0\], periods\[1\]'"),
        (REGIONAL.replace('"420102": {living_amount: 70}', '"420102": {living_amont: 70}'), r"line 11: key 'periods\[0\]\.regions\.420102\.living_amont': expected a parameter of the period"),
        (REGIONAL.replace('"4201": {living_amount: 60}', '"42010": {living_amount: 60}'), r"key 'periods\[0\]\.regions\.42010': expected an address-code prefix of 2, 4 or 6 digits"),
        (REGIONAL.replace("add: {living_amount: 50}", "add: {bonus: 50}"), r"key 'adjustments\[0\]\.add\.bonus'"),
        (REGIONAL.replace("    amount: nursing_amount", "    amount: nursing_amount\n    colour: red"), r"key 'services\.nursing_subsidy\.colour'"),
        (REGIONAL.replace("    amount: nursing_amount", "    amount: nursing_amount * hukou_colour"), r"unknown name 'hukou_colour'; expected a master attribute"),
        (REGIONAL.replace("parameters: {living_amount: 80, nursing_amount: 100}", "parameters: {living_amount: 80}"), r"key 'periods\[1\]\.parameters': expected the parameters of periods\[0\] \(missing \['nursing_amount'\]"),
    ],
)  # fmt: skip
def test_loader_errors_name_file_line_and_what_was_expected(
    tmp_path: Path, broken: str, message: str
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(broken, encoding="utf-8")
    with pytest.raises(PolicyError, match=rf"broken\.yaml .*{message}"):
        load_policy(path, date(2020, 3, 1))
