"""三查 audits on small hand-made frames: every finding, its amounts and its masked evidence."""

from __future__ import annotations

import re
from datetime import date

import pandas as pd
import pytest

from transforms import audit

AS_OF = date(2026, 11, 1)
MONTHS = audit.audit_months(AS_OF, 3)
A, B, C, D, E = (f"3301021980010100{k:02d}" for k in (11, 22, 33, 44, 55))
UNMASKED = re.compile(r"\d{17}[\dX]")


def decisions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id_number": [A, A, B, C, D],
            "service": [
                "living_subsidy",
                "nursing_subsidy",
                "nursing_subsidy",
                "nursing_subsidy",
                "living_subsidy",
            ],
            "eligible": [True, True, True, False, True],
            "amount": [345.0, 300.0, 200.0, 0.0, 330.0],
        }
    )


def pay(rows: list[tuple[str, str, str, float, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["id_number", "service", "month", "amount", "county", "payee_account"]
    ).assign(month=lambda f: pd.to_datetime(f["month"]))


def master() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id_number": [A, B, C, D, E],
            "name": ["甲", "乙", "丙", "丁", "戊"],
            "hukou_county": ["330102", "330102", "330103", "330103", "330103"],
            "hukou_status": ["normal", "normal", "dead", "normal", "normal"],
            "death_date": [pd.NaT, pd.NaT, pd.Timestamp("2026-07-15"), pd.NaT, pd.NaT],
            "cert_status": ["active", "active", "active", "active", "cancelled"],
            "category": [4, 5, 4, 1, 2],
            "level": [1, 3, 2, 2, 1],
        }
    )


def roll() -> pd.DataFrame:
    rows = []
    for m in ("2026-08-01", "2026-09-01", "2026-10-01"):
        rows.append((A, "living_subsidy", m, 345.0, "330102", "6217000000000000001"))
        rows.append((A, "nursing_subsidy", m, 300.0, "330102", "6217000000000000001"))
        rows.append((C, "nursing_subsidy", m, 200.0, "330103", "6217000000000000003"))  # dead since July
    rows.append(
        (B, "nursing_subsidy", "2026-09-01", 200.0, "330102", "6217000000000000002")
    )  # Aug, Oct unpaid
    rows.append((A, "nursing_subsidy", "2026-10-01", 300.0, "330999", "6217000000000000001"))  # twice
    rows.append(
        (B, "nursing_subsidy", "2026-07-01", 999.0, "330102", "6217000000000000002")
    )  # outside window
    return pay(rows)


def test_payment_audit_finds_every_gap_per_person_and_month() -> None:
    found = audit.payment_audit(decisions(), roll(), MONTHS)
    got = {
        (r.id_number, r.service, f"{r.month:%Y-%m}", r.entitled, r.paid, r.finding)
        for r in found.itertuples()
    }
    assert got == {
        (A, "nursing_subsidy", "2026-10", 300.0, 600.0, audit.OVERPAID),
        (B, "nursing_subsidy", "2026-08", 200.0, 0.0, audit.ELIGIBLE_NOT_PAID),
        (B, "nursing_subsidy", "2026-10", 200.0, 0.0, audit.ELIGIBLE_NOT_PAID),
        *(
            (C, "nursing_subsidy", m, 0.0, 200.0, audit.PAID_NOT_ELIGIBLE)
            for m in ("2026-08", "2026-09", "2026-10")
        ),
        *(
            (D, "living_subsidy", m, 330.0, 0.0, audit.ELIGIBLE_NOT_PAID)
            for m in ("2026-08", "2026-09", "2026-10")
        ),
    }
    persons = audit.per_person(found, master()).set_index(["id_number", "finding"])
    assert persons.loc[(B, audit.ELIGIBLE_NOT_PAID), "months"] == "2026-08,2026-10"
    assert persons.loc[(B, audit.ELIGIBLE_NOT_PAID), "difference"] == -400.0
    assert persons.loc[(C, audit.PAID_NOT_ELIGIBLE), "finding_zh"] == "不应享而享"
    county = audit.by_county(found, master()).set_index(["hukou_county", "finding"])
    assert county.loc[("330103", audit.PAID_NOT_ELIGIBLE), "amount"] == 600.0
    assert county.loc[("330103", audit.ELIGIBLE_NOT_PAID), "months"] == 3


def test_a_partial_payment_is_underpaid_not_unpaid() -> None:
    partial = pay(
        [(B, "nursing_subsidy", m, 150.0, "330102", "x") for m in ("2026-08-01", "2026-09-01", "2026-10-01")]
    )
    found = audit.payment_audit(decisions()[decisions()["id_number"] == B], partial, MONTHS)
    assert found["finding"].tolist() == [audit.UNDERPAID] * 3
    assert found["difference"].tolist() == [-50.0] * 3


def test_fund_rules_each_fire_with_masked_evidence() -> None:
    rules = audit.AuditRules(
        amount_limits={"living_subsidy": 400, "nursing_subsidy": 450},
        max_persons_per_account=1,
        county_rise_ratio=1.5,
        county_rise_floor=100,
    )
    payments = pd.concat(
        [
            roll(),
            pay(
                [
                    (
                        D,
                        "living_subsidy",
                        "2026-10-01",
                        900.0,
                        "330103",
                        "6217000000000000001",
                    ),  # shares A's account
                    (E, "living_subsidy", "2026-10-01", 0.0, "330103", "6217000000000000005"),
                ]
            ),
        ],
        ignore_index=True,
    )
    found = audit.fund_findings(payments, master(), rules, MONTHS)
    by_rule = {
        rule: set(zip(g["id_number"], g["month"].dt.strftime("%Y-%m"), strict=False))
        for rule, g in found.groupby("rule")
    }
    assert by_rule["DUPLICATE_PAYMENT"] == {(A, "2026-10")}
    assert by_rule["AMOUNT_OUTSIDE_POLICY"] == {(D, "2026-10"), (E, "2026-10")}
    assert by_rule["PAID_AFTER_STOP"] == {(C, "2026-08"), (C, "2026-09"), (C, "2026-10")}
    assert by_rule["SHARED_ACCOUNT"] == {(A, "2026-10"), (D, "2026-10")}  # two persons on it in October only
    assert by_rule["COUNTY_RISE"] == {("", "2026-10")}
    # 330103: D and E on top of C in October; 330999: the second payment of A, nothing before
    assert found.loc[found["rule"] == "COUNTY_RISE", "county"].tolist() == ["330103", "330999"]
    evidence = " ".join(found["evidence"])
    assert not UNMASKED.search(evidence), evidence
    assert "6217****0001" in evidence and "330102********0011" in evidence


def test_no_payments_no_findings() -> None:
    empty = roll().iloc[0:0]
    assert audit.fund_findings(empty, master(), audit.AuditRules(), MONTHS).empty
    unpaid = audit.payment_audit(decisions(), empty, MONTHS)
    assert set(unpaid["finding"]) == {audit.ELIGIBLE_NOT_PAID} and len(unpaid) == 4 * 3


def test_needs_known_and_services_delivered() -> None:
    survey = pd.DataFrame(
        {
            "id_number": [A, B, D],
            "village": ["330102001201", "330102001201", "330103001202"],
            "surveyed_on": pd.to_datetime(["2026-06-01", "2025-06-01", None]),
        }
    )
    needs = audit.needs_unknown(master(), survey, AS_OF, 365)
    # C is dead and E's certificate is cancelled: nobody asks for their needs
    assert dict(zip(needs["id_number"], needs["finding"], strict=True)) == {
        B: "NEEDS_SURVEY_STALE",
        D: "NEEDS_SURVEY_MISSING",
    }
    late = audit.not_delivered(decisions(), roll(), MONTHS, 2)
    assert set(zip(late["id_number"], late["service"], strict=False)) == {(D, "living_subsidy")}
    assert set(
        zip(
            *[audit.not_delivered(decisions(), roll(), MONTHS, 1)[c] for c in ("id_number", "service")],
            strict=False,
        )
    ) == {
        (B, "nursing_subsidy"),
        (D, "living_subsidy"),
    }


@pytest.mark.parametrize(
    ("residents", "tier", "amount"), [(29, 1, 1200.0), (30, 2, 1800.0), (50, 2, 1800.0), (51, 3, 2400.0)]
)
def test_village_tiers_at_their_bounds(residents: int, tier: int, amount: float) -> None:
    ids = [f"p{k}" for k in range(residents)]
    people = pd.DataFrame(
        {
            "id_number": ids,
            "hukou_county": "330102",
            "hukou_status": "normal",
            "cert_status": "active",
            "category": 4,
            "level": 1,
        }
    )
    survey = pd.DataFrame({"id_number": ids, "village": "330102001201", "surveyed_on": pd.NaT})
    tiers = [audit.VillageTier(30, 1200), audit.VillageTier(51, 1800), audit.VillageTier(None, 2400)]
    got = audit.village_figures(people, survey, tiers)
    assert got[["village", "residents", "tier", "allowance"]].values.tolist() == [
        ["330102001201", residents, tier, amount]
    ]


def test_county_figures_count_holders_and_decisions() -> None:
    figures = audit.county_figures(master(), decisions())
    holders = figures["holders"].set_index("hukou_county")
    assert holders.loc["330102", "cat4"] == 1 and holders.loc["330102", "cat5"] == 1
    assert holders.loc["330103"].sum() == 2  # D only (C dead, E cancelled): category + level columns
    services = figures["services"].set_index(["hukou_county", "service"])
    assert services.loc[("330102", "nursing_subsidy"), "eligible"] == 2
    assert services.loc[("330102", "nursing_subsidy"), "amount"] == 500.0


def test_no_receipt_takes_the_newest_file_per_contract_and_its_ledger_status() -> None:
    def carried(rows: list[tuple[str, str, str, str, str]]) -> pd.DataFrame:
        frame = pd.DataFrame(rows, columns=["id_number", "service", "contract", "file", "business_date"])
        return frame.assign(
            partner="civil",
            sha256=frame["file"] + "-sha",
            business_date=pd.to_datetime(frame["business_date"]),
        )

    index = carried(
        [
            (A, "living_subsidy", "civil_two", "f1.csv", "2026-09-01"),  # acked, later changed in f2
            (A, "living_subsidy", "civil_two", "f2.csv", "2026-10-01"),  # sent, no receipt: 31 days
            (A, "nursing_subsidy", "civil_two", "f1.csv", "2026-09-01"),  # acked, unchanged since
            (B, "nursing_subsidy", "civil_two", "f3.csv", "2026-10-28"),  # no receipt but only 4 days
            (C, "nursing_subsidy", "civil_two", "f1.csv", "2026-09-01"),  # not eligible any more
            (D, "living_subsidy", "civil_two", "f4.csv", "2026-10-10"),  # never delivered: 22 days
        ]
    )
    ledger = pd.DataFrame(
        {
            "partner": "civil",
            "file": ["f1.csv", "f2.csv", "f3.csv"],
            "sha256": ["f1.csv-sha", "f2.csv-sha", "f3.csv-sha"],
            "status": ["acked", "pending", "pending"],
        }
    )
    late = audit.no_receipt(decisions(), index, ledger, master(), AS_OF, 7)
    got = list(
        zip(
            late["id_number"],
            late["service"],
            late["file"],
            late["status"],
            late["days_waiting"],
            strict=True,
        )
    )
    assert got == [
        (A, "living_subsidy", "f2.csv", "pending", 31),
        (D, "living_subsidy", "f4.csv", "unsent", 22),
    ]
    assert list(late["hukou_county"]) == ["330102", "330103"] and set(late["finding"]) == {"NO_RECEIPT"}
    assert audit.no_receipt(decisions(), index, ledger, master(), AS_OF, 30)["id_number"].tolist() == [A]
    assert audit.no_receipt(decisions(), index, ledger, master(), AS_OF, 31).empty
    acked = ledger.assign(status="acked")
    assert audit.no_receipt(decisions(), index, acked, master(), AS_OF, 7)["id_number"].tolist() == [D]
