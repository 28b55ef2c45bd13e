"""What the auditor's report shows beyond the ledger and the stage counts: validation per source, the
reject files, conflicts by county, decisions and audits by county and village, and the records of any
other stage of the run (decision transitions, deliveries and receipts, the mass-change guard) when
their files exist, read for the report stage (stages/report.py). Figures only, and samples whose ID
numbers are masked here (the report masks again).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from core.masking import mask_ids
from core.results import AuditResult, EligibilityResult, ExchangeResult
from core.storage import Storage
from transforms.audit import FINDING_ZH

log = logging.getLogger(__name__)

KNOWN_STAGES = {"merge", "eligibility", "exchange", "audit", "report", "holds", "approval"}
LIST_LIMIT = 500  # person rows shown per list in the HTML; the parquet files under runs/<run>/audit hold all
VILLAGE_LIMIT = 3000


def read_json(path: Path) -> dict[str, Any]:
    """A stage's JSON record, or {} when it is missing, unreadable or not an object (a report is still
    written; an invalid file is named in the log)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("report: %s cannot be read (%s); left out", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _records(frame: pd.DataFrame, limit: int | None = None) -> list[dict[str, Any]]:
    """JSON-safe rows: dates as text, missing as None."""
    shown = frame if limit is None else frame.head(limit)
    out = shown.copy()
    for column in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[column]):
            out[column] = out[column].dt.strftime("%Y-%m")
    return json.loads(out.to_json(orient="records", force_ascii=False))


def validation_view(storage: Storage, sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per source's latest batch: the gates and every check with truthful counts and masked samples."""
    out = []
    for s in sources:
        batch = s.get("batch_id")
        if not batch:
            continue
        v = read_json(storage.staged(s["source"], batch) / "validation.json")
        checks = []
        for r in (v.get("gx") or {}).get("results") or []:
            failing = r.get("failing_rows", r.get("unexpected_count", 0))
            checks.append(
                {
                    "check": r.get("type", ""),
                    "column": r.get("column", ""),
                    "severity": r.get("severity", "error"),
                    "passed": bool(r.get("success", failing == 0)),
                    "failing_rows": int(failing or 0),
                    "refused_before": int(r.get("refused_before", 0) or 0),
                    "refused_before_codes": r.get("refused_before_codes") or {},
                    "explained_nulls": int(r.get("explained_nulls", 0) or 0),
                    "not_checked": int(r.get("not_checked", 0) or 0),
                    "rows_flagged": int(r.get("rows_flagged", 0) or 0),
                    "reason_code": r.get("reason_code", ""),
                    "sample": [str(x) for x in r.get("sample") or []],
                }
            )
        out.append(
            {
                "source": s["source"],
                "batch_id": batch,
                "verdict": v.get("verdict", s.get("verdict")),
                "rows": v.get("rows"),
                "accepted": v.get("accepted"),
                "quarantined": v.get("quarantined"),
                "gates": v.get("gates") or [],
                "checks": checks,
                "passed": sum(c["passed"] for c in checks),
                "failed": sum(not c["passed"] for c in checks),
                "reasons_zh": v.get("reasons_zh") or {},
                "drift": v.get("schema_drift"),
            }
        )
    return out


def _by_county(frame: pd.DataFrame, column: str, key: str = "finding") -> list[dict[str, Any]]:
    if frame.empty:
        return []
    counts = frame.groupby([column, key], dropna=False).size().rename("persons").reset_index()
    return _records(counts.rename(columns={column: "county"}))


def audit_view(storage: Storage, run_id: str) -> dict[str, Any]:
    """The audit stage's summary and frames, shaped for the report (IDs and accounts masked)."""
    summary = AuditResult.load(storage, run_id)
    folder = storage.run_dir(run_id) / "audit"
    if summary is None or not folder.exists():
        return {}

    def frame(name: str) -> pd.DataFrame:
        path = folder / f"{name}.parquet"
        return pd.read_parquet(path) if path.exists() else pd.DataFrame()

    view: dict[str, Any] = {
        "months": summary.months,
        "batches": summary.batches,
        "missing_inputs": summary.missing_inputs,
        "counts": summary.counts,
        "payments": summary.payments,
        "fund": summary.fund,
        "needs": summary.needs,
        "villages": summary.villages,
        "not_delivered": summary.not_delivered,
        "no_receipt": summary.no_receipt,
        "rules": summary.rules,
    }
    view["work_lists"] = [
        {
            **w,
            "path": str(Path(w["path"]).relative_to(storage.var))
            if str(w["path"]).startswith(str(storage.var))
            else w["path"],
        }
        for w in summary.work_lists
    ]
    view["finding_zh"] = FINDING_ZH
    persons = frame("payment_persons")
    if not persons.empty:
        persons = persons.assign(id_number=mask_ids(persons["id_number"]))
        persons = persons.sort_values("difference", key=lambda d: -d.abs(), kind="stable")
        view["payment_persons"] = _records(
            persons[
                [
                    "hukou_county",
                    "id_number",
                    "service",
                    "finding",
                    "months",
                    "month_count",
                    "entitled",
                    "paid",
                    "difference",
                ]
            ],
            LIST_LIMIT,
        )
        view["payment_persons_total"] = len(persons)
    counties = frame("payment_counties")
    view["payment_counties"] = _records(counties) if not counties.empty else []
    fund = frame("fund_findings")
    if not fund.empty:
        fund = fund.assign(id_number=mask_ids(fund["id_number"].fillna("")))
        view["fund_findings"] = _records(
            fund[["rule", "county", "id_number", "service", "month", "amount", "evidence"]], LIST_LIMIT
        )
        view["fund_total"] = len(fund)
    needs = frame("needs_unknown")
    view["needs_by_county"] = _by_county(needs, "hukou_county")
    late = frame("not_delivered")
    if not late.empty:
        view["not_delivered_sample"] = _records(
            late.assign(id_number=mask_ids(late["id_number"]))[["id_number", "service", "amount", "since"]],
            LIST_LIMIT,
        )
    unreceipted = frame("no_receipt")
    if not unreceipted.empty:
        unreceipted = unreceipted.sort_values("days_waiting", ascending=False, kind="stable")
        view["no_receipt_sample"] = _records(
            unreceipted.assign(id_number=mask_ids(unreceipted["id_number"]))[
                ["hukou_county", "id_number", "service", "partner", "file", "status", "days_waiting"]
            ],
            LIST_LIMIT,
        )
    villages = frame("villages")
    if not villages.empty:
        view["village_list"] = _records(villages, VILLAGE_LIMIT)
        view["village_total"] = len(villages)
        by_county = villages.groupby("county").agg(
            villages=("village", "size"), residents=("residents", "sum"), allowance=("allowance", "sum")
        )
        view["village_counties"] = _records(by_county.reset_index())
    holders = frame("county_holders")
    view["county_holders"] = _records(holders) if not holders.empty else []
    services = frame("county_services")
    view["county_services"] = _records(services) if not services.empty else []
    return view


def conflicts_by_county(conflicts: pd.DataFrame, master: pd.DataFrame) -> list[dict[str, Any]]:
    """Open conflicts per hukou county and type."""
    if conflicts.empty:
        return []
    open_ = conflicts[conflicts["status"] == "open"] if "status" in conflicts else conflicts
    joined = open_.merge(master[["id_number", "hukou_county"]], on="id_number", how="left")
    joined["hukou_county"] = joined["hukou_county"].fillna("unknown")
    counts = joined.groupby(["hukou_county", "conflict_type"]).size().rename("count").reset_index()
    return _records(counts.rename(columns={"hukou_county": "county"}))


def other_stages(storage: Storage, run_id: str) -> list[dict[str, Any]]:
    """The records of stages this report does not know by name (transitions, deliveries, receipts, the
    mass-change guard...): shown as they are, so a new stage is never silently left out."""
    out = []
    for path in sorted(storage.run_dir(run_id).glob("*.json")):
        if path.stem in KNOWN_STAGES:
            continue
        record = read_json(path)
        if record:
            out.append({"name": path.stem, "record": record})
    return out


def transitions_view(storage: Storage, run_id: str, master: pd.DataFrame | None) -> dict[str, Any]:
    """Gained, lost and amount-changed decisions of the run (transitions.parquet, when the run wrote one)
    by service and by county."""
    path = storage.run_dir(run_id) / "transitions.parquet"
    if not path.exists():
        return {}
    moves = pd.read_parquet(path, columns=["id_number", "service", "transition"])
    by_service = moves.groupby(["service", "transition"]).size().rename("count").reset_index()
    out: dict[str, Any] = {"by_service": _records(by_service), "total": len(moves)}
    if master is not None:
        joined = moves.astype({"id_number": "string"}).merge(
            master[["id_number", "hukou_county"]].astype({"id_number": "string"}), on="id_number", how="left"
        )
        joined["hukou_county"] = joined["hukou_county"].fillna("unknown")
        by_county = joined.groupby(["hukou_county", "service", "transition"]).size().rename("count")
        out["by_county"] = _records(by_county.reset_index().rename(columns={"hukou_county": "county"}))
    return out


def guard_view(storage: Storage, run_id: str) -> list[dict[str, Any]]:
    """The mass-change guard of the run: its shares and limit (eligibility.json), holds and approval."""
    run = storage.run_dir(run_id)
    out = []
    eligibility = EligibilityResult.load(storage, run_id)
    if eligibility is not None and eligibility.guard:
        out.append({"name": "guard", "record": eligibility.guard})
    for name in ("holds", "approval"):
        record = read_json(run / f"{name}.json")
        if record:
            out.append({"name": name, "record": record})
    return out


def gather(storage: Storage, store: Any, run_id: str, sources: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything the report shows besides what report_stage puts in its summary."""
    from store.master_snapshot import current_master

    exchange = ExchangeResult.load(storage, run_id)
    rejects = [
        {
            **r,
            "path": str(Path(r["path"]).relative_to(storage.var))
            if str(r["path"]).startswith(str(storage.var))
            else r["path"],
        }
        for r in (exchange.rejects if exchange else [])
    ]
    master: pd.DataFrame | None = None
    try:
        master = current_master(storage.master_snapshot(store.url), store, ["id_number", "hukou_county"])
        conflicts = conflicts_by_county(store.read_conflicts(), master)
    except Exception as exc:  # a report must still be written when the store cannot say more
        log.warning("report %s: figures by county left out: %s", run_id, exc)
        conflicts = []
    return {
        "validation": validation_view(storage, sources),
        "rejects": rejects,
        "conflicts_by_county": conflicts,
        "audit": audit_view(storage, run_id),
        "other_stages": other_stages(storage, run_id),
        "transitions": transitions_view(storage, run_id, master),
        "guard": guard_view(storage, run_id),
    }
