"""The cycle's audit stage (三查): payments against decisions, fund-use monitoring, needs known, services
delivered, per-county and per-village figures; work lists to civil affairs.

Reads the run's decisions, the current master and the last accepted batches of the audit inputs (the
civil payment roll `civil_payments`, the cdpf needs survey `cdpf_survey`); an input that is not
configured or has no accepted batch leaves its audits out (said in audit.json), never fails the run.
Writes runs/<run>/audit/*.parquet (full IDs, private files, for the report, which masks them),
runs/<run>/audit.json (counts only) and the work lists under outbox/civil/<YYYY-MM>/ with manifests.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field

from core.results import AuditResult
from core.settings import Settings
from core.storage import Storage, write_parquet_atomic
from store.master_store import open_store
from transforms import audit

log = logging.getLogger(__name__)

PAYMENTS = "civil_payments"
SURVEY = "cdpf_survey"
MASTER_READ = [
    "id_number", "name", "hukou_county", "hukou_status", "death_date", "cert_status", "category", "level",
]  # fmt: skip
WORK_LISTS = "schemas/audit"


class _Tier(BaseModel):
    model_config = ConfigDict(extra="forbid")
    below: int | None
    amount: float = Field(ge=0)


class _Rise(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_ratio: float = Field(1.5, gt=1)
    floor_yuan: float = Field(2000.0, ge=0)


class AuditConfig(BaseModel):
    """The config's `audit:` section: every threshold of the audits, none of them in code."""

    model_config = ConfigDict(extra="forbid")
    months: int = Field(3, ge=1, le=24)
    delivery_delay_months: int = Field(2, ge=1)
    survey_max_age_days: int = Field(365, ge=1)
    max_persons_per_account: int = Field(3, ge=1)
    amount_limits: dict[str, float] = Field(default_factory=dict)
    county_rise: _Rise = Field(default_factory=lambda: _Rise())
    village_tiers: list[_Tier] = Field(default_factory=list)
    receipt_delay_days: int = Field(7, ge=0)

    def rules(self) -> audit.AuditRules:
        return audit.AuditRules(
            months=self.months,
            delivery_delay_months=min(self.delivery_delay_months, self.months),
            survey_max_age_days=self.survey_max_age_days,
            max_persons_per_account=self.max_persons_per_account,
            amount_limits=dict(self.amount_limits),
            county_rise_ratio=self.county_rise.max_ratio,
            county_rise_floor=self.county_rise.floor_yuan,
            village_tiers=tuple(audit.VillageTier(t.below, t.amount) for t in self.village_tiers),
            receipt_delay_days=self.receipt_delay_days,
        )


def audit_rules(settings: Settings) -> audit.AuditRules:
    try:
        return AuditConfig(**settings.audit).rules()
    except Exception as exc:
        raise ValueError(f"config key 'audit': {exc}") from exc


def _accepted(settings: Settings, storage: Storage, source: str) -> tuple[pd.DataFrame | None, str | None]:
    if source not in settings.sources:
        return None, None
    last = storage.last_accepted(source)
    if last is None:
        return None, None
    path = storage.staged(source, str(last["batch_id"])) / "accepted.parquet"
    return pd.read_parquet(path), str(last["batch_id"])


def _work_list_contracts(settings: Settings) -> dict[str, Any]:
    """The audit's partner files, contracted like the exchange files (schemas/audit/*.yaml)."""
    from transforms.exchange import ExchangeContract

    out = {}
    for path in sorted(settings.path(WORK_LISTS).glob("*.yaml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        try:
            out[str(raw["dataset"])] = ExchangeContract(
                name=str(raw["contract"]),
                version=str(raw["version"]),
                partner=str(raw["partner"]),
                department=str(raw.get("department", "")),
                purpose=str(raw["purpose"]),
                onward_transfer=str(raw["onward_transfer"]),
                dataset=str(raw["dataset"]),
                encoding=str(raw["encoding"]),
                line_ending=str(raw.get("line_ending", "crlf")),
                id_mode=str(raw["id_mode"]),
                file_name=str(raw["file_name"]),
                fields={str(k): str(v) for k, v in raw["fields"].items()},
                codes={
                    str(f): {str(k): str(v) for k, v in m.items()}
                    for f, m in (raw.get("codes") or {}).items()
                },
                path=path,
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path}: malformed work-list contract: missing or bad key {exc}") from exc
    return out


def _ledger(storage: Storage) -> pd.DataFrame:
    """The delivery ledger's status per file (stages.deliver), as a frame."""
    from stages.deliver import deliveries

    rows = deliveries(storage)
    columns = ["partner", "file", "sha256", "status"]
    return pd.DataFrame([{c: r[c] for c in columns} for r in rows], columns=columns).astype("string")


def audit_stage(settings: Settings, as_of: date, run_id: str) -> AuditResult:
    """Run every audit whose inputs are there; write findings, figures and the civil work lists."""
    from stages.exchange import read_carried, write_exchange_file
    from store.master_snapshot import current_master

    storage = Storage(settings)
    rules = audit_rules(settings)
    store = open_store(settings)
    decisions = pd.read_parquet(storage.run_dir(run_id) / "decisions.parquet")
    master = current_master(storage.master_snapshot(store.url), store, MASTER_READ)
    master = master.astype({"id_number": "string"})
    payments, payments_batch = _accepted(settings, storage, PAYMENTS)
    survey, survey_batch = _accepted(settings, storage, SURVEY)
    months = audit.audit_months(as_of, rules.months)
    out = storage.run_dir(run_id) / "audit"
    frames: dict[str, pd.DataFrame] = {}
    figures = audit.county_figures(master, decisions)
    frames["county_holders"] = figures["holders"]
    frames["county_services"] = figures["services"]
    frames["no_receipt"] = audit.no_receipt(
        decisions, read_carried(storage), _ledger(storage), master, as_of, rules.receipt_delay_days
    )
    missing: list[str] = []
    if payments is not None:
        # the roll pays the services its contract codes (the two subsidies); the others are not on it
        from core.contracts import contract_for

        codes = contract_for(settings, PAYMENTS).column("service").codes or {}
        paid_services = decisions[decisions["service"].isin([str(v) for v in codes.values()])]
        findings = audit.payment_audit(paid_services, payments, months)
        frames["payment_findings"] = findings
        frames["payment_persons"] = audit.per_person(findings, master)
        frames["payment_counties"] = audit.by_county(findings, master)
        frames["fund_findings"] = audit.fund_findings(payments, master, rules, months)
        frames["not_delivered"] = audit.not_delivered(
            paid_services, payments, months, rules.delivery_delay_months
        )
    else:
        missing.append(PAYMENTS)
    if survey is not None:
        frames["needs_unknown"] = audit.needs_unknown(master, survey, as_of, rules.survey_max_age_days)
        frames["villages"] = audit.village_figures(master, survey, rules.village_tiers)
    else:
        missing.append(SURVEY)
    for name, frame in frames.items():
        write_parquet_atomic(frame, out / f"{name}.parquet")  # 0600 in a 0700 folder: full IDs

    files = []
    contracts = _work_list_contracts(settings)
    lists = {}
    if "payment_persons" in frames:
        persons = frames["payment_persons"]
        lists["payment_findings"] = persons.assign(gap=persons["difference"].abs()).sort_values(
            ["hukou_county", "id_number", "service"], kind="stable", na_position="last"
        )
        fund = frames["fund_findings"]
        lists["fund_findings"] = fund.assign(month=fund["month"].dt.strftime("%Y-%m"))
    late = frames["no_receipt"]
    lists["no_receipt"] = late.assign(business_date=late["business_date"].dt.strftime("%Y-%m-%d"))
    for dataset, data in lists.items():
        if dataset in contracts:
            if dataset == "no_receipt":  # each partner is asked only about its own files
                data = data[data["partner"] == contracts[dataset].partner]
            written = write_exchange_file(
                storage, contracts[dataset], data.reset_index(drop=True), run_id, as_of
            )
            written.path.chmod(0o600)
            files.append({"contract": written.contract, "path": str(written.path), "rows": written.rows})

    counts: dict[str, Any] = {name: len(frame) for name, frame in frames.items()}
    summary = AuditResult(
        run_id=run_id,
        rows=sum(counts.values()),
        months=[f"{m:%Y-%m}" for m in months],
        batches={PAYMENTS: payments_batch, SURVEY: survey_batch},
        missing_inputs=missing,
        counts=counts,
        rules=settings.audit,
        work_lists=files,
        dir=str(out),
    )
    if "payment_findings" in frames:
        f = frames["payment_findings"]
        summary.payments = {
            code: {
                "persons": int(f.loc[f["finding"] == code, "id_number"].nunique()),
                "months": int((f["finding"] == code).sum()),
                "amount": round(float(f.loc[f["finding"] == code, "difference"].sum()), 2),
            }
            for code in (audit.ELIGIBLE_NOT_PAID, audit.UNDERPAID, audit.PAID_NOT_ELIGIBLE, audit.OVERPAID)
        }
        summary.fund = {
            str(k): int(v) for k, v in frames["fund_findings"]["rule"].value_counts().sort_index().items()
        }
        summary.not_delivered = len(frames["not_delivered"])
    summary.no_receipt = {
        "cases": len(late),
        "persons": int(late["id_number"].nunique()),
        "files": int(late["file"].nunique()),
        "delay_days": rules.receipt_delay_days,
    }
    if "needs_unknown" in frames:
        summary.needs = {
            str(k): int(v) for k, v in frames["needs_unknown"]["finding"].value_counts().sort_index().items()
        }
        v = frames["villages"]
        summary.villages = {
            "count": int((v["village"] != "unknown").sum()),
            "by_tier": {
                str(k): int(n) for k, n in v.loc[v["tier"] > 0, "tier"].value_counts().sort_index().items()
            },
            "allowance_total": round(float(v["allowance"].sum()), 2),
        }
    log.info("audit %s: %s", run_id, counts)
    return summary.save(storage, run_id)
