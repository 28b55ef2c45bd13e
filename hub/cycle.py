"""The cycle stages the cycle DAG runs: merge, eligibility, exchange, report.

Each takes (settings, as_of, run_id), reads its inputs from the ledger, the staged batches or the
master store, writes its outputs, and returns a small JSON-able dict (counts and paths, never data)
that travels through XCom. Each is idempotent: a retried task writes exactly what a clean run writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from hub.master_store import MasterStore
from hub.settings import Settings
from hub.storage import Storage, batches, write_json_atomic

log = logging.getLogger(__name__)

MERGE_SOURCES = ("cdpf", "police", "civil", "hrss")


def _store(settings: Settings) -> MasterStore:
    return MasterStore(settings.expand(settings.master_url))


def _write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _stage_record(storage: Storage, run_id: str, name: str, result: dict[str, Any]) -> dict[str, Any]:
    """Keep each stage's small result beside the run, for the report and for auditors."""
    write_json_atomic(storage.run_dir(run_id) / f"{name}.json", result)
    return result


def merge_stage(settings: Settings, as_of: date, run_id: str, full: bool = False) -> dict[str, Any]:
    """Merge the last accepted batch of every source into the master store (一人一档).

    Incremental unless `full`: only the persons whose source rows changed since the last merge are
    recomputed, and the store writes only those whose merged record differs.
    """
    from transforms.merge import in_scope, merge_sources, resolve_precedence

    storage = Storage(settings)
    frames: dict[str, pd.DataFrame] = {}
    used: dict[str, str | None] = {}
    missing: list[str] = []
    for source in MERGE_SOURCES:
        batch = storage.last_accepted(source) if source in settings.sources else None
        if batch is None:
            log.warning("merge %s: %s has no accepted batch; its facts are unknown this run", run_id, source)
            used[source] = None
            missing.append(source)
            continue
        path = storage.staged(source, batch["batch_id"]) / "accepted.parquet"
        if not path.exists():
            raise FileNotFoundError(
                f"ledger says batch {batch['batch_id']} of {source} was accepted, but {path} is missing"
            )
        frames[source] = pd.read_parquet(path)
        used[source] = str(batch["batch_id"])
        log.info(
            "merge %s: %s batch %s, %d accepted rows", run_id, source, batch["batch_id"], len(frames[source])
        )
    precedence = resolve_precedence(settings.precedence, "config precedence")
    store = _store(settings)
    # what decides the merged record besides the data: a change of it means a full merge
    used["_config"] = hashlib.sha256(
        json.dumps([precedence, settings.region], sort_keys=True).encode()
    ).hexdigest()[:16]
    scope = None if full else _incremental_scope(storage, store.last_merge(), used, frames, as_of)
    if scope is not None:
        frames = in_scope(frames, scope)
    result = merge_sources(frames, as_of, precedence, settings.region)
    written = store.apply_merge(result, run_id, as_of, scope=scope, batches=used)
    by_type = result.conflicts["conflict_type"].value_counts().sort_index()
    return _stage_record(
        storage,
        run_id,
        "merge",
        {
            "run_id": run_id,
            "as_of": as_of.isoformat(),
            "rows": len(result.master),
            "persons": len(result.master),
            "conflicts": len(result.conflicts),
            "conflicts_by_type": {str(k): int(v) for k, v in by_type.items()},
            "batches": {k: v for k, v in used.items() if k in MERGE_SOURCES},
            "missing_sources": missing,
            "mode": "full" if scope is None else "incremental",
            "scope": len(result.master) if scope is None else len(scope),
            "written": written,
        },
    )


def _incremental_scope(
    storage: Storage,
    last: dict[str, Any] | None,
    used: dict[str, str | None],
    frames: dict[str, pd.DataFrame],
    as_of: date,
) -> pd.Series | None:
    """The persons whose sources changed since the last merge, or None when only a full merge is safe.

    Full: no previous merge, another configuration, or a previous batch that is no longer staged.
    Otherwise the union of the IDs whose rows differ between the previous and the current batch of each
    source, plus civil assistance starting or ending between the two run dates.
    """
    from transforms.merge import changed_ids, civil_crossings

    if last is None or last["batches"].get("_config") != used.get("_config"):
        return None
    parts = []
    for source in MERGE_SOURCES:
        before, now = last["batches"].get(source), used.get(source)
        if before == now:
            continue
        previous = None
        if before is not None:
            path = storage.staged(source, before) / "accepted.parquet"
            if not path.exists():
                log.warning("merge: %s batch %s of the last merge is gone; full merge", source, before)
                return None
            previous = pd.read_parquet(path)
        parts.append(changed_ids(source, previous, frames.get(source)))
    if last["as_of"] != as_of and "civil" in frames:
        parts.append(civil_crossings(frames["civil"], last["as_of"], as_of))
    if not parts:
        return pd.Series([], dtype="string")
    return pd.concat(parts, ignore_index=True).drop_duplicates().reset_index(drop=True)


def eligibility_stage(settings: Settings, as_of: date, run_id: str) -> dict[str, Any]:
    """Evaluate the policy in force on as_of over the whole master; decisions go to the store and a parquet file."""
    from transforms.eligibility import evaluate, load_policy

    storage = Storage(settings)
    store = _store(settings)
    policy = load_policy(settings.path(settings.policy), as_of)
    master = store.read_master()
    decisions = evaluate(master, policy, as_of)
    store.write_decisions(decisions, run_id)
    path = storage.run_dir(run_id) / "decisions.parquet"
    _write_parquet_atomic(decisions, path)
    services = []
    for name, service in policy.services.items():
        rows = decisions[decisions["service"] == name]
        eligible = rows[rows["eligible"]]
        services.append(
            {
                "service": name,
                "title": service.title,
                "evaluated": len(rows),
                "eligible": len(eligible),
                "amount_total": round(float(eligible["amount"].sum()), 2),
            }
        )
    log.info("eligibility %s: %d decisions for %d persons", run_id, len(decisions), len(master))
    return _stage_record(
        storage,
        run_id,
        "eligibility",
        {
            "run_id": run_id,
            "rows": len(decisions),
            "persons": len(master),
            "policy": policy.name,
            "policy_version": policy.version,
            "period_in_force": [str(policy.effective_from), str(policy.effective_to or "")],
            "services": services,
            "path": str(path),
        },
    )


def exchange_stage(settings: Settings, as_of: date, run_id: str) -> dict[str, Any]:
    """Write every partner file of schemas/exchange for this run, each with its manifest."""
    from transforms.contracts import contract_for
    from transforms.exchange import build_exchange, exchange_datasets, load_exchange_contracts
    from transforms.rejects import write_pending_rejects

    storage = Storage(settings)
    store = _store(settings)
    contracts = load_exchange_contracts(settings.path("schemas/exchange"))
    # the run's decisions file is the same rows the store holds, and far cheaper to read
    decisions_path = storage.run_dir(run_id) / "decisions.parquet"
    decisions = pd.read_parquet(decisions_path) if decisions_path.exists() else store.read_decisions(run_id)
    people = store.read_master(["id_number", "name", "hukou_county"])
    datasets = exchange_datasets(people, decisions, store.read_conflicts())
    files = build_exchange(storage, contracts, datasets, run_id, as_of)
    sources = {name: contract_for(settings, name) for name in settings.sources}
    rejects = write_pending_rejects(storage, sources, run_id, as_of)
    listed = [
        {
            "partner": f.partner,
            "contract": f.contract,
            "period": f.period,
            "path": str(f.path),
            "manifest": str(f.manifest),
            "rows": f.rows,
            "sha256": f.sha256,
        }
        for f in files
    ]
    returned = [
        {"source": r.source, "batch_id": r.batch_id, "path": str(r.path), "rows": r.rows, "sha256": r.sha256}
        for r in rejects
    ]
    return _stage_record(
        storage,
        run_id,
        "exchange",
        {"run_id": run_id, "rows": sum(f.rows for f in files), "files": listed, "rejects": returned},
    )


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


def _reason_counts(validation: dict[str, Any]) -> dict[str, int]:
    """Counts per quarantine reason code from a validation.json, whichever common shape its writer used."""
    for key in ("reason_counts", "counts_by_reason", "by_reason", "reasons", "reason_codes", "counts"):
        value = validation.get(key)
        counts: dict[str, int] = {}
        if isinstance(value, dict):
            for code, n in value.items():
                if isinstance(n, dict):  # {"ID_CHECKSUM": {"count": 3, "zh": "..."}}
                    n = n.get("count", n.get("rows"))
                if isinstance(n, int) and not isinstance(n, bool):
                    counts[str(code)] = n
        elif isinstance(value, list):  # [{"code": "ID_CHECKSUM", "count": 3}, ...]
            for item in value:
                if isinstance(item, dict) and isinstance(item.get("count"), int):
                    counts[str(item.get("code") or item.get("reason") or "?")] = int(item["count"])
        if counts:
            return dict(sorted(counts.items()))
    return {}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        log.warning("report: %s is not valid JSON; left out", path)
        return {}
    return data if isinstance(data, dict) else {}


def report_stage(settings: Settings, as_of: date, run_id: str) -> dict[str, Any]:
    """Gather ledger batches, validation results, store counts and manifests into the auditor report."""
    from hub.report import write_report

    storage = Storage(settings)
    store = _store(settings)
    merged = _read_json(storage.run_dir(run_id) / "merge.json")
    used = merged.get("batches") or {}
    warnings: list[str] = []
    sources = []
    for source in sorted(set(settings.sources) | set(MERGE_SOURCES)):
        latest = _latest_batch(storage, source)
        accepted = storage.last_accepted(source)
        used_batch = used.get(source, accepted["batch_id"] if accepted else None)
        entry: dict[str, Any] = {"source": source, "used_batch_id": used_batch}
        if latest is None:
            warnings.append(f"{source}: 没有任何批次 no batch has landed; its facts are unknown")
            sources.append(entry)
            continue
        validation = _read_json(storage.staged(source, latest["batch_id"]) / "validation.json")
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
                "reasons": _reason_counts(validation),
                "note": latest.get("note") or "",
                "validation_report": f"staged/{source}/{latest['batch_id']}/validation.html",
            }
        )
        if latest["status"] != "accepted":
            kept = f"master keeps batch {used_batch}" if used_batch else "no accepted batch to fall back on"
            warnings.append(f"{source}: 批次 {latest['batch_id']} 未通过 ({latest['status']}); {kept}")
        elif used_batch is None:
            warnings.append(f"{source}: 主档未使用任何批次 the master used no batch of this source")
        sources.append(entry)

    counts = store.counts()
    eligibility = _read_json(storage.run_dir(run_id) / "eligibility.json")
    decisions = eligibility.get("services")
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
    exchange = []
    for manifest_path in sorted((storage.var / "outbox").glob("*/*/*.manifest.json")):
        manifest = _read_json(manifest_path)
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
        "policy": f"{eligibility.get('policy', '')} {eligibility.get('policy_version', '')}".strip(),
        "sources": sources,
        "master": {
            "persons": counts["persons"],
            "conflicts": counts["conflicts"],
            "conflicts_by_type": counts["conflicts_by_type"],
        },
        "decisions": decisions,
        "exchange": exchange,
        "warnings": warnings,
    }
    path = write_report(storage, run_id, as_of, summary)
    log.info("report %s: %s (%d warnings)", run_id, path, len(warnings))
    return {
        "run_id": run_id,
        "rows": len(exchange),
        "path": str(path),
        "json": str(path.with_suffix(".json")),
    }
