"""The ingestion stage the per-source DAGs call: pull (land raw bytes), then stage (standardise +
validate) with its files: accepted.parquet, quarantine.parquet, validation.json and .html.

Staging writes the batch verdict to the ledger: 'held' when a gate of transforms/gates.py trips
(invalid ratio, a column that changed type, volume or deaths/cancellations against the last accepted
batch) or the batch cannot be read as its contract says (schema drift, bad encoding, checksum), else
'accepted'. The checks themselves are pure (transforms/validate.py, transforms/standardise.py).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from core.contracts import REASONS, SourceContract, contract_for
from core.landing import Manifest, is_delta
from core.masking import mask_structure, mask_text
from core.results import StageResult
from core.settings import FolderSource, Gates, Settings, SftpSource
from core.storage import (
    Storage,
    batches,
    decision_note,
    publish_bytes,
    sha256_file,
    utcnow,
    write_json_atomic,
    write_parquet_atomic,
)
from reports.validation_report import render_validation_report
from stages.landed import read_landed, read_landed_lenient
from transforms.gates import DeltaBasis, Previous, UsualRate, column_parses, count_events, evaluate
from transforms.ids import FIX_UPGRADED_15
from transforms.standardise import (
    LINEAGE,
    STRING,
    BatchUnreadable,
    LandingCorrupt,
    LandingDecodeError,
    standardise_rows,
)
from transforms.validate import (
    SUITE_DIR,
    apply_suite,
    duplicate_rows,
    finalise,
    id_fix_counts,
    id_flags,
    key_conflicts,
    raw_json,
    split_non_records,
)

log = logging.getLogger(__name__)


@dataclass
class Pulled(StageResult):
    """What a pull landed (`new` False: this exact content had landed before)."""

    source: str = ""
    batch_id: str = ""
    rows: int = 0
    new: bool = False


@dataclass
class StagedBatch(StageResult):
    """What staging a batch produced; the verdict is also in the ledger."""

    NAME = None

    source: str
    batch_id: str
    status: str  # accepted | held
    rows: int
    accepted: int
    quarantined: int
    reason_counts: dict[str, int] = field(default_factory=dict)
    note: str = ""
    path: Path | None = None


def _write_summary(summary: dict[str, Any], out: Path) -> None:
    """validation.json (masked) and the offline validation.html rendered from it."""
    masked = mask_structure(summary)
    write_json_atomic(out / "validation.json", masked)
    publish_bytes(out / "validation.html", render_validation_report(masked).encode("utf-8"))


def _held(
    storage: Storage, source: str, batch_id: str, as_of: date, manifest: Manifest, exc: BatchUnreadable
) -> StagedBatch:
    """The batch cannot be read as contracted: no rows are staged, the verdict says why."""
    out = storage.staged(source, batch_id)
    storage.private_dir(out)
    for stale in ("accepted.parquet", "quarantine.parquet"):
        (out / stale).unlink(missing_ok=True)
    note = str(exc)
    rows = manifest.rows
    drift = None
    if hasattr(exc, "missing"):
        drift = {k: getattr(exc, k) for k in ("file", "expected", "found", "missing", "unexpected")}
    summary = {
        "source": source,
        "batch_id": batch_id,
        "as_of": as_of.isoformat(),
        "staged_at": utcnow(),
        "verdict": "held",
        "note": note,
        "rows": rows,
        "accepted": 0,
        "quarantined": 0,
        "reason_counts": {},
        "schema_drift": drift,
        "error": type(exc).__name__,
    }
    _write_summary(summary, out)
    storage.seal(out)
    storage.set_verdict(batch_id, "held", 0, 0, note=mask_text(note))
    log.warning("%s batch %s held: %s", source, batch_id, mask_text(note))
    return StagedBatch(source, batch_id, "held", rows, 0, 0, {}, mask_text(note), out)


def _previous(storage: Storage, source: str, batch_id: str) -> Previous | None:
    """The source's last accepted batch as the gates compare against it (events from its validation.json)."""
    last = storage.last_accepted(source, exclude=batch_id)
    if last is None:
        return None
    summary = storage.staged(source, last["batch_id"]) / "validation.json"
    events = json.loads(summary.read_text(encoding="utf-8")).get("events") if summary.exists() else None
    return Previous(str(last["batch_id"]), int(last["accepted_rows"] or 0), events)


def _day(window: str) -> date | None:
    try:
        return datetime.strptime(window, "%Y%m%d").date()
    except ValueError:
        return None


def _days_between(later: str, earlier: str) -> int:
    """Days a batch covers after the previous one, from their windows (YYYYMMDD); at least 1."""
    a, b = _day(later), _day(earlier)
    return max((a - b).days, 1) if a and b else 1


def _delta_basis(storage: Storage, source: str, batch_id: str, window: str, gates: Gates) -> DeltaBasis:
    """The usual daily rate of a source's deltas (configured, else the median of its last accepted deltas,
    each divided by the days it covered) and the size of its last full batch."""
    with storage.engine().connect() as conn:
        history = (
            conn.execute(
                sa.select(batches.c.batch_id, batches.c.window, batches.c.accepted_rows)
                .where(
                    batches.c.source == source, batches.c.status == "accepted", batches.c.batch_id != batch_id
                )
                .order_by(batches.c.landed_at, batches.c.batch_id)
            )
            .mappings()
            .all()
        )
    samples: dict[str, list[float]] = {}
    deltas, register = 0, None
    for i in range(len(history) - 1, -1, -1):
        if deltas >= gates.delta_history and register is not None:
            break
        row = history[i]
        if not is_delta(storage.landing(source, row["batch_id"])):
            register = register if register is not None else int(row["accepted_rows"] or 0)
            continue
        if deltas >= gates.delta_history:
            continue
        summary = _read_json(storage.staged(source, row["batch_id"]) / "validation.json")
        days = _days_between(str(row["window"]), str(history[i - 1]["window"])) if i else 1
        deltas += 1
        for measure, count in [("rows", row["accepted_rows"] or 0), *(summary.get("events") or {}).items()]:
            samples.setdefault(measure, []).append(float(count) / days)
    per_day = {m: float(np.median(v)) for m, v in samples.items() if len(v) >= gates.delta_min_history}
    basis = {m: f"median of {len(samples[m])} delta batches" for m in per_day}
    for measure, rate in gates.usual_daily.get(source, {}).items():
        per_day[measure], basis[measure] = float(rate), "configured"
    days = _days_between(window, str(history[-1]["window"])) if history else 1
    return DeltaBasis(days, UsualRate(per_day, basis), register)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


HELD_OUT_ZH = "更新时间晚于运行时间(超出允许的时钟偏差)或不是有效时间，未计入增量书签"


def _with_held_out(
    landing: Path, manifest: Manifest, contract: SourceContract, native: pd.DataFrame
) -> tuple[pd.DataFrame, list[tuple[str, np.ndarray]]]:
    """Append the rows the connector held out of the data (a watermark value it could not trust) so they
    are quarantined with their reason and returned to the department; one (field, mask) per held-out file."""
    frames, held = [native.reset_index(drop=True)], []
    by_native = {c.native: c.name for c in contract.columns}
    for entry in manifest.held_out:
        path = landing / entry.name
        if sha256_file(path) != entry.sha256:
            raise LandingCorrupt(f"{contract.source}: {entry.name}: SHA-256 differs from manifest.json")
        if path.suffix == ".json":  # a change feed's held-out items, as received
            rows = pd.DataFrame.from_records(json.loads(path.read_bytes())["items"])
        else:
            rows = pd.read_parquet(path)
        rows = rows.reindex(columns=contract.natives).astype(STRING)
        rows["_source_file"] = pd.Series(entry.name, index=rows.index, dtype=STRING)
        rows["_source_line"] = np.arange(1, len(rows) + 1, dtype=np.int64)
        frames.append(rows[[*contract.natives, *LINEAGE]])
        held.append((by_native.get(entry.column, ""), len(rows)))
    if len(frames) == 1:
        return frames[0], []
    out = pd.concat(frames, ignore_index=True)
    masks, start = [], len(native)
    for field_name, count in held:
        mask = np.zeros(len(out), dtype=bool)
        mask[start : start + count] = True
        masks.append((field_name, mask))
        start += count
    return out, masks


def stage_batch(
    settings: Settings,
    source: str,
    batch_id: str,
    as_of: date,
    max_invalid_ratio: float | None = None,
) -> StagedBatch:
    """Standardise and validate one landed batch; write the staged files and record the verdict.

    Idempotent: staging the same batch again rewrites the same files and the same verdict.
    """
    storage = Storage(settings)
    gates = settings.gates
    if max_invalid_ratio is not None:
        gates = gates.model_copy(update={"max_invalid_ratio": max_invalid_ratio})
    contract = contract_for(settings, source)
    landing = storage.landing(source, batch_id)
    manifest = Manifest.read(landing)
    storage.record_batch(batch_id, source, manifest.window, manifest.rows)
    log.info(
        "%s batch %s: staging %s rows landed by %s",
        source,
        batch_id,
        manifest.rows,
        manifest.transport,
    )
    decision = storage.decision(batch_id)  # an operator's release: honoured by every re-staging
    undecodable: np.ndarray | None = None
    try:
        try:
            read = read_landed(landing, contract)
        except LandingDecodeError:
            if decision is None or decision["decision"] != "partial":
                raise
            read, undecodable = read_landed_lenient(
                landing, contract, storage.staged(source, batch_id).parent
            )
        non_records = dict(read.attrs.get("non_record_rows", {}))
        read, kept, more = split_non_records(read.reset_index(drop=True), contract)
        for kind, count in more.items():
            non_records[kind] = non_records.get(kind, 0) + count
        if undecodable is not None:
            undecodable = undecodable[kept[: len(undecodable)]]
        native, held_out = _with_held_out(landing, manifest, contract, read)
    except BatchUnreadable as exc:
        return _held(storage, source, batch_id, as_of, manifest, exc)

    n = len(native)
    frame, reasons = standardise_rows(native, contract, as_of)
    for field_name, mask in held_out:
        reasons.add("DATE_INVALID", mask, field_name, HELD_OUT_ZH)
    if undecodable is not None:
        reasons.add(
            "ENCODING_INVALID", np.concatenate([undecodable, np.zeros(n - len(undecodable), dtype=bool)])
        )
    reasons.add("DUPLICATE_ROW", duplicate_rows(native, contract.natives))

    gx_results, gx_stored = apply_suite(
        settings, source, contract, frame, reasons, as_of, batch_id, storage.gx_context()
    )
    reasons.add("DUPLICATE_KEY_CONFLICT", key_conflicts(frame, contract, reasons.any()))

    bad = reasons.any()
    quarantined = int(bad.sum())
    accepted_rows = n - quarantined
    ratio = quarantined / n if n else 0.0
    counts = reasons.counts()
    accepted = frame.loc[~bad, contract.names].copy()
    events = count_events(accepted, contract)
    field_counts = reasons.field_counts()
    columns = column_parses(frame, field_counts, contract)
    # a delta batch holds only the changed rows: it is judged against the usual daily rate, not the last batch
    if manifest.delta:
        previous, delta = (
            None,
            _delta_basis(storage, source, batch_id, manifest.window, gates),
        )
    else:
        previous, delta = _previous(storage, source, batch_id), None
    verdict = evaluate(n, quarantined, events, previous, gates, columns, delta)
    status, note = verdict.status, verdict.note
    if decision is not None:
        status, note = "accepted", decision_note(decision)
        if decision["decision"] == "partial":
            storage.count_decision(batch_id, accepted_rows, quarantined)
            decision = storage.decision(batch_id)

    out = storage.staged(source, batch_id)
    storage.private_dir(out)
    accepted.insert(
        len(accepted.columns), "_batch_id", pd.Series(batch_id, index=accepted.index, dtype=STRING)
    )
    for lineage in LINEAGE:
        accepted[lineage] = native.loc[~bad, lineage]
    # which numbers were upgraded from 15 digits (and how): recorded on the row, not only counted
    fixes = frame.loc[~bad, "_id_fix"].astype(STRING)
    accepted["_id_upgraded_from15"] = (
        fixes.str.contains(FIX_UPGRADED_15, regex=False).fillna(False).astype(bool)
    )
    accepted["_id_flags"] = id_flags(frame.loc[~bad, "_id_reason"], fixes)
    write_parquet_atomic(finalise(accepted, contract).reset_index(drop=True), out / "accepted.parquet")

    id_native = contract.column("id_number").native
    rejected = native.loc[bad]
    quarantine = pd.DataFrame(
        {
            "_batch_id": pd.Series(batch_id, index=rejected.index, dtype=STRING),
            "_source_file": rejected["_source_file"].astype(STRING),
            "_source_line": rejected["_source_line"].astype("int64"),
            "id_raw": rejected[id_native].astype(STRING),
            "reason_codes": pd.Series(reasons.codes()[bad], index=rejected.index, dtype=STRING),
            "reasons_zh": pd.Series(reasons.describe(contract)[bad], index=rejected.index, dtype=STRING),
            "raw": raw_json(rejected[contract.natives]),
        }
    )
    write_parquet_atomic(quarantine.reset_index(drop=True), out / "quarantine.parquet")

    summary = {
        "source": source,
        "batch_id": batch_id,
        "as_of": as_of.isoformat(),
        "staged_at": utcnow(),
        "contract": f"{contract.source} v{contract.version}",
        "suite": f"{SUITE_DIR}/{source}.json",
        "verdict": status,
        "note": note,
        "rows": n,
        "accepted": accepted_rows,
        "quarantined": quarantined,
        "invalid_ratio": round(ratio, 6),
        "max_invalid_ratio": gates.max_invalid_ratio,
        "events": events,
        "gates": verdict.as_json(),
        "reason_counts": counts,
        "reasons_zh": {code: REASONS[code] for code in counts},
        "field_reason_counts": field_counts,
        "id_fixes": id_fix_counts(frame["_id_fix"]),
        "non_record_rows": non_records,
        "schema_drift": None,
        "decision": None if decision is None else {k: v for k, v in decision.items() if k != "id"},
        "gx": {
            "success": all(r["success"] for r in gx_results),
            "evaluated": len(gx_results),
            "failed": sum(not r["success"] for r in gx_results),
            "results": gx_results,
            "stored": str(gx_stored.relative_to(settings.var_dir)),  # GX's own result of this batch
        },
    }
    _write_summary(summary, out)
    storage.seal(out)
    storage.set_verdict(batch_id, status, accepted_rows, quarantined, note=note)
    if non_records:
        log.info("%s batch %s: non-record rows skipped %s", source, batch_id, non_records)
    log.info(
        "%s batch %s: %s; %d rows, %d accepted, %d quarantined %s",
        source,
        batch_id,
        status,
        n,
        accepted_rows,
        quarantined,
        counts,
    )
    return StagedBatch(source, batch_id, status, n, accepted_rows, quarantined, counts, note, out)


def pull_stage(settings: Settings, source: str, as_of: date) -> Pulled:
    """Pull one batch from the source's transport and land it; returns the batch id and row count.

    A refused pull is recorded (core.staleness) before the error propagates, so the cycle and the
    report know the source is stale; a successful one clears that record.
    """
    from core.staleness import clear_refusal, record_refusal

    storage = Storage(settings)
    try:
        result = _pull(settings, storage, source, as_of)
    except Exception as exc:
        record_refusal(storage, source, as_of, exc)
        raise
    clear_refusal(storage, source)
    return result


def wait_stage(settings: Settings, source: str, as_of: date, started: datetime, now: datetime) -> bool:
    """One look at a drop source's folder for the ingestion DAG's wait: True once a file is ready.

    A late file only waits (one log line per look); at the configured deadline, counted from the
    wait's first look, the wait fails with one error naming source, transport, folder and cause, and
    the refusal is recorded so the cycle runs on the source's last accepted batch (core.staleness).
    """
    from connectors import drop_ready
    from connectors.errors import ConnectorError
    from core.business_date import TZ
    from core.staleness import record_refusal

    config = settings.sources[source]
    if not isinstance(config, FolderSource | SftpSource) or config.wait is None:
        raise ValueError(f"{source}: no `wait:` configured for this drop source")
    wait = config.wait
    target, ready = drop_ready(Storage(settings), source, config)
    waited = now - started
    if ready:
        log.info("%s: %d file(s) ready in %s after %.0f s", source, ready, target, waited.total_seconds())
        return True
    deadline = timedelta(minutes=wait.deadline_minutes)
    if waited >= deadline:
        error = ConnectorError(
            source,
            config.transport,
            target,
            f"no file matching {config.pattern} with its {config.marker} marker arrived by the deadline "
            f"({wait.deadline_minutes:g} min after the wait began at {started.astimezone(TZ):%Y-%m-%d %H:%M:%S} "
            "Asia/Shanghai)",
        )
        record_refusal(Storage(settings), source, as_of, error)
        raise error
    log.info(
        "%s: no ready file in %s yet; waited %.0f s of %.0f, next look in %g s",
        source,
        target,
        waited.total_seconds(),
        deadline.total_seconds(),
        wait.poke_seconds,
    )
    return False


def _pull(settings: Settings, storage: Storage, source: str, as_of: date) -> Pulled:
    from connectors import puller
    from core.contracts import load_contract

    config = settings.sources[source]
    contract = load_contract(settings.path(config.contract))
    landed = puller(config.transport)(storage, source, config, as_of, contract)
    return Pulled(source, landed.batch_id, landed.rows, landed.new)


def validate_stage(settings: Settings, source: str, batch_id: str, as_of: date) -> StagedBatch:
    """Standardise and validate a landed batch; the verdict goes to the ledger."""
    return stage_batch(settings, source, batch_id, as_of)
