"""The eligibility stage: the policy in force evaluated over the master; its storage side: which master a run evaluates, decisions stored as changes,
transitions, the reproducibility hash, and the mass-change guard with its holds and approvals.

A run for a date before the store's last merge evaluates the master as it stood on that date (the
store keeps every person version). A run for a date before the store's last decision is a backfill:
it evaluates and compares with the decisions the store says were in force then, and writes no
version (history only moves forward). Every run records the SHA-256 of its decisions in canonical
form, so two runs of the same inputs can be compared by one line.

Files under runs/<run>/ (0600; personal data): decisions.parquet (every decision of the run),
transitions.parquet (gained / lost / amount changed with effective months: the run's delta, which
the exchange stage turns into new / continuing / stop lists; a file, not a table, because the store
already holds the same facts as the versions this run opened and closed, and the lists belong to
one delivery), holds.json (services whose outbound files wait for approval) and approval.json.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.results import EligibilityResult
from core.settings import Settings
from core.storage import Storage, sha256_file, write_json_atomic, write_parquet_atomic
from store.frames import join_batches
from store.master_snapshot import current_master
from store.master_store import (
    ATTRIBUTES,
    BATCH_COLUMNS,
    MASTER_COLUMNS,
    SOURCE_CODES,
    MasterStore,
    open_store,
)
from transforms.decisions import (
    STOP_FACTS,
    canonical,
    changed_share,
    decisions_sha256,
    transitions,
)
from transforms.exchange import DECISION_DATASETS, ExchangeContract

log = logging.getLogger(__name__)

HOLDS = "holds.json"
APPROVAL = "approval.json"


def evaluation_master(
    storage: Storage, store: MasterStore, as_of: date, columns: list[str]
) -> tuple[pd.DataFrame, bool]:
    """The master a run for `as_of` evaluates, and whether it is a past state (as of that date).

    The current master stands for every date from the last merge on; before it, the versions valid
    on `as_of`. STOP_FACTS are always read: a stop's effective month depends on them.
    """
    wanted = [c for c in ATTRIBUTES if c in {*columns, *STOP_FACTS}]
    last = store.last_merge()
    if last is not None and as_of < last["as_of"]:
        return store.read_master_as_of(as_of, wanted), True
    return current_master(storage.master_snapshot(store.url), store, wanted), False


# persons written beyond which the batches are taken from the whole current master (a memory-mapped
# file) rather than looked up in the store person by person through a key table
WHOLE_MASTER_FROM = 20_000


def fact_batches(
    storage: Storage, store: MasterStore, attributes: list[str], day: date | None
) -> Callable[[pd.Series], pd.Series]:
    """For given persons: the batches that set the attributes the policy reads, comma-joined.

    A master row's `sources` holds one source character per attribute; a source counts when it set
    any attribute the policy reads, and its batch is that source's batch in the row. `day`: the
    master as of that date (a past run), None for the current one.
    """
    positions = [ATTRIBUTES.index(a) - 1 for a in attributes if a in ATTRIBUTES and a != "id_number"]
    columns = ["id_number", "sources", *BATCH_COLUMNS]

    def rows_of(ids: pd.Series) -> pd.DataFrame:
        if day is None and len(ids) >= WHOLE_MASTER_FROM:
            return current_master(storage.master_snapshot(store.url), store, columns)
        return store.master_rows(ids, columns, day)

    def causes(ids: pd.Series) -> pd.Series:
        rows = rows_of(ids).set_index("id_number")
        codes = rows["sources"].astype("string").fillna("")
        used = {code: np.zeros(len(rows), dtype=bool) for code in SOURCE_CODES}
        for j in positions:
            char = codes.str.slice(j, j + 1).to_numpy(dtype=object)
            for code in SOURCE_CODES:
                used[code] |= char == code
        parts = {
            source: (pd.Series(used[code], index=rows.index), rows[f"{source}_batch"].astype("string"))
            for code, source in SOURCE_CODES.items()
        }
        joined = join_batches(parts, rows.index) if len(rows) else pd.Series([], dtype="string")
        return joined.reindex(pd.Index(ids.astype("string"))).reset_index(drop=True)

    return causes


def record_decisions(
    settings: Settings,
    storage: Storage,
    store: MasterStore,
    decisions: pd.DataFrame,
    master: pd.DataFrame,
    policy_path: Path,
    attributes: list[str],
    as_of: date,
    run_id: str,
    past: bool,
    starts: Mapping[str, tuple[str, bool]] | None = None,
) -> dict[str, Any]:
    """Store a run's decisions as changes (or compare them, on a backfill); the stage's JSON fields.

    `starts`: each service's start rule (transforms.eligibility.start_rules) for the transitions."""
    decisions = canonical(decisions)
    digest = decisions_sha256(decisions)
    run_dir = storage.run_dir(run_id)
    write_parquet_atomic(decisions, run_dir / "decisions.parquet")
    policy_hash = sha256_file(policy_path)
    out: dict[str, Any] = {
        "as_of": as_of.isoformat(),
        "decisions_sha256": digest,
        "policy_sha256": policy_hash,
        "master_as_of": as_of.isoformat() if past else "current",
    }
    last = store.last_decision_day()
    if last is not None and as_of < last:
        stored = store.decisions_in_force(as_of)
        cols = ["id_number", "service", "eligible", "amount", "reasons"]
        same = len(stored) == len(decisions) and stored[cols].reset_index(drop=True).equals(
            decisions[cols].reset_index(drop=True).astype(stored[cols].dtypes.to_dict())
        )
        log.info(
            "eligibility %s: backfill for %s; %s the decisions in force then",
            run_id,
            as_of,
            "same as" if same else "DIFFERENT from",
        )
        return {**out, "mode": "backfill", "matches_store": bool(same), "written": {}}
    causes = fact_batches(storage, store, attributes, as_of if past else None)
    # beside the master snapshot, named after the same store
    open_file = storage.master_snapshot(store.url).with_suffix(".open-decisions.parquet")
    changes, counts = store.apply_decisions(decisions, run_id, as_of, policy_hash, digest, causes, open_file)
    moves = transitions(changes, master, as_of, starts)
    write_parquet_atomic(moves, run_dir / "transitions.parquet")
    shares = changed_share(decisions, moves, changes.open_before)
    bound = settings.guard.max_changed_share
    held = shares[~shares["exempt"] & (shares["share"] > bound)]
    guard = {
        "max_changed_share": bound,
        "services": {
            str(r.service): {
                "persons": int(r.persons),
                "changed": int(r.changed),
                "share": round(float(r.share), 6),
                "exempt": bool(r.exempt),
            }
            for r in shares.itertuples()
        },
        "held": sorted(str(s) for s in held["service"]),
    }
    holds_path = run_dir / HOLDS
    if len(held):
        write_json_atomic(holds_path, {"run_id": run_id, **guard})
        log.warning(
            "eligibility %s: outbound files of %s held by the mass-change guard", run_id, guard["held"]
        )
    elif holds_path.exists():  # a retry that no longer trips the guard
        holds_path.unlink()
    by_kind = moves.groupby(["service", "transition"]).size()
    return {
        **out,
        "mode": "write",
        "written": counts,
        "transitions": {f"{s}:{t}": int(n) for (s, t), n in by_kind.items()},
        "transitions_path": str(run_dir / "transitions.parquet"),
        "guard": guard,
    }


def held_services(storage: Storage, run_id: str) -> dict[str, Any]:
    """The run's hold (services and shares) and its approval, if any: {} when nothing was held."""
    run_dir = storage.run_dir(run_id)
    holds = _json(run_dir / HOLDS)
    if not holds:
        return {}
    approval = _json(run_dir / APPROVAL)
    return {**holds, "approval": approval or None}


def still_held(storage: Storage, run_id: str) -> set[str]:
    """Services whose outbound files wait: held by the guard and not approved."""
    hold = held_services(storage, run_id)
    if not hold or hold.get("approval"):
        return set()
    return set(hold.get("held") or [])


def hold_contracts(
    contracts: list[ExchangeContract], datasets: dict[str, pd.DataFrame], held: set[str]
) -> tuple[list[ExchangeContract], list[dict[str, Any]]]:
    """Split the contracts into those to write and those held: a decision file carrying any row of
    a held service waits whole (a list without that service's rows would read as stops)."""
    if not held:
        return contracts, []
    go, wait = [], []
    for contract in contracts:
        rows = datasets.get(contract.dataset)
        services = set() if rows is None or "service" not in rows else set(rows["service"].astype(str))
        if contract.services:  # a file carrying some services only waits for those
            services &= set(contract.services)
        hit = sorted(services & held) if contract.dataset in DECISION_DATASETS else []
        if hit:
            wait.append({"contract": contract.name, "partner": contract.partner, "services": hit})
        else:
            go.append(contract)
    return go, wait


def approve(storage: Storage, run_id: str, by: str, reason: str) -> dict[str, Any]:
    """Record the approval of a held run (who, when, why); the caller then builds the held files."""
    hold = held_services(storage, run_id)
    if not hold:
        raise LookupError(
            f"run {run_id} has no held outbound files ({storage.run_dir(run_id) / HOLDS} absent)"
        )
    if not by.strip() or not reason.strip():
        raise ValueError("an approval needs who approves (--by) and why (--reason)")
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = os.environ.get("USER", "unknown")
    record = {
        "run_id": run_id,
        "by": by.strip(),
        "reason": reason.strip(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "os_user": user,
        "services": hold.get("held") or [],
    }
    if hold.get("approval"):
        raise ValueError(f"run {run_id} was already approved by {hold['approval'].get('by')}")
    write_json_atomic(storage.run_dir(run_id) / APPROVAL, record)
    audit = storage.var / "state" / "audit.jsonl"
    audit.parent.mkdir(parents=True, exist_ok=True)
    with audit.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"event": "guard_approval", **record}, ensure_ascii=False) + "\n")
    return record


def approve_and_build(settings: Settings, run_id: str, by: str, reason: str) -> dict[str, Any]:
    """`hub approve`: record the approval, then build the run's held files and its report again."""
    from stages.exchange import exchange_stage
    from stages.report import report_stage

    storage = Storage(settings)
    record = approve(storage, run_id, by, reason)
    kept = EligibilityResult.load(storage, run_id)
    if kept is None:
        raise LookupError(f"run {run_id} has no {storage.run_dir(run_id) / 'eligibility.json'}")
    as_of = date.fromisoformat(kept.as_of)
    exchange = exchange_stage(settings, as_of, run_id)
    report_stage(settings, as_of, run_id)
    return {**record, "files": exchange.files}


def guard_warnings(
    storage: Storage, run_id: str, eligibility: EligibilityResult | None, decisions: list[dict[str, Any]]
) -> list[str]:
    """The report's plain words on the guard; also marks each service row with its changed share and
    whether its outbound files went, wait or went after an approval."""
    hold = held_services(storage, run_id)
    shares = ((eligibility.guard if eligibility else None) or {}).get("services") or {}
    held = set(hold.get("held") or [])
    approval = hold.get("approval")
    for row in decisions:
        entry = shares.get(row.get("service"), {})
        row["changed"] = entry.get("changed")
        row["changed_share"] = entry.get("share")
        if row.get("service") in held:
            row["outbound"] = "已批准 approved" if approval else "暂扣 HELD"
        else:
            row["outbound"] = "照常 sent"
    if not hold:
        return []
    bound = float(hold.get("max_changed_share") or 0)
    lines = []
    for service in sorted(held):
        entry = (hold.get("services") or {}).get(service, {})
        what = (
            f"{service}: 本次 {entry.get('changed')} / {entry.get('persons')} 人资格或金额变化 "
            f"({float(entry.get('share') or 0):.1%}), 超过上限 {bound:.1%} — "
            f"{entry.get('changed')} of {entry.get('persons')} persons changed, above the bound. "
        )
        if approval:
            lines.append(
                what + f"外发文件已于 {approval['at']} 由 {approval['by']} 批准放行 approved (reason: "
                f"{approval['reason']}); the held files were built then."
            )
        else:
            lines.append(
                what + "该服务的外发文件暂扣，未发送 THE OUTBOUND FILES OF THIS SERVICE ARE HELD, NOT SENT. "
                f"核实后放行 approve after checking: hub approve {run_id} --by NAME --reason TEXT"
            )
    return lines


def _json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def eligibility_stage(settings: Settings, as_of: date, run_id: str) -> EligibilityResult:
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
    """Load the policy for as_of and read the master it evaluates (evaluation_master)."""
    from transforms.eligibility import columns_read, load_policy

    policy = load_policy(settings.path(settings.policy), as_of)
    attributes = columns_read(policy, MASTER_COLUMNS)
    started = time.perf_counter()
    master, past = evaluation_master(Storage(settings), open_store(settings), as_of, attributes)
    return EligibilityInputs(
        policy, attributes, master, past, {"read": round(time.perf_counter() - started, 3)}
    )


def publish_eligibility(
    settings: Settings, inputs: EligibilityInputs, decisions: pd.DataFrame, as_of: date, run_id: str
) -> EligibilityResult:
    """Record every decision of the run (record_decisions); the stage's result."""
    from transforms.eligibility import start_rules

    storage, store, policy = Storage(settings), open_store(settings), inputs.policy
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
    return EligibilityResult(
        run_id=run_id,
        rows=len(decisions),
        persons=len(inputs.master),
        policy=policy.name,
        policy_version=policy.version,
        period_in_force=[str(policy.effective_from), str(policy.effective_to or "")],
        services=services,
        path=str(path),
        seconds=seconds,
        **stored,
    ).save(storage, run_id)
