"""三查 audits: payments against decisions, fund-use monitoring, needs known, services delivered, and the
per-county and per-village figures. Pure and vectorised: frames in, frames out, no I/O.

The entitlement of a (person, service, month) of the audited window is the run's decision: eligible
persons are owed the decided amount every month, the others nothing. The payment roll is what civil
affairs paid. Findings keep full ID numbers (the work lists back to civil affairs need them); evidence
texts never hold one: ID numbers and payee accounts in them are masked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from core.masking import mask_ids

CENT = 0.005
# payment findings: 应享未享, 少发, 不应享而享, 多发
ELIGIBLE_NOT_PAID = "ELIGIBLE_NOT_PAID"
UNDERPAID = "UNDERPAID"
PAID_NOT_ELIGIBLE = "PAID_NOT_ELIGIBLE"
OVERPAID = "OVERPAID"
FINDING_ZH = {
    ELIGIBLE_NOT_PAID: "应享未享",
    UNDERPAID: "少发",
    PAID_NOT_ELIGIBLE: "不应享而享",
    OVERPAID: "多发",
    "DUPLICATE_PAYMENT": "同一人同月重复发放",
    "AMOUNT_OUTSIDE_POLICY": "发放金额超出政策标准",
    "PAID_AFTER_STOP": "死亡后仍发放",
    "SHARED_ACCOUNT": "多人共用同一收款账号",
    "COUNTY_RISE": "县区发放总额异常上升",
    "NEEDS_SURVEY_MISSING": "未做需求调查",
    "NEEDS_SURVEY_STALE": "需求调查已过期",
    "NOT_DELIVERED": "符合条件但未在发放名册",
    "NO_RECEIPT": "决定已送出但对方未回执",
}


@dataclass(frozen=True)
class VillageTier:
    below: int | None  # residents strictly below this number (None: no upper bound)
    amount: float


@dataclass(frozen=True)
class AuditRules:
    """The audit's rules, from the config's `audit:` section (stages.audit.AuditConfig)."""

    months: int = 3
    delivery_delay_months: int = 2
    survey_max_age_days: int = 365
    max_persons_per_account: int = 3
    amount_limits: Mapping[str, float] = field(default_factory=dict)
    county_rise_ratio: float = 1.5
    county_rise_floor: float = 2000.0
    village_tiers: Sequence[VillageTier] = ()
    receipt_delay_days: int = 7


def audit_months(as_of: date, months: int) -> list[pd.Timestamp]:
    """First days of the `months` calendar months before the run date's month, oldest first."""
    current = pd.Timestamp(as_of).to_period("M")
    return [(current - k).to_timestamp() for k in range(months, 0, -1)]


def _yuan(amount: pd.Series) -> pd.Series:
    """Amounts as text with two decimals (a string column even when empty)."""
    return amount.astype("float64").map("{:.2f}".format).astype("string")


def mask_accounts(values: pd.Series) -> pd.Series:
    """A payee account as its first 4 and last 4 characters."""
    text = values.astype("string").fillna("")
    return (text.str[:4] + "****" + text.str[-4:]).where(text.str.len() > 8, "****")


def _in_window(payments: pd.DataFrame, months: Sequence[pd.Timestamp]) -> pd.DataFrame:
    month = pd.to_datetime(payments["month"]).dt.to_period("M").dt.to_timestamp()
    return payments.assign(month=month)[month.isin(list(months))]


def payment_audit(
    decisions: pd.DataFrame, payments: pd.DataFrame, months: Sequence[pd.Timestamp]
) -> pd.DataFrame:
    """Every (person, service, month) whose paid amount differs from the entitled one, with its finding.

    Columns: id_number, service, month, entitled, paid, difference (paid - entitled), payments, finding.
    """
    eligible = decisions.loc[decisions["eligible"].astype(bool), ["id_number", "service", "amount"]]
    owed = eligible.merge(pd.DataFrame({"month": list(months)}), how="cross").rename(
        columns={"amount": "entitled"}
    )
    paid = (
        _in_window(payments, months)
        .groupby(["id_number", "service", "month"], sort=False)["amount"]
        .agg(paid="sum", payments="size")
        .reset_index()
    )
    both = owed.merge(paid, on=["id_number", "service", "month"], how="outer")
    both["entitled"] = both["entitled"].fillna(0.0).astype("float64").round(2)
    both["paid"] = both["paid"].fillna(0.0).astype("float64").round(2)
    both["payments"] = both["payments"].fillna(0).astype("int64")
    both["difference"] = (both["paid"] - both["entitled"]).round(2)
    out = both[both["difference"].abs() > CENT].copy()
    out["finding"] = np.select(
        [out["entitled"] <= CENT, out["paid"] <= CENT, out["difference"] > 0],
        [PAID_NOT_ELIGIBLE, ELIGIBLE_NOT_PAID, OVERPAID],
        UNDERPAID,
    )
    out["id_number"] = out["id_number"].astype("string")
    columns = ["id_number", "service", "month", "entitled", "paid", "difference", "payments", "finding"]
    return out.sort_values(["id_number", "service", "month"], kind="stable")[columns].reset_index(drop=True)


def per_person(findings: pd.DataFrame, master: pd.DataFrame) -> pd.DataFrame:
    """One row per (person, service, finding): the months concerned and the amount over or under paid."""
    grouped = (
        findings.assign(month_text=findings["month"].dt.strftime("%Y-%m"))
        .groupby(["id_number", "service", "finding"], sort=True)
        .agg(
            months=("month_text", lambda m: ",".join(sorted(m))),
            month_count=("month_text", "size"),
            entitled=("entitled", "sum"),
            paid=("paid", "sum"),
            difference=("difference", "sum"),
        )
        .reset_index()
    )
    people = master[["id_number", "name", "hukou_county"]].astype({"id_number": "string"})
    out = grouped.merge(people, on="id_number", how="left")
    out["finding_zh"] = out["finding"].map(FINDING_ZH)
    return out.round({"entitled": 2, "paid": 2, "difference": 2})


def by_county(findings: pd.DataFrame, master: pd.DataFrame) -> pd.DataFrame:
    """Per hukou county and finding: persons, person-months and the amount over (+) or under (-) paid."""
    people = master[["id_number", "hukou_county"]].astype({"id_number": "string"})
    joined = findings.merge(people, on="id_number", how="left")
    joined["hukou_county"] = joined["hukou_county"].fillna("unknown")
    out = (
        joined.groupby(["hukou_county", "finding"], sort=True)
        .agg(persons=("id_number", "nunique"), months=("month", "size"), amount=("difference", "sum"))
        .reset_index()
    )
    return out.round({"amount": 2})


def fund_findings(
    payments: pd.DataFrame, master: pd.DataFrame, rules: AuditRules, months: Sequence[pd.Timestamp]
) -> pd.DataFrame:
    """Fund-use monitoring per the configured rules; one row per finding, with masked evidence.

    Columns: rule, id_number (empty for a county finding), service, month, county, amount, evidence.
    """
    paid = _in_window(payments, months).reset_index(drop=True)
    paid["id_number"] = paid["id_number"].astype("string")
    masked = mask_ids(paid["id_number"])
    month_text = paid["month"].dt.strftime("%Y-%m")
    parts: list[pd.DataFrame] = []

    def finding(rule: str, rows: pd.DataFrame, evidence: pd.Series) -> None:
        parts.append(
            pd.DataFrame(
                {
                    "rule": rule,
                    "id_number": rows["id_number"].astype("string"),
                    "service": rows["service"].astype("string"),
                    "month": rows["month"],
                    "county": rows["county"].astype("string"),
                    "amount": rows["amount"].astype("float64").round(2),
                    "evidence": evidence.astype("string"),
                }
            )
        )

    key = ["id_number", "service", "month"]
    dup = paid[paid.duplicated(key, keep=False)]
    if len(dup):
        grouped = dup.groupby(key, sort=True).agg(
            county=("county", lambda c: ",".join(sorted(c.astype(str)))),
            amount=("amount", "sum"),
            n=("amount", "size"),
        )
        grouped = grouped.reset_index()
        finding(
            "DUPLICATE_PAYMENT",
            grouped,
            mask_ids(grouped["id_number"])
            + " "
            + grouped["month"].dt.strftime("%Y-%m")
            + ": "
            + grouped["n"].astype(str).astype("string")
            + " payments in counties "
            + grouped["county"]
            + ", total "
            + _yuan(grouped["amount"]),
        )

    limit = paid["service"].astype(str).map(dict(rules.amount_limits)).astype("float64")
    outside = (paid["amount"] <= 0) | (limit.notna() & (paid["amount"] > limit + CENT))
    rows = paid[outside]
    finding(
        "AMOUNT_OUTSIDE_POLICY",
        rows,
        masked[outside]
        + " "
        + month_text[outside]
        + ": paid "
        + _yuan(rows["amount"])
        + ", policy at most "
        + _yuan(limit[outside]),
    )

    death = pd.to_datetime(
        paid["id_number"].map(master.set_index(master["id_number"].astype("string"))["death_date"])
    )
    after = death.notna() & (paid["month"] > death)
    rows = paid[after]
    finding(
        "PAID_AFTER_STOP",
        rows,
        masked[after]
        + " "
        + month_text[after]
        + ": paid after death on "
        + death[after].dt.strftime("%Y-%m-%d"),
    )

    persons = paid.groupby(["payee_account", "month"])["id_number"].transform("nunique").astype("int64")
    shared = persons > rules.max_persons_per_account
    rows = paid[shared].drop_duplicates(["id_number", "month", "payee_account"])
    finding(
        "SHARED_ACCOUNT",
        rows.assign(service=""),
        mask_ids(rows["id_number"])
        + " "
        + rows["month"].dt.strftime("%Y-%m")
        + ": account "
        + mask_accounts(rows["payee_account"])
        + " receives payments for "
        + persons[rows.index].astype(str).astype("string")
        + " persons",
    )

    if len(months) >= 2:
        totals = paid.pivot_table(
            index="county", columns="month", values="amount", aggfunc="sum", fill_value=0.0
        )
        totals = totals.reindex(columns=list(months), fill_value=0.0)
        last = totals[months[-1]]
        before = totals[list(months[:-1])].mean(axis=1)
        rise = (last > before * rules.county_rise_ratio) & (last - before > rules.county_rise_floor)
        risen = totals[rise]
        rows = pd.DataFrame(
            {
                "id_number": pd.Series("", index=risen.index, dtype="string"),
                "service": "",
                "month": months[-1],
                "county": risen.index.astype(str),
                "amount": last[rise],
            }
        )
        finding(
            "COUNTY_RISE",
            rows,
            pd.Series(
                [
                    f"{c} {months[-1]:%Y-%m}: {a:.2f} against a mean of {b:.2f} in the earlier months"
                    for c, a, b in zip(rows["county"], last[rise], before[rise], strict=True)
                ],
                index=rows.index,
                dtype="string",
            ),
        )
    columns = ["rule", "id_number", "service", "month", "county", "amount", "evidence"]
    if not parts:
        return pd.DataFrame(columns=columns)
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(["rule", "county", "id_number", "month"], kind="stable")[columns].reset_index(
        drop=True
    )


def _alive_holders(master: pd.DataFrame) -> pd.DataFrame:
    """Persons with an active certificate and not registered dead: those whose needs must be known."""
    return master[(master["cert_status"] == "active") & (master["hukou_status"].fillna("") != "dead")]


def needs_unknown(master: pd.DataFrame, survey: pd.DataFrame, as_of: date, max_age_days: int) -> pd.DataFrame:
    """Holders whose needs survey is missing or older than `max_age_days` on the run date."""
    people = _alive_holders(master)[["id_number", "hukou_county"]].astype({"id_number": "string"})
    last = survey.assign(id_number=survey["id_number"].astype("string")).sort_values("surveyed_on")
    last = last.drop_duplicates("id_number", keep="last")[["id_number", "village", "surveyed_on"]]
    joined = people.merge(last, on="id_number", how="left")
    surveyed = pd.to_datetime(joined["surveyed_on"])
    age = (pd.Timestamp(as_of) - surveyed).dt.days
    missing = surveyed.isna()
    stale = ~missing & (age > max_age_days)
    out = joined[missing | stale].copy()
    out["finding"] = np.where(missing[missing | stale], "NEEDS_SURVEY_MISSING", "NEEDS_SURVEY_STALE")
    out["age_days"] = age[missing | stale].astype("Int64")
    return out.sort_values("id_number", kind="stable").reset_index(drop=True)


def not_delivered(
    decisions: pd.DataFrame, payments: pd.DataFrame, months: Sequence[pd.Timestamp], delay_months: int
) -> pd.DataFrame:
    """Eligible (person, service) pairs on none of the last `delay_months` months of the roll."""
    recent = list(months)[-delay_months:]
    paid = _in_window(payments, recent)[["id_number", "service"]].astype("string").drop_duplicates()
    eligible = decisions.loc[decisions["eligible"].astype(bool), ["id_number", "service", "amount"]]
    eligible = eligible.astype({"id_number": "string", "service": "string"})
    joined = eligible.merge(paid, on=["id_number", "service"], how="left", indicator=True)
    out = joined[joined["_merge"] == "left_only"].drop(columns="_merge")
    return out.assign(finding="NOT_DELIVERED", since=f"{recent[0]:%Y-%m}").reset_index(drop=True)


def no_receipt(
    decisions: pd.DataFrame,
    carried: pd.DataFrame,
    status: pd.DataFrame,
    master: pd.DataFrame,
    as_of: date,
    delay_days: int,
) -> pd.DataFrame:
    """Eligible (person, service) whose decision went out in a partner file with no receipt after
    `delay_days`: per contract, the newest file carrying the pair (a delta carries it when it is new or
    changed, so an acknowledged earlier file still counts until a change goes out); `status` is the
    delivery ledger per (partner, file, sha256), a file absent from it is `unsent`. Days waiting are
    counted from the file's business date.

    Columns: id_number, hukou_county, service, partner, contract, file, status, business_date,
    days_waiting, finding.
    """
    eligible = decisions.loc[decisions["eligible"].astype(bool), ["id_number", "service"]]
    eligible = eligible.astype("string").drop_duplicates()
    newest = carried.astype({"id_number": "string", "service": "string"}).sort_values(
        ["business_date", "file"], kind="stable"
    )
    newest = newest.drop_duplicates(["id_number", "service", "contract"], keep="last")
    joined = eligible.merge(newest, on=["id_number", "service"], how="inner")
    ledger = status[["partner", "file", "sha256", "status"]].drop_duplicates(
        ["partner", "file", "sha256"], keep="last"
    )
    joined = joined.merge(ledger, on=["partner", "file", "sha256"], how="left")
    joined["status"] = joined["status"].astype("string").fillna("unsent")
    joined["days_waiting"] = (pd.Timestamp(as_of) - pd.to_datetime(joined["business_date"])).dt.days
    joined["days_waiting"] = joined["days_waiting"].astype("int64")
    joined["finding"] = "NO_RECEIPT"
    late = joined[(joined["status"] != "acked") & (joined["days_waiting"] > delay_days)]
    people = master[["id_number", "hukou_county"]].astype({"id_number": "string"})
    out = late.merge(people, on="id_number", how="left")
    out["hukou_county"] = out["hukou_county"].fillna("unknown")
    columns = [
        "id_number", "hukou_county", "service", "partner", "contract", "file", "status", "business_date",
        "days_waiting", "finding",
    ]  # fmt: skip
    return out.sort_values(["hukou_county", "id_number", "service", "contract"], kind="stable")[
        columns
    ].reset_index(drop=True)


def county_figures(master: pd.DataFrame, decisions: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per county: holders by category and by level; decisions (eligible, amount) by service."""
    holders = _alive_holders(master)
    by_category = pd.crosstab(holders["hukou_county"], holders["category"]).rename(
        columns=lambda c: f"cat{c}"
    )
    by_level = pd.crosstab(holders["hukou_county"], holders["level"]).rename(columns=lambda c: f"level{c}")
    people = master[["id_number", "hukou_county"]].astype({"id_number": "string"})
    eligible = decisions[decisions["eligible"].astype(bool)].astype({"id_number": "string"})
    joined = eligible.merge(people, on="id_number", how="left")
    services = joined.groupby(["hukou_county", "service"]).agg(
        eligible=("id_number", "size"), amount=("amount", "sum")
    )
    return {
        "holders": pd.concat([by_category, by_level], axis=1).fillna(0).astype("int64").reset_index(),
        "services": services.round({"amount": 2}).reset_index(),
    }


def village_figures(master: pd.DataFrame, survey: pd.DataFrame, tiers: Sequence[VillageTier]) -> pd.DataFrame:
    """Per village (12-digit code): disabled residents (active certificate, not dead) and the grassroots
    committee allowance tier their number falls in."""
    holders = _alive_holders(master)[["id_number"]].astype("string")
    villages = survey[["id_number", "village"]].astype("string").drop_duplicates("id_number", keep="last")
    joined = holders.merge(villages, on="id_number", how="left")
    joined["village"] = joined["village"].fillna("unknown")
    counts = joined.groupby("village").size().rename("residents").reset_index()
    counts["county"] = counts["village"].str[:6].where(counts["village"] != "unknown", "unknown")
    residents = counts["residents"].to_numpy()
    tier = np.full(len(counts), len(tiers), dtype=np.int64)
    amount = np.zeros(len(counts))
    for k in range(len(tiers) - 1, -1, -1):  # a handful of tiers, each vectorised over the villages
        below = tiers[k].below
        hit = residents < below if below is not None else np.ones(len(counts), dtype=bool)
        tier = np.where(hit, k + 1, tier)
        amount = np.where(hit, tiers[k].amount, amount)
    counts["tier"] = tier
    counts["allowance"] = amount
    counts.loc[counts["village"] == "unknown", ["tier", "allowance"]] = [0, 0.0]
    return counts.sort_values("village", kind="stable").reset_index(drop=True)
