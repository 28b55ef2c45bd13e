"""The sandbox's audit inputs: the 民政 payment roll of the two subsidies and the 残联 needs survey.

Both are written after the ground-truth decisions, from them: the roll pays every (person, service) the
oracle decided eligible, at the decided amount, for each of the `PAYMENT_MONTHS` calendar months before
the run date; then defects are injected into disjoint, clean people (no ID defect anywhere, rows the hub
accepts) so that every finding the audit must make is known in advance:

- overpayments (不应享而享): paid after death (death before the first audited month), after moving out of
  the province, to a cancelled certificate; paid twice in one month in two counties; above the policy;
- underpayments (应享未享): one month missing, or never paid in the audited months (not delivered);
- one payee account shared by several eligible persons (a fund-use finding, not an overpayment).

truth/payments.csv lists every (person, service, month) whose paid amount differs from the entitled one,
with the injected kind; truth/fund_findings.csv the fund-use findings per person and month; truth/needs.csv
every holder's village and survey date. The survey table (CJR_XQDC in the cdpf 前置库) carries each holder's
12-digit village code (county code + township + village) and the last needs-survey date, or none.
"""

from __future__ import annotations

import csv
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sandbox.generator import disjoint_draws

PAYMENT_MONTHS = 3
SERVICE_CODES = {"living_subsidy": "01", "nursing_subsidy": "02"}
PAYMENT_COLUMNS = (
    "公民身份号码",
    "姓名",
    "发放地行政区划",
    "发放月份",
    "补贴类型",
    "发放金额",
    "收款账号",
    "更新时间",
)
SURVEY_COLUMNS = ("SFZH", "CJQHDM", "DCRQ", "GXSJ")
ABOVE_POLICY_EXTRA = 500.0  # yuan added: above every amount either subsidy can have
SHARED_ACCOUNT_PERSONS = 5
# share of certificate holders per injected payment defect
PAYMENT_RATES: dict[str, float] = {
    "underpaid_month": 0.004,
    "never_paid": 0.003,
    "paid_after_death": 0.003,
    "paid_moved_out": 0.002,
    "paid_cancelled_cert": 0.002,
    "paid_twice": 0.002,
    "above_policy": 0.002,
}


@dataclass(frozen=True)
class Holder:
    """What the roll needs to know of every person, one array entry each (the generator's people)."""

    id_number: np.ndarray  # object
    name: np.ndarray  # object
    county: np.ndarray  # 6-digit hukou county code, str
    holder: np.ndarray  # bool
    clean: np.ndarray  # bool: no injected defect, every row accepted by the hub
    status: np.ndarray  # visible police status: 0 normal, 1 dead, 2 moved out, 3 missing, -1 unknown
    in_province: np.ndarray  # bool: visible police county is in the province
    death: np.ndarray  # datetime64[D]
    cert_status: np.ndarray  # 1 active, 2 cancelled, 3 suspended
    level: np.ndarray
    institutional: np.ndarray


def audit_months(as_of: date, months: int = PAYMENT_MONTHS) -> list[pd.Timestamp]:
    """The first days of the `months` calendar months before the run date's month, oldest first."""
    current = pd.Timestamp(as_of).to_period("M")
    return [(current - k).to_timestamp() for k in range(months, 0, -1)]


def _nursing_amount(level: np.ndarray, institutional: np.ndarray, params: Any) -> np.ndarray:
    tier = np.select(
        [level == 1, level == 2],
        [float(params.nursing_tier1), float(params.nursing_tier2)],
        float(params.nursing_tier3),
    )
    return np.round(tier * (1 + float(params.institutional_uplift) * institutional), 2)


def write_payments(
    rng: np.random.Generator,
    people: Holder,
    decisions_csv: Path,
    as_of: date,
    params: Any,
    roll_dir: Path,
    truth_dir: Path,
    rates: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Write the payment roll drop (GB18030 CSV + .ok) and its ground truth; returns counts."""
    rates = {**PAYMENT_RATES, **(rates or {})}
    n = int(people.holder.sum())
    size = len(people.holder)
    months = audit_months(as_of)
    month_text = [m.strftime("%Y%m") for m in months]
    index = pd.Index(people.id_number)
    decided = pd.read_csv(decisions_csv, dtype={"id_number": str})
    eligible = decided[(decided["eligible"] == 1) & decided["service"].isin(list(SERVICE_CODES))]
    person = index.get_indexer(eligible["id_number"])
    pairs = pd.DataFrame(
        {"person": person, "service": eligible["service"].to_numpy(), "amount": eligible["amount"].to_numpy()}
    )
    draw = disjoint_draws(rng, size)
    paid_person = np.zeros(size, dtype=bool)
    paid_person[pairs["person"]] = True
    clean_paid = people.clean & paid_person
    count = {k: round(v * n) for k, v in rates.items()}
    under = draw(clean_paid, count["underpaid_month"])
    never = draw(clean_paid, count["never_paid"])
    twice = draw(clean_paid, count["paid_twice"])
    above = draw(clean_paid, count["above_policy"])
    shared = draw(clean_paid, SHARED_ACCOUNT_PERSONS)
    alive_local = (people.status == 0) & people.in_province
    unpaid_clean = people.clean & people.holder & ~paid_person
    dead = draw(
        unpaid_clean & (people.status == 1) & (people.death < np.datetime64(months[0].date())),
        count["paid_after_death"],
    )
    moved = draw(
        unpaid_clean & ((people.status == 2) | ((people.status == 0) & ~people.in_province)),
        count["paid_moved_out"],
    )
    cancelled = draw(unpaid_clean & (people.cert_status == 2) & alive_local, count["paid_cancelled_cert"])

    # one (person, service) per underpaid/twice/above person: the first of their eligible services
    first = pairs.drop_duplicates("person").set_index("person")
    truth: list[tuple[str, str, str, str, float, float]] = []
    fund: list[tuple[str, str, str, str]] = []
    rows = pairs.loc[np.repeat(pairs.index.to_numpy(), len(months))].reset_index(drop=True)
    rows["month"] = np.tile(np.arange(len(months)), len(pairs))
    own = rows["service"].to_numpy() == first["service"].reindex(rows["person"]).to_numpy()
    drop = ((np.isin(rows["person"], under) & (rows["month"] == 0)) | np.isin(rows["person"], never)) & own
    ids = people.id_number
    for who in under.tolist():
        service, amount = first.loc[who, "service"], float(first.loc[who, "amount"])
        truth.append((ids[who], service, month_text[0], "underpaid_month", amount, 0.0))
    for who in never.tolist():
        service, amount = first.loc[who, "service"], float(first.loc[who, "amount"])
        truth.extend((ids[who], service, m, "never_paid", amount, 0.0) for m in month_text)
    rows = rows[~drop].reset_index(drop=True)
    rows["county"] = people.county[rows["person"]]
    last = len(months) - 1
    extra_rows = []
    for who in twice.tolist():
        service, amount = first.loc[who, "service"], float(first.loc[who, "amount"])
        home = people.county[who]
        others = np.unique(people.county[people.county != home])
        elsewhere = str(others[int(rng.integers(0, len(others)))])
        extra_rows.append((who, service, amount, last, elsewhere))
        truth.append((ids[who], service, month_text[last], "paid_twice", amount, 2 * amount))
        fund.append((ids[who], service, month_text[last], "DUPLICATE_PAYMENT"))
    own = rows["service"].to_numpy() == first["service"].reindex(rows["person"]).to_numpy()
    above_mask = np.isin(rows["person"], above) & (rows["month"] == last) & own
    rows.loc[above_mask, "amount"] = rows.loc[above_mask, "amount"] + ABOVE_POLICY_EXTRA
    for who in above.tolist():
        service, amount = first.loc[who, "service"], float(first.loc[who, "amount"])
        truth.append(
            (ids[who], service, month_text[last], "above_policy", amount, amount + ABOVE_POLICY_EXTRA)
        )
        fund.append((ids[who], service, month_text[last], "AMOUNT_OUTSIDE_POLICY"))
    nursing = _nursing_amount(people.level, people.institutional, params)
    for kind, group in (
        ("paid_after_death", dead),
        ("paid_moved_out", moved),
        ("paid_cancelled_cert", cancelled),
    ):
        for who in group.tolist():
            for k, m in enumerate(month_text):
                extra_rows.append((who, "nursing_subsidy", float(nursing[who]), k, str(people.county[who])))
                truth.append((ids[who], "nursing_subsidy", m, kind, 0.0, float(nursing[who])))
                if kind == "paid_after_death":
                    fund.append((ids[who], "nursing_subsidy", m, "PAID_AFTER_STOP"))
    # typed, so that a roll with no injected row (a small sandbox) keeps integer positions after concat
    extra = pd.DataFrame(extra_rows, columns=["person", "service", "amount", "month", "county"]).astype(
        {"person": rows["person"].dtype, "amount": float, "month": rows["month"].dtype}
    )
    roll = pd.concat([rows, extra], ignore_index=True)

    accounts = np.char.add("6217", rng.integers(10**14, 10**15, size).astype(str)).astype(object)
    shared_account = accounts[shared[0]] if len(shared) else None
    accounts[shared] = shared_account
    for who in shared.tolist():
        for m in month_text:
            fund.append((ids[who], "", m, "SHARED_ACCOUNT"))
    roll = roll.sort_values(["month", "county", "person", "service"], kind="stable").reset_index(drop=True)
    stamp = pd.Timestamp(as_of) - pd.to_timedelta(rng.integers(3600, 20 * 86400, len(roll)), unit="s")
    roll_dir.mkdir(parents=True, exist_ok=True)
    path = roll_dir / f"civil_payments_{as_of:%Y%m%d}.csv"
    tmp = path.with_name(path.name + ".part")
    with tmp.open("w", encoding="gb18030", errors="strict", newline="") as out:
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(PAYMENT_COLUMNS)
        writer.writerows(
            zip(
                ids[roll["person"]].tolist(),
                people.name[roll["person"]].tolist(),
                roll["county"].astype(str).tolist(),
                np.array(month_text)[roll["month"]].tolist(),
                roll["service"].map(SERVICE_CODES).tolist(),
                [f"{a:.2f}" for a in roll["amount"].tolist()],
                accounts[roll["person"]].tolist(),
                stamp.strftime("%Y-%m-%d %H:%M:%S").tolist(),
                strict=True,
            )
        )
    os.replace(tmp, path)
    path.with_name(path.name + ".ok").write_bytes(b"")
    _write(truth_dir / "payments.csv", ("id_number", "service", "month", "kind", "entitled", "paid"), truth)
    _write(truth_dir / "fund_findings.csv", ("id_number", "service", "month", "rule"), fund)
    kinds: dict[str, int] = {}
    for row in truth:
        kinds[row[3]] = kinds.get(row[3], 0) + 1
    return {
        "rows": len(roll),
        "months": month_text,
        "file": str(path.name),
        "differences": kinds,
        "fund_findings": len(fund),
    }


def village_codes(rng: np.random.Generator, county: np.ndarray, holder: np.ndarray) -> np.ndarray:
    """A 12-digit village code per person: county code, township (001..), village committee (2xx).

    About one village per 35 holders of a county, of uneven sizes (Dirichlet weights), so the
    allowance tiers (under 30, 30 to 50, over 50 disabled residents) all occur at any province size.
    """
    village = np.empty(len(county), dtype=object)
    frame = pd.DataFrame({"county": county, "holder": holder})
    for code, members in frame.groupby("county", sort=True).groups.items():
        at = np.asarray(members)
        holders = int(holder[at].sum())
        count = max(1, int(np.ceil(holders / 35)))
        weights = rng.dirichlet(np.full(count, 2.0))
        pick = rng.choice(count, len(at), p=weights)
        village[at] = [f"{code}{1 + k // 20:03d}{200 + k % 20:03d}" for k in pick.tolist()]
    return village


def write_survey(
    rng: np.random.Generator, people: Holder, village: np.ndarray, as_of: date, db: Path, truth_dir: Path
) -> dict[str, int]:
    """The needs-survey table CJR_XQDC beside CJR_CJRZ: every holder's village and last survey date."""
    at = np.flatnonzero(people.holder)
    day = np.datetime64(as_of, "D")
    r = rng.random(len(at))
    age = np.where(r < 0.8, rng.integers(1, 365, len(at)), rng.integers(366, 3 * 365, len(at)))
    surveyed = day - age.astype("timedelta64[D]")
    missing = r >= 0.92
    text = np.datetime_as_string(surveyed, unit="D").astype(object)
    text[missing] = None
    stamp = np.datetime_as_string(day - rng.integers(1, 400, len(at)).astype("timedelta64[D]"), unit="D")
    con = sqlite3.connect(db)
    try:
        con.execute(f"CREATE TABLE CJR_XQDC ({', '.join(f'{c} TEXT' for c in SURVEY_COLUMNS)})")
        con.executemany(
            "INSERT INTO CJR_XQDC VALUES (?, ?, ?, ?)",
            zip(
                people.id_number[at].tolist(),
                village[at].tolist(),
                text.tolist(),
                [f"{s} 08:00:00" for s in stamp.tolist()],
                strict=True,
            ),
        )
        con.commit()
    finally:
        con.close()
    _write(
        truth_dir / "needs.csv",
        ("id_number", "village", "surveyed_on"),
        list(
            zip(
                people.id_number[at].tolist(),
                village[at].tolist(),
                [t or "" for t in text.tolist()],
                strict=True,
            )
        ),
    )
    return {"rows": len(at), "never_surveyed": int(missing.sum())}


def _write(path: Path, header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
