"""The cycle stages the cycle DAG runs: merge, eligibility, exchange, report.

Each takes (settings, as_of, run_id), reads its inputs from the ledger, the staged batches or the
master store, writes its outputs, and returns a small JSON-able dict (counts and paths, never data)
that travels through XCom. Each is idempotent: a retried task writes exactly what a clean run writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow.parquet as pq
import sqlalchemy as sa

from core.settings import Settings
from core.storage import Storage, batches, write_json_atomic
from store.master_snapshot import current_master, write_after_merge
from store.master_store import MASTER_COLUMNS, MasterStore

if TYPE_CHECKING:
    from transforms.merge import MergePlan

log = logging.getLogger(__name__)


def _store(settings: Settings) -> MasterStore:
    return MasterStore(settings.expand(settings.master_url))


def _stage_record(storage: Storage, run_id: str, name: str, result: dict[str, Any]) -> dict[str, Any]:
    """Keep each stage's small result beside the run, for the report and for auditors."""
    write_json_atomic(storage.run_dir(run_id) / f"{name}.json", result)
    return result


def merge_plan_for(settings: Settings) -> MergePlan:
    """The merge's plan from the configured master schema and the departments' configured contracts."""
    from core.contracts import contract_for
    from transforms.merge import merge_plan

    schema = settings.master()
    return merge_plan(schema, {s: contract_for(settings, s) for s in schema.sources if s in settings.sources})


def _check_store_holds(settings: Settings, plan: MergePlan) -> None:
    """The store keeps the master columns of its Alembic head: a master schema that declares others
    needs its migration first (schemas/master.yaml explains), so say so before merging."""
    declared = list(plan.master_columns)
    if declared != list(MASTER_COLUMNS):
        raise ValueError(
            f"{settings.config_file}: master_schema {settings.master_schema}: the master store's tables "
            f"(its Alembic head) hold {list(MASTER_COLUMNS)}, the schema declares {declared}; add an "
            "Alembic migration for the new columns (python -m store.migrations revision --autogenerate)"
        )


def merge_stage(settings: Settings, as_of: date, run_id: str, full: bool = False) -> dict[str, Any]:
    """Merge the current accepted state of every source into the master store (一人一档).

    A source's state is its last accepted batch, or, when it sends deltas (SQL incremental, REST change
    feed), its last full batch with the later accepted deltas applied in ledger order. Incremental
    unless `full`: only the persons whose source rows changed since the last merge are recomputed, and
    the store writes only those whose merged record differs.
    """
    from transforms.merge import merge_sources

    inputs = merge_inputs(settings, as_of, run_id, full)
    started = time.perf_counter()
    result = merge_sources(inputs.frames, as_of, inputs.precedence, settings.region, inputs.plan)
    inputs.seconds["merge"] = round(time.perf_counter() - started, 3)
    return publish_merge(settings, inputs, result, as_of, run_id)


@dataclass
class MergeInputs:
    """What a merge reads before it computes: each source's rows (in scope), the scope and the batches used.

    The single merge computes on `frames` at once; the partitioned one (hub/partitions.py) splits them
    by prefecture first. Both publish through publish_merge.
    """

    frames: dict[str, pd.DataFrame]
    scope: pd.Series | None  # None: a full merge
    used: dict[str, str | None]  # source -> batch, plus "_" metadata keys (chains, config hash)
    delta_chains: dict[str, list[str]]
    missing: list[str]
    precedence: dict[str, list[str]]
    seconds: dict[str, float]
    plan: MergePlan  # the departments' merge rules (contracts and the master schema)


def merge_inputs(settings: Settings, as_of: date, run_id: str, full: bool = False) -> MergeInputs:
    """Read every merged source's current state and, unless `full`, the incremental scope (see merge_stage)."""
    from transforms.merge import id_changes_of, in_scope, resolve_precedence, widen_scope

    started = time.perf_counter()
    plan = merge_plan_for(settings)
    _check_store_holds(settings, plan)
    storage = Storage(settings)
    states: dict[str, _SourceState] = {}
    used: dict[str, str | None] = {}
    missing: list[str] = []
    for source in settings.merged_sources:
        chain = _chain(storage, source)
        if not chain:
            log.warning("merge %s: %s has no accepted batch; its facts are unknown this run", run_id, source)
            used[source] = None
            missing.append(source)
            continue
        states[source] = _SourceState(
            source, chain, [_read_accepted(storage, source, b) for b in chain], plan
        )
        used[source] = chain[-1]
        if len(chain) > 1:
            used[f"_{source}_chain"] = ",".join(chain)
        log.info(
            "merge %s: %s batch %s (%d delta batch(es) on top), %d rows",
            run_id,
            source,
            chain[0],
            len(chain) - 1,
            len(states[source].frame),
        )
    frames = {source: state.frame for source, state in states.items()}
    precedence = resolve_precedence(settings.precedence, "config precedence", schema=plan.schema)
    # what decides the merged record besides the data: a change of it means a full merge
    used["_config"] = hashlib.sha256(
        json.dumps([precedence, settings.region], sort_keys=True).encode()
    ).hexdigest()[:16]
    scope = None
    if not full:
        found = _incremental_scope(
            storage, _merge_before(_store(settings), run_id, used), used, states, as_of, plan
        )
        if found is not None:
            scope, previous_reported = found
            changes = [id_changes_of(frames.get(plan.reporter.name), as_of, plan)]
            if previous_reported is not None:
                changes.append(id_changes_of(previous_reported, as_of, plan))
            scope = widen_scope(scope, pd.concat(changes, ignore_index=True))
            frames = in_scope(frames, scope)
    return MergeInputs(
        frames,
        scope,
        used,
        {s: st.chain for s, st in states.items() if len(st.chain) > 1},
        missing,
        precedence,
        {"read_and_scope": round(time.perf_counter() - started, 3)},
        plan,
    )


def _merge_before(store: MasterStore, run_id: str, used: dict[str, str | None]) -> dict[str, Any] | None:
    """The merge this run's merge follows (its scope and snapshot delta are taken against it)."""
    before = store.last_merge()
    if before is not None and before["run_id"] == run_id and before["batches"] == used:
        # a retry of this run's merge after it committed (killed before its record): scope it against the
        # merge before, as the first attempt did, so the run keeps that attempt's figures, not a no-op's
        before = store.last_merge(exclude_run=run_id)
    return before


def publish_merge(
    settings: Settings, inputs: MergeInputs, result: Any, as_of: date, run_id: str
) -> dict[str, Any]:
    """Write a merge's result (transforms.merge.MergeResult) to the store and the snapshot; the stage record."""
    storage, store = Storage(settings), _store(settings)
    before = _merge_before(store, run_id, inputs.used)
    started = time.perf_counter()
    written = store.apply_merge(result, run_id, as_of, scope=inputs.scope, batches=inputs.used)
    stored = time.perf_counter()
    write_after_merge(storage.master_snapshot(store.url), store, before, result.master, inputs.scope)
    seconds = {
        **inputs.seconds,
        "store": round(stored - started, 3),
        "snapshot": round(time.perf_counter() - stored, 3),
    }
    by_type = result.conflicts["conflict_type"].value_counts().sort_index()
    scope = inputs.scope
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
            "id_changes": len(result.id_changes),
            "batches": {k: v for k, v in inputs.used.items() if k in settings.merged_sources},
            "delta_chains": inputs.delta_chains,
            "missing_sources": inputs.missing,
            "mode": "full" if scope is None else "incremental",
            "scope": len(result.master) if scope is None else len(scope),
            "written": written,
            "seconds": seconds,
        },
    )


@dataclass
class _SourceState:
    """A source's accepted batches (last full one first, then deltas) and the rows they add up to."""

    source: str
    chain: list[str]
    parts: list[pd.DataFrame]
    plan: MergePlan

    @cached_property
    def frame(self) -> pd.DataFrame:
        from transforms.merge import apply_deltas

        return apply_deltas(self.source, self.parts, self.plan)


def _is_delta(storage: Storage, source: str, batch_id: str) -> bool:
    """Whether a landed batch holds only changed rows (its manifest says so); a batch without one is full."""
    manifest = _read_json(storage.landing(source, batch_id) / "manifest.json")
    return bool(manifest.get("delta", False))


def _chain(storage: Storage, source: str) -> list[str]:
    """The accepted batches a source's current state rests on, oldest first.

    Full snapshots only: the last accepted batch. With deltas: the newest full batch in ledger (landing)
    order and every accepted delta landed after it, so the state follows from the ledger and the staged
    files alone, and a full rebuild gives what the incremental merges gave.
    """
    last = storage.last_accepted(source)
    if last is None:
        return []
    with storage.engine().connect() as conn:
        accepted = [
            str(b)
            for b in conn.execute(
                sa.select(batches.c.batch_id)
                .where(batches.c.source == source, batches.c.status == "accepted")
                .order_by(batches.c.landed_at, batches.c.batch_id)
            ).scalars()
        ]
    delta = [_is_delta(storage, source, b) for b in accepted]
    if not any(delta):
        return [str(last["batch_id"])]
    fulls = [i for i, d in enumerate(delta) if not d]
    if not fulls:
        log.warning("merge: %s has only delta batches accepted; their union is its state", source)
    return accepted[fulls[-1] if fulls else 0 :]


def _read_accepted(storage: Storage, source: str, batch_id: str) -> pd.DataFrame:
    path = storage.staged(source, batch_id) / "accepted.parquet"
    if not path.exists():
        raise FileNotFoundError(
            f"ledger says batch {batch_id} of {source} was accepted, but {path} is missing"
        )
    # only what the merge reads (a department's canonical columns and _batch_id): the lineage columns
    # (source file and line, ID flags) are a third of a staged file and cost as much to read as the rest
    from transforms.merge import STAGED_COLUMNS, canonical_columns

    if source not in STAGED_COLUMNS:
        return pd.read_parquet(path)
    present = set(pq.read_schema(path).names)
    return pd.read_parquet(
        path, columns=[c for c in (*canonical_columns(source), "_batch_id") if c in present]
    )


def _incremental_scope(
    storage: Storage,
    last: dict[str, Any] | None,
    used: dict[str, str | None],
    states: dict[str, _SourceState],
    as_of: date,
    plan: MergePlan,
) -> tuple[pd.Series, pd.DataFrame | None] | None:
    """The persons whose sources changed since the last merge (and the previous rows of the department
    reporting ID changes, police, whose ID changes matter too), or None when only a full merge is safe.

    Full: no previous merge, another configuration, or a previous batch that is no longer staged.
    Otherwise, per source whose batches changed: the persons named by the delta batches appended since,
    or, for a new full batch, the IDs whose rows differ between the previous and the current state; plus,
    for a department read by periods in force (civil), the periods starting or ending between the two
    run dates.
    """
    from transforms.merge import apply_deltas, changed_ids, period_crossings

    if last is None or last["batches"].get("_config") != used.get("_config"):
        return None
    reporter = plan.reporter.name
    parts: list[pd.Series] = []
    previous_reported: pd.DataFrame | None = None
    for source in [s for s in used if not s.startswith("_")]:  # the merged sources ("_" keys are metadata)
        recorded = last["batches"].get(f"_{source}_chain") or last["batches"].get(source)
        before = str(recorded).split(",") if recorded else []
        state = states.get(source)
        now = state.chain if state else []
        if before == now:
            continue
        if state is not None and before and now[: len(before)] == before:
            previous = apply_deltas(source, state.parts[: len(before)], plan) if source == reporter else None
            parts.extend(p["id_number"].astype("string") for p in state.parts[len(before) :])
        else:
            try:
                previous = apply_deltas(source, [_read_accepted(storage, source, b) for b in before], plan)
            except FileNotFoundError as exc:
                log.warning("merge: a batch of the last merge is gone (%s); full merge", exc)
                return None
            parts.append(
                changed_ids(source, previous if before else None, state.frame if state else None, plan)
            )
        if source == reporter:
            previous_reported = previous
    if last["as_of"] != as_of:
        for source, department in plan.departments.items():
            if department.reduce == "assistance_periods" and source in states:
                parts.append(period_crossings(source, states[source].frame, last["as_of"], as_of, plan))
    if not parts:
        return pd.Series([], dtype="string"), previous_reported
    scope = pd.concat(parts, ignore_index=True).dropna().drop_duplicates().reset_index(drop=True)
    return scope, previous_reported


def eligibility_stage(settings: Settings, as_of: date, run_id: str) -> dict[str, Any]:
    """Evaluate the policy in force on as_of over the master as of that date; the store keeps only the
    decisions that changed (stages/eligibility.py), the run directory all of them and the transitions."""
    from transforms.eligibility import evaluate

    inputs = eligibility_inputs(settings, as_of)
    started = time.perf_counter()
    decisions = evaluate(inputs.master, inputs.policy, as_of)
    inputs.seconds["evaluate"] = round(time.perf_counter() - started, 3)
    return publish_eligibility(settings, inputs, decisions, as_of, run_id)


@dataclass
class EligibilityInputs:
    """The policy in force, the attributes it reads and the master it evaluates (past: as of a past date)."""

    policy: Any  # transforms.eligibility.Policy
    attributes: list[str]
    master: pd.DataFrame
    past: bool
    seconds: dict[str, float]


def eligibility_inputs(settings: Settings, as_of: date) -> EligibilityInputs:
    """Load the policy for as_of and read the master it evaluates (stages.eligibility.evaluation_master)."""
    from stages.eligibility import evaluation_master
    from transforms.eligibility import columns_read, load_policy

    policy = load_policy(settings.path(settings.policy), as_of)
    attributes = columns_read(policy, MASTER_COLUMNS)
    started = time.perf_counter()
    master, past = evaluation_master(Storage(settings), _store(settings), as_of, attributes)
    return EligibilityInputs(
        policy, attributes, master, past, {"read": round(time.perf_counter() - started, 3)}
    )


def publish_eligibility(
    settings: Settings, inputs: EligibilityInputs, decisions: pd.DataFrame, as_of: date, run_id: str
) -> dict[str, Any]:
    """Record every decision of the run (stages.eligibility.record_decisions); the stage record."""
    from stages.eligibility import record_decisions
    from transforms.eligibility import start_rules

    storage, store, policy = Storage(settings), _store(settings), inputs.policy
    started = time.perf_counter()
    stored = record_decisions(
        settings,
        storage,
        store,
        decisions,
        inputs.master,
        policy.path,
        inputs.attributes,
        as_of,
        run_id,
        inputs.past,
        start_rules(policy),
    )
    seconds = {**inputs.seconds, "store": round(time.perf_counter() - started, 3)}
    path = storage.run_dir(run_id) / "decisions.parquet"
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
    log.info("eligibility %s: %d decisions for %d persons", run_id, len(decisions), len(inputs.master))
    return _stage_record(
        storage,
        run_id,
        "eligibility",
        {
            "run_id": run_id,
            "rows": len(decisions),
            "persons": len(inputs.master),
            "policy": policy.name,
            "policy_version": policy.version,
            "period_in_force": [str(policy.effective_from), str(policy.effective_to or "")],
            "services": services,
            "path": str(path),
            **stored,
            "seconds": seconds,
        },
    )


def exchange_stage(settings: Settings, as_of: date, run_id: str) -> dict[str, Any]:
    """Write every partner file of schemas/exchange for this run, each with its manifest."""
    from core.contracts import contract_for
    from stages.eligibility import hold_contracts, still_held
    from transforms.exchange import build_exchange, exchange_datasets, load_exchange_contracts
    from transforms.rejects import write_pending_rejects

    storage = Storage(settings)
    store = _store(settings)
    contracts = load_exchange_contracts(settings.path("schemas/exchange"))
    # the run's decisions file is the same rows the store holds, and far cheaper to read
    decisions_path = storage.run_dir(run_id) / "decisions.parquet"
    decisions = pd.read_parquet(decisions_path) if decisions_path.exists() else store.read_decisions(run_id)
    people = current_master(storage.master_snapshot(store.url), store, ["id_number", "name", "hukou_county"])
    moves_path = storage.run_dir(run_id) / "transitions.parquet"
    moves = pd.read_parquet(moves_path) if moves_path.exists() else None
    datasets = exchange_datasets(
        people, decisions, store.read_conflicts(), moves, departments=settings.merged_sources
    )
    contracts, held = hold_contracts(contracts, datasets, still_held(storage, run_id))
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
        {
            "run_id": run_id,
            "rows": sum(f.rows for f in files),
            "files": listed,
            "rejects": returned,
            "held": held,
        },
    )


def audit_stage(settings: Settings, as_of: date, run_id: str) -> dict[str, Any]:
    """三查 audits and fund-use monitoring (stages/audit.py), between exchange and report."""
    from stages.audit import audit_stage as run_audits

    return run_audits(settings, as_of, run_id)


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


def report_stage(settings: Settings, as_of: date, run_id: str) -> dict[str, Any]:
    """Gather ledger batches, validation results, store counts and manifests into the auditor report."""
    from reports.report import write_report
    from reports.report_data import gather
    from stages.eligibility import guard_warnings

    storage = Storage(settings)
    store = _store(settings)
    merged = _read_json(storage.run_dir(run_id) / "merge.json")
    used = merged.get("batches") or {}
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
                # under var/; the report links it relatively when the file is there
                "validation_report": f"staged/{source}/{latest['batch_id']}/validation.html",
            }
        )
        if latest["status"] != "accepted":
            warnings.append(_held_warning(source, latest, used_batch))
        elif used_batch is None:
            warnings.append(f"{source}: 主档未使用任何批次 the master used no batch of this source")
        sources.append(entry)
    from core.staleness import stale_sources, stale_warning

    stale = stale_sources(storage, sorted(settings.sources))
    warnings.extend(stale_warning(entry) for entry in stale)

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
    warnings.extend(guard_warnings(storage, run_id, eligibility, decisions))
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
        "stale": stale,
    }
    summary.update(gather(storage, store, run_id, sources))  # validation, rejects, audits, other stages
    path = write_report(storage, run_id, as_of, summary)
    log.info("report %s: %s (%d warnings)", run_id, path, len(warnings))
    return {
        "run_id": run_id,
        "rows": len(exchange),
        "path": str(path),
        "json": str(path.with_suffix(".json")),
        "stale": [entry["source"] for entry in stale],
    }


def deliver_stage(settings: Settings, as_of: date, run_id: str) -> dict[str, Any]:
    """Send the published partner and reject files to their partners, once each (stages/deliver.py)."""
    from stages.deliver import DeliveryError
    from stages.deliver import deliver_stage as deliver_published

    storage = Storage(settings)
    try:
        result = deliver_published(settings, as_of, run_id)
    except DeliveryError as exc:
        # kept for the report (which runs after a failed delivery), then the task fails loudly
        _stage_record(storage, run_id, "deliver", {"run_id": run_id, "failed": True, "error": str(exc)})
        raise
    return _stage_record(storage, run_id, "deliver", result)
