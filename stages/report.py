"""The report stage: the ledger's batches, validation results, store counts, the other stages' typed
results and the manifests, gathered into the auditor report; reports/ renders it, this module publishes
reports/<run>/report.json, report.html and the index across runs (stages/report_data.py reads the rest).
"""

from __future__ import annotations

import json
import logging
import os
from datetime import date
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from core.results import EligibilityResult, MergeResult, ReportResult
from core.settings import Settings
from core.staleness import stale_sources, stale_warning
from core.storage import Storage, batches, publish_bytes, write_json_atomic
from reports.report import linkable, render_index, render_report, report_json
from stages.eligibility import guard_warnings
from stages.report_data import gather, read_json
from store.master_store import open_store

log = logging.getLogger(__name__)


def _latest_batch(storage: Storage, source: str) -> dict[str, Any] | None:
    """The newest batch of a source in the ledger, whatever its verdict (a held batch must show)."""
    with storage.engine().connect() as conn:
        row = (
            conn.execute(
                sa.select(batches)
                .where(batches.c.source == source)
                .order_by(batches.c.landed_at.desc(), batches.c.verdict_at.desc())
            )
            .mappings()
            .first()
        )
    return dict(row) if row else None


def _held_warning(source: str, latest: dict[str, Any], used_batch: str | None) -> str:
    """Say plainly which batch is held, by which gate with which numbers, what the master uses instead
    and how to release it (the ledger note names each tripped gate with its value and limit)."""
    batch_id = latest["batch_id"]
    why = latest.get("note") or "no reason recorded"
    kept = (
        f"主档沿用上一批合格数据 the master keeps {source} batch {used_batch}"
        if used_batch
        else f"主档没有{source}的合格数据 the master has no accepted {source} batch to fall back on"
    )
    return (
        f"{source}: 批次 {batch_id} 暂扣 {latest['status']}: {why}. {kept}; "
        f"其他来源照常处理 the other sources ran as usual. "
        f"放行 release: hub batch release {batch_id} --by NAME"
    )


def report_stage(settings: Settings, as_of: date, run_id: str) -> ReportResult:
    """Gather ledger batches, validation results, store counts and manifests into the auditor report."""
    storage = Storage(settings)
    store = open_store(settings)
    merged = MergeResult.load(storage, run_id)
    used = merged.batches if merged else {}
    warnings: list[str] = []
    sources = []
    for source in sorted(settings.sources):
        latest = _latest_batch(storage, source)
        accepted = storage.last_accepted(source)
        used_batch = used.get(source, accepted["batch_id"] if accepted else None)
        entry: dict[str, Any] = {"source": source, "used_batch_id": used_batch}
        if latest is None:
            warnings.append(f"{source}: 没有任何批次 no batch has landed; its facts are unknown")
            sources.append(entry)
            continue
        validation = read_json(storage.staged(source, latest["batch_id"]) / "validation.json")
        entry.update(
            {
                "batch_id": latest["batch_id"],
                "verdict": latest["status"],
                "rows": latest["rows"] if latest["rows"] is not None else validation.get("rows"),
                "accepted": latest["accepted_rows"]
                if latest["accepted_rows"] is not None
                else validation.get("accepted"),
                "quarantined": latest["quarantined_rows"]
                if latest["quarantined_rows"] is not None
                else validation.get("quarantined"),
                "reasons": dict(sorted((validation.get("reason_counts") or {}).items())),
                "note": latest.get("note") or "",
                # under var/; the report links it relatively when the file is there
                "validation_report": f"staged/{source}/{latest['batch_id']}/validation.html",
            }
        )
        if latest["status"] != "accepted":
            warnings.append(_held_warning(source, latest, used_batch))
        elif used_batch is None:
            warnings.append(f"{source}: 主档未使用任何批次 the master used no batch of this source")
        sources.append(entry)
    stale = stale_sources(storage, sorted(settings.sources))
    warnings.extend(stale_warning(entry) for entry in stale)

    counts = store.counts()
    eligibility = EligibilityResult.load(storage, run_id)
    decisions = eligibility.services if eligibility else None
    if decisions is None:
        frame = store.read_decisions(run_id)
        decisions = [
            {
                "service": str(svc),
                "evaluated": len(rows),
                "eligible": int(rows["eligible"].sum()),
                "amount_total": round(float(rows.loc[rows["eligible"], "amount"].sum()), 2),
            }
            for svc, rows in frame.groupby("service", sort=True)
        ]
    warnings.extend(guard_warnings(storage, run_id, eligibility, decisions))
    exchange = []
    for manifest_path in sorted((storage.var / "outbox").glob("*/*/*.manifest.json")):
        manifest = read_json(manifest_path)
        if manifest.get("run_id") != run_id:
            continue
        exchange.append(
            {
                "partner": manifest.get("partner") or manifest_path.parent.parent.name,
                "contract": manifest.get("contract"),
                "file": manifest.get("file") or manifest_path.name.removesuffix(".manifest.json"),
                "period": manifest.get("period"),
                "rows": manifest.get("rows"),
                "sha256": manifest.get("sha256"),
            }
        )
    summary: dict[str, Any] = {
        "policy": f"{eligibility.policy} {eligibility.policy_version}".strip() if eligibility else "",
        "sources": sources,
        "master": {
            "persons": counts["persons"],
            "conflicts": counts["conflicts"],
            "conflicts_by_type": counts["conflicts_by_type"],
        },
        "decisions": decisions,
        "exchange": exchange,
        "warnings": warnings,
        "stale": stale,
    }
    summary.update(gather(storage, store, run_id, sources))  # validation, rejects, audits, other stages
    path = write_report(storage, run_id, as_of, summary)
    log.info("report %s: %s (%d warnings)", run_id, path, len(warnings))
    return ReportResult(
        run_id=run_id,
        rows=len(exchange),
        path=str(path),
        json=str(path.with_suffix(".json")),
        stale=[entry["source"] for entry in stale],
    )


def write_report(storage: Storage, run_id: str, as_of: date, summary: dict[str, Any]) -> Path:
    """Publish report.json and the self-contained report.html of a run, then the index across runs;
    returns the HTML path."""
    data = report_json(run_id, as_of, summary)
    out_dir = storage.report_dir(run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "report.json", data)
    links = {}
    for source in data["sources"]:
        under_var = source.get("validation_report")
        if linkable(under_var) and (storage.var / under_var).is_file():
            links[under_var] = Path(os.path.relpath(storage.var / under_var, out_dir)).as_posix()
    publish_bytes(out_dir / "report.html", render_report(data, links).encode("utf-8"))
    write_index(storage)
    return out_dir / "report.html"


def run_rows(storage: Storage) -> list[dict[str, Any]]:
    """One row per run with a report.json, oldest first: the figures the index and `hub runs` show."""
    rows = []
    for path in sorted((storage.var / "reports").glob("*/report.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        audit = data.get("audit") or {}
        payments = audit.get("payments") or {}
        rows.append(
            {
                "run_id": data.get("run_id", path.parent.name),
                "as_of": data.get("as_of", ""),
                "persons": (data.get("master") or {}).get("persons"),
                "eligible": {d.get("service"): d.get("eligible") for d in data.get("decisions") or []},
                "quarantined": sum(int(s.get("quarantined") or 0) for s in data.get("sources") or []),
                "conflicts": (data.get("master") or {}).get("conflicts"),
                "not_paid": (payments.get("ELIGIBLE_NOT_PAID") or {}).get("persons") if payments else None,
                "not_eligible": (payments.get("PAID_NOT_ELIGIBLE") or {}).get("persons")
                if payments
                else None,
                "fund": sum((audit.get("fund") or {}).values()) if audit else None,
                "href": f"{path.parent.name}/report.html",
            }
        )
    return sorted(rows, key=lambda r: (str(r["as_of"]), str(r["run_id"])))


def write_index(storage: Storage) -> Path:
    """Publish reports/index.html: every run's headline figures and their trends."""
    target = storage.var / "reports" / "index.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    publish_bytes(target, render_index(run_rows(storage)).encode("utf-8"))
    return target


def rebuild_report(settings: Settings, run_id: str | None = None) -> Path:
    """Run the report stage again for a run (default: the latest run with a merge record)."""
    storage = Storage(settings)
    found = sorted(
        (json.loads(p.read_text(encoding="utf-8")).get("as_of", ""), p.parent.name)
        for p in (storage.var / "runs").glob("*/merge.json")
    )
    known = {run: as_of for as_of, run in found}
    if run_id is None:
        if not found:
            raise SystemExit(f"no run under {storage.var / 'runs'}: run `hub run` first")
        run_id = found[-1][1]
    if run_id not in known:
        raise SystemExit(f"run {run_id!r} not found under {storage.var / 'runs'}; known: {sorted(known)}")
    return Path(report_stage(settings, date.fromisoformat(known[run_id]), run_id).path)
