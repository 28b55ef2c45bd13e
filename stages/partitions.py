"""The cycle's merge and eligibility per prefecture (config `partitions: prefecture`): plan, map, reduce.

A person's partition is the address code of their final ID number (the first 4 digits, 地市): an ID
keeps the code it was issued with, so a 户籍 move to another prefecture leaves the person where they
were, and a reissued number (police's 原公民身份号码) is followed to its end over the whole province
before anything is split, so the old number's rows (cdpf, civil, hrss) land in the new number's
partition even when the two numbers are of different prefectures. Numbers of other provinces (people
registered here with an ID issued elsewhere) form one partition, OTHER.

Plan (one task): read every source and the incremental scope once, as the single merge does, and write
each partition's rows under runs/<run>/parts/<partition>/. Map (one task per partition, Airflow dynamic
task mapping): merge or evaluate that partition only, from its own files, and write its result beside
them. Reduce (one task): concatenate the partitions in the single run's order and publish through the
same code as the single run (stages.merge.publish_merge, stages.eligibility.publish_eligibility), so both give the same
master, decisions and files (docs/scale.md, Partitions).
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from core.settings import Settings
from core.storage import Storage, write_json_atomic, write_parquet_atomic
from stages.eligibility import eligibility_inputs, publish_eligibility
from stages.merge import MergeInputs, merge_inputs, merge_plan_for, publish_merge

OTHER = "other"  # ID numbers issued outside the province
_RESULTS = ("master", "conflicts", "id_changes")


def partition_of(ids: pd.Series, region: str) -> pd.Series:
    """Each ID's partition: its prefecture code (4 digits) inside the province, OTHER outside it."""
    prefix = ids.astype("string").str.slice(0, 4)
    inside = prefix.str.startswith(region[:2]).fillna(False).astype(bool) & (prefix.str.len() == 4)
    return prefix.where(inside, OTHER).fillna(OTHER).astype("string")


def final_ids(ids: pd.Series, changes: pd.DataFrame) -> pd.Series:
    """Each ID after police's number changes (chains already followed to their end by id_changes_of)."""
    from transforms.merge import among

    ids = ids.astype("string")
    hit = among(ids, pd.Index(changes["old_id"]))
    if not hit.any():
        return ids
    target = pd.Series(changes["new_id"].to_numpy(), index=changes["old_id"].to_numpy(), dtype="string")
    return ids.mask(hit, ids[hit].map(target))


def _parts(storage: Storage, run_id: str) -> Path:
    return storage.run_dir(run_id) / "parts"


def _partition_dir(storage: Storage, run_id: str, partition: str) -> Path:
    if partition != OTHER and not (len(partition) == 4 and partition.isdigit()):
        raise ValueError(f"partition {partition!r}: expected 4 digits (a prefecture code) or {OTHER!r}")
    return storage.private_dir(_parts(storage, run_id) / partition)


def merge_plan_stage(settings: Settings, as_of: date, run_id: str, full: bool = False) -> list[str]:
    """Read the sources and scope once, split each source's rows by partition of their final ID, and
    return the partitions that have rows (prefecture codes only: no personal data in XCom)."""
    from transforms.merge import id_changes_of

    storage = Storage(settings)
    shutil.rmtree(_parts(storage, run_id), ignore_errors=True)  # a retried plan starts clean
    inputs = merge_inputs(settings, as_of, run_id, full)
    started = time.perf_counter()
    changes = id_changes_of(inputs.frames.get(inputs.plan.reporter.name), as_of, inputs.plan)
    keyed = {
        source: partition_of(final_ids(frame["id_number"], changes), settings.region)
        for source, frame in inputs.frames.items()
    }
    found = sorted({p for key in keyed.values() for p in key.unique().tolist()})
    for partition in found:
        folder = _partition_dir(storage, run_id, partition)
        for source, frame in inputs.frames.items():
            rows = frame[(keyed[source] == partition).to_numpy(dtype=bool)]
            write_parquet_atomic(rows, folder / f"{source}.parquet")
    if inputs.scope is not None:
        write_parquet_atomic(inputs.scope.to_frame("id_number"), _parts(storage, run_id) / "scope.parquet")
    plan = {
        "used": inputs.used,
        "delta_chains": inputs.delta_chains,
        "missing": inputs.missing,
        "incremental": inputs.scope is not None,
        "partitions": found,
        "seconds": {**inputs.seconds, "split": round(time.perf_counter() - started, 3)},
    }
    write_json_atomic(_parts(storage, run_id) / "plan.json", plan)
    return found


def _plan(storage: Storage, run_id: str) -> dict[str, Any]:
    path = _parts(storage, run_id) / "plan.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no merge plan for run {run_id}; the merge_plan task runs first")
    plan: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return plan


def merge_part_stage(settings: Settings, as_of: date, run_id: str, partition: str) -> dict[str, Any]:
    """Merge one partition's rows (transforms.merge.merge_sources) and write its master, conflicts and ID
    changes beside them."""
    from transforms.merge import merge_sources, resolve_precedence

    storage = Storage(settings)
    folder = _partition_dir(storage, run_id, partition)
    plan = _plan(storage, run_id)
    frames = {
        s: pd.read_parquet(folder / f"{s}.parquet")
        for s in settings.merged_sources
        if s not in plan["missing"]
    }
    started = time.perf_counter()
    rules = merge_plan_for(settings)
    precedence = resolve_precedence(settings.precedence, "config precedence", schema=rules.schema)
    result = merge_sources(frames, as_of, precedence, settings.region, rules)
    seconds = round(time.perf_counter() - started, 3)
    for name in _RESULTS:
        write_parquet_atomic(getattr(result, name), folder / f"merged-{name}.parquet")
    return {"partition": partition, "persons": len(result.master), "seconds": seconds}


def merge_reduce_stage(
    settings: Settings, as_of: date, run_id: str, parts: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Concatenate the partitions' merge results in the single merge's order and publish them like it;
    the stage record adds `partitions` (the current master's, which eligibility maps over)."""
    from transforms.merge import MergeResult, merge_sources, resolve_precedence

    storage = Storage(settings)
    rules = merge_plan_for(settings)
    precedence = resolve_precedence(settings.precedence, "config precedence", schema=rules.schema)
    plan = _plan(storage, run_id)
    read = {
        name: [
            pd.read_parquet(_partition_dir(storage, run_id, p) / f"merged-{name}.parquet")
            for p in plan["partitions"]
        ]
        for name in _RESULTS
    }
    if not plan["partitions"]:  # nobody in scope: the empty result the single merge computes
        read = {name: [getattr(merge_sources({}, as_of, precedence, plan=rules), name)] for name in _RESULTS}
    joined = {name: pd.concat(frames, ignore_index=True) for name, frames in read.items()}
    result = MergeResult(
        master=joined["master"].sort_values("id_number", kind="stable").reset_index(drop=True),
        conflicts=joined["conflicts"]
        .sort_values(["id_number", "conflict_type", "source_a", "source_b"], kind="stable")
        .reset_index(drop=True),
        id_changes=joined["id_changes"].sort_values("old_id", kind="stable").reset_index(drop=True),
    )
    scope = None
    if plan["incremental"]:
        scope = pd.read_parquet(_parts(storage, run_id) / "scope.parquet")["id_number"].astype("string")
    inputs = MergeInputs(
        frames={},
        scope=scope,
        used=plan["used"],
        delta_chains=plan["delta_chains"],
        missing=plan["missing"],
        precedence=precedence,
        seconds={**plan["seconds"], "merge": round(sum(p["seconds"] for p in parts or []), 3)},
        plan=rules,
    )
    record = publish_merge(settings, inputs, result, as_of, run_id)
    return {**record.as_json(), "partitions": master_partitions(settings)}


def master_partitions(settings: Settings) -> list[str]:
    """The partitions of the current master (what eligibility maps over)."""
    from store.master_snapshot import current_master
    from store.master_store import open_store

    store = open_store(settings)
    ids = current_master(Storage(settings).master_snapshot(store.url), store, ["id_number"])["id_number"]
    return sorted(partition_of(ids, settings.region).unique().tolist())


def eligibility_part_stage(settings: Settings, as_of: date, run_id: str, partition: str) -> dict[str, Any]:
    """Evaluate one partition's persons and write their decisions beside its merge files."""
    from transforms.eligibility import evaluate

    storage = Storage(settings)
    inputs = eligibility_inputs(settings, as_of)
    master = inputs.master[
        (partition_of(inputs.master["id_number"], settings.region) == partition).to_numpy()
    ]
    started = time.perf_counter()
    decisions = evaluate(master, inputs.policy, as_of)
    seconds = round(time.perf_counter() - started, 3)
    write_parquet_atomic(decisions, _partition_dir(storage, run_id, partition) / "decisions.parquet")
    return {"partition": partition, "persons": len(master), "seconds": seconds}


def eligibility_reduce_stage(
    settings: Settings, as_of: date, run_id: str, parts: list[dict[str, Any]]
) -> dict[str, Any]:
    """Concatenate the partitions' decisions and record them like the single run (same order, same hash)."""
    from transforms.decisions import canonical

    storage = Storage(settings)
    inputs = eligibility_inputs(settings, as_of)
    found = [
        pd.read_parquet(_partition_dir(storage, run_id, p["partition"]) / "decisions.parquet") for p in parts
    ]
    if found:
        decisions = canonical(pd.concat(found, ignore_index=True))
    else:
        from transforms.eligibility import evaluate

        decisions = evaluate(inputs.master.iloc[:0], inputs.policy, as_of)
    inputs.seconds["evaluate"] = round(sum(p["seconds"] for p in parts), 3)
    return publish_eligibility(settings, inputs, decisions, as_of, run_id).as_json()
