"""The merge stage: the current accepted state of every source into the master store (一人一档).

The single merge computes on every source's rows at once; the partitioned one (stages/partitions.py)
reads the same inputs (merge_inputs), splits them by prefecture, and publishes through publish_merge.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow.parquet as pq
import sqlalchemy as sa

from core.landing import is_delta
from core.results import MergeResult
from core.settings import Settings
from core.storage import Storage, batches
from store.master_snapshot import write_after_merge
from store.master_store import MASTER_COLUMNS, MasterStore, open_store

if TYPE_CHECKING:
    from transforms.merge import MergePlan

log = logging.getLogger(__name__)


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


def merge_stage(settings: Settings, as_of: date, run_id: str, full: bool = False) -> MergeResult:
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

    The single merge computes on `frames` at once; the partitioned one (stages/partitions.py) splits them
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
            storage, _merge_before(open_store(settings), run_id, used), used, states, as_of, plan
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
) -> MergeResult:
    """Write a merge's result (transforms.merge.MergeResult) to the store and the snapshot; the stage record."""
    storage, store = Storage(settings), open_store(settings)
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
    return MergeResult(
        run_id=run_id,
        as_of=as_of.isoformat(),
        rows=len(result.master),
        persons=len(result.master),
        conflicts=len(result.conflicts),
        conflicts_by_type={str(k): int(v) for k, v in by_type.items()},
        id_changes=len(result.id_changes),
        batches={k: v for k, v in inputs.used.items() if k in settings.merged_sources},
        delta_chains=inputs.delta_chains,
        missing_sources=inputs.missing,
        mode="full" if scope is None else "incremental",
        scope=len(result.master) if scope is None else len(scope),
        written=written,
        seconds=seconds,
    ).save(storage, run_id)


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
    delta = [is_delta(storage.landing(source, b)) for b in accepted]
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
